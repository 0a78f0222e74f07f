/**
 * The DIMSE receiver with real peers: DCMTK's echoscu and storescu (and Orthanc's C-STORE SCU) push to ctgate's gate,
 * which hands each accepted association to DCMTK's storescp. C-ECHO succeeds; an unknown calling AE and a wrong
 * called AE are rejected with the reasons DICOM names; a synthetic CT series is indexed by accession and
 * StudyInstanceUID with its series and files and becomes stable; a non-CT SOP class is refused (no presentation
 * context), a CT-class instance labelled MR, one with a StudyInstanceUID that is not a UID and a file cut short are
 * quarantined with log lines free of patient data;
 * a restart rebuilds the index from disk; retention removes only expired studies no job holds; a SIGKILL of
 * `ctgate dicom receive` during a storescu burst loses no instance that got a success response.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type DimseReceiveConfig, loadConfig } from '../../src/config/index.js';
import { DimseError, type DimsePeer, echo, storeFiles } from '../../src/dicom/dcmtk.js';
import { associateRj, readAssociateRq } from '../../src/dimse-receive/acse.js';
import { callerAllowed } from '../../src/dimse-receive/gate.js';
import { type DimseReceiver, startDimseReceiver } from '../../src/dimse-receive/receiver.js';
import { StudyIndex } from '../../src/dimse-receive/study-index.js';
import { createLogger } from '../../src/observability/log.js';
import { writeCtSeries, writeSeriesToDir } from '../../src/synthetic/dicom-writer.js';
import { generateChestCt } from '../../src/synthetic/phantom.js';
import { freePort, TestOrthanc } from '../helpers/orthanc.js';

const PYDICOM_MR = '/usr/lib/python3/dist-packages/pydicom/data/test_files/MR_small.dcm';
const PATIENT_NAME = 'RECEIVE^TEST';
const PATIENT_ID = 'PID-RCV-1';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function syntheticSeries(dir: string, seed: number, accession: string, slices: number) {
  const p = generateChestCt({ seed, kind: 'covid', size: [32, 32, slices], spacing: [8, 8, 10] });
  const series = writeCtSeries(p.volume, {
    seed,
    accessionNumber: accession,
    patientId: PATIENT_ID,
    patientName: PATIENT_NAME,
    seriesDescription: 'synthetic',
  });
  const files = await writeSeriesToDir(dir, series);
  return { files, studyInstanceUid: series.studyInstanceUid, seriesInstanceUid: series.seriesInstanceUid, sops: series.files.map((f) => f.sopInstanceUid) };
}

describe('DIMSE receive: C-ECHO and C-STORE through the gate and DCMTK storescp', () => {
  let root = '';
  let port = 0;
  let receiver: DimseReceiver | undefined;
  let config: DimseReceiveConfig;
  const lines: string[] = [];
  const log = createLogger('debug', false, (l) => lines.push(l));
  const orthanc = new TestOrthanc({ dicom: { aet: 'ORTHANC', modalities: {} } });
  let studyA: Awaited<ReturnType<typeof syntheticSeries>>;

  const peer = (extra: Partial<DimsePeer> = {}): DimsePeer => ({
    host: '127.0.0.1',
    port,
    calledAe: 'CTGATE',
    callingAe: 'MODALITY',
    timeoutS: 5,
    label: 'ctgate',
    ...extra,
  });

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ctgate-dimse-rcv-'));
    port = await freePort();
    const cfg = loadConfig({
      CTGATE_DIMSE_LISTEN_PORT: String(port),
      CTGATE_DIMSE_ALLOWED_CALLERS: 'MODALITY, ORTHANC@127.0.0.1',
      CTGATE_DIMSE_RECEIVE_DIR: join(root, 'receive'),
      CTGATE_DIMSE_STABLE_S: '1',
      CTGATE_DIMSE_RETENTION_HOURS: '1',
    }).dimseReceive;
    assert.ok(cfg);
    config = cfg;
    receiver = await startDimseReceiver(config, log, { scanMs: 200 });
    studyA = await syntheticSeries(join(root, 'a'), 71, 'ACC-RCV-A', 12);
  });
  after(async () => {
    await receiver?.stop();
    await orthanc.stop().catch(() => {});
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('parses the A-ASSOCIATE-RQ AE titles and writes a 10-byte A-ASSOCIATE-RJ; matches callers by AE and address', () => {
    const rq = Buffer.alloc(6 + 68);
    rq[0] = 1;
    rq.writeUInt32BE(68, 2);
    rq.write('CTGATE          ', 10, 'latin1');
    rq.write('  MODALITY      ', 26, 'latin1');
    assert.deepEqual(readAssociateRq(rq), { state: 'complete', calledAe: 'CTGATE', callingAe: 'MODALITY', bytes: 74 });
    assert.deepEqual(readAssociateRq(rq.subarray(0, 20)), { state: 'incomplete' });
    assert.equal(readAssociateRq(Buffer.from([4, 0, 0, 0, 0, 0])).state, 'invalid');
    assert.deepEqual([...associateRj(3)], [3, 0, 0, 0, 0, 4, 0, 1, 1, 3]);
    const callers = config.allowedCallers;
    assert.equal(callerAllowed(callers, 'MODALITY', '10.1.2.3'), true);
    assert.equal(callerAllowed(callers, 'ORTHANC', '::ffff:127.0.0.1'), true);
    assert.equal(callerAllowed(callers, 'ORTHANC', '10.1.2.3'), false);
    assert.equal(callerAllowed(callers, 'OTHER', '127.0.0.1'), false);
    assert.equal(callerAllowed([{ address: '10.0.0.0/8' }], 'ANY', '10.9.9.9'), true);
  });

  it('answers C-ECHO from an allowed AE', async () => {
    const r = await echo(peer());
    assert.equal(r.ok, true, r.error?.message);
  });

  it('rejects an unknown calling AE (calling AE not recognized) and a wrong called AE (called AE not recognized)', async () => {
    const stranger = await echo(peer({ callingAe: 'STRANGER' }));
    assert.equal(stranger.ok, false);
    assert.equal(stranger.error?.kind, 'rejected');
    assert.match(stranger.error?.message ?? '', /Calling AE Title Not Recognized/);
    assert.match(stranger.error?.message ?? '', /Rejected Permanent/);
    const wrong = await echo(peer({ calledAe: 'NOT-CTGATE' }));
    assert.match(wrong.error?.message ?? '', /Called AE Title Not Recognized/);
    // ORTHANC may call only from 127.0.0.1: it does, so it is in.
    assert.equal((await echo(peer({ callingAe: 'ORTHANC' }))).ok, true);
    assert.ok(lines.some((l) => /association-rejected/.test(l) && /STRANGER/.test(l)));
  });

  it('stores a synthetic CT series; the index lists it by accession and StudyInstanceUID, with its series and files; it becomes stable', async () => {
    const statuses = await storeFiles(peer(), studyA.files, 'CT');
    assert.equal(statuses.length, 12);
    assert.ok(statuses.every((s) => s.status === 'Success'));
    const index = receiver?.index as StudyIndex;
    await index.scan();
    const [byAcc] = index.findStudies({ accessionNumber: 'ACC-RCV-A' });
    assert.ok(byAcc, 'found by accession');
    assert.equal(byAcc.studyInstanceUid, studyA.studyInstanceUid);
    assert.deepEqual(index.findStudies({ studyInstanceUid: studyA.studyInstanceUid }).length, 1);
    assert.equal(index.findStudies({ accessionNumber: 'NO-SUCH' }).length, 0);
    assert.equal(byAcc.instances, 12);
    assert.deepEqual(
      byAcc.series.map((s) => [s.seriesInstanceUid, s.modality, s.instances]),
      [[studyA.seriesInstanceUid, 'CT', 12]],
    );
    assert.equal(byAcc.patient.patientId, PATIENT_ID);
    assert.equal(byAcc.patient.patientName, PATIENT_NAME);
    const files = index.seriesFiles(studyA.studyInstanceUid, studyA.seriesInstanceUid);
    assert.equal(files.length, 12);
    // In InstanceNumber order, each the instance sent, byte for byte in its data set.
    const sops = files.map((f) => /CT\.(.+)\.dcm$/.exec(f)?.[1]);
    assert.deepEqual(sops, studyA.sops);
    assert.equal(byAcc.stable, false, 'not stable right after the last arrival');
    await until('stable', async () => {
      await index.scan();
      return index.findStudies({ studyInstanceUid: studyA.studyInstanceUid })[0]?.stable;
    });
  });

  it('refuses a non-CT SOP class (no presentation context) and quarantines a CT-class instance that is not CT, without PHI in the log', async () => {
    await assert.rejects(storeFiles(peer(), [PYDICOM_MR], 'MR'), (e: unknown) => e instanceof DimseError && /presentation context/i.test(e.message));
    // A CT Image Storage instance whose Modality says MR: storescp stores it, the index quarantines it.
    const odd = join(root, 'odd.dcm');
    await writeFile(odd, await readFile(studyA.files[0] as string));
    execFileSync('dcmodify', ['-nb', '-m', '(0008,0060)=MR', '-m', '(0008,0018)=2.25.1234567', '-m', '(0020,000d)=2.25.7654321', odd]);
    const [st] = await storeFiles(peer(), [odd], 'CT');
    assert.equal(st?.status, 'Success');
    // A StudyInstanceUID that tries to name another folder: DCMTK keeps it inside (/ becomes _), the index refuses it.
    const evil = join(root, 'evil.dcm');
    await writeFile(evil, await readFile(studyA.files[0] as string));
    execFileSync('dcmodify', ['-nb', '-m', '(0020,000d)=../../evil', '-m', '(0008,0018)=2.25.7654322', evil]);
    assert.equal((await storeFiles(peer(), [evil], 'CT'))[0]?.status, 'Success');
    const index = receiver?.index as StudyIndex;
    await until('quarantined', async () => {
      await index.scan();
      return (await readdir(index.quarantineDir)).length === 2;
    });
    assert.equal(index.findStudies({ studyInstanceUid: '2.25.7654321' }).length, 0);
    assert.equal(index.list().length, 1);
    assert.deepEqual(
      (await readdir(root)).filter((n) => n.includes('evil') && n !== 'evil.dcm'),
      [],
    );
    const q = lines.filter((l) => /dimse\.quarantined/.test(l));
    assert.equal(q.length, 2);
    assert.ok(q.some((l) => /modality MR, not CT/.test(l)));
    assert.ok(q.some((l) => /not a valid UID/.test(l)));
    for (const l of lines) {
      assert.ok(!l.includes(PATIENT_NAME) && !l.includes(PATIENT_ID) && !l.includes('RECEIVE'), `no PHI in ${l}`);
    }
  });

  it('quarantines a file cut short (a write that never got its response) once it stopped changing', async () => {
    const index = receiver?.index as StudyIndex;
    const bytes = await readFile(studyA.files[1] as string);
    const folder = join(index.studiesDir, `st_${studyA.studyInstanceUid}`);
    await writeFile(join(folder, 'CT.2.25.999.dcm'), bytes.subarray(0, bytes.length - 100));
    await index.scan();
    assert.equal(index.findStudies({ studyInstanceUid: studyA.studyInstanceUid })[0]?.stable, false, 'an unreadable file keeps its study unstable');
    await until('cut-short file quarantined', async () => {
      await index.scan();
      return (await readdir(index.quarantineDir)).length === 3;
    });
    assert.ok(lines.some((l) => /dimse\.quarantined/.test(l) && /not a readable DICOM file/.test(l)));
    assert.equal(index.findStudies({ studyInstanceUid: studyA.studyInstanceUid })[0]?.instances, 12);
  });

  it("receives a study from Orthanc's C-STORE SCU", async () => {
    await orthanc.stop().catch(() => {});
    const o = new TestOrthanc({ dicom: { aet: 'ORTHANC', modalities: { CTGATE: ['CTGATE', '127.0.0.1', port] } } });
    await o.start();
    try {
      const b = await syntheticSeries(join(root, 'b'), 72, 'ACC-RCV-B', 6);
      let orthancStudy = '';
      for (const f of b.files) {
        const r = await fetch(`${o.url}/instances`, { method: 'POST', body: await readFile(f) });
        assert.equal(r.status, 200);
        orthancStudy = ((await r.json()) as { ParentStudy: string }).ParentStudy;
      }
      const r = await fetch(`${o.url}/modalities/CTGATE/store`, { method: 'POST', body: orthancStudy });
      assert.equal(r.status, 200, await r.clone().text());
      const index = receiver?.index as StudyIndex;
      const found = await until('study B indexed', async () => {
        await index.scan();
        const s = index.findStudies({ accessionNumber: 'ACC-RCV-B' })[0];
        return s && s.instances === 6 ? s : undefined;
      });
      assert.equal(found.studyInstanceUid, b.studyInstanceUid);
    } finally {
      await o.stop();
    }
  });

  it('rebuilds the index from disk after a restart', async () => {
    const before = receiver?.index.list().sort((a, b) => a.studyInstanceUid.localeCompare(b.studyInstanceUid));
    await receiver?.stop();
    receiver = await startDimseReceiver(config, log, { scanMs: 200 });
    const after = receiver.index.list().sort((a, b) => a.studyInstanceUid.localeCompare(b.studyInstanceUid));
    assert.deepEqual(
      after.map((s) => [s.studyInstanceUid, s.accessionNumber, s.instances, s.series.length]),
      before?.map((s) => [s.studyInstanceUid, s.accessionNumber, s.instances, s.series.length]),
    );
    assert.equal(after.length, 2);
    assert.equal(receiver.index.seriesFiles(studyA.studyInstanceUid, studyA.seriesInstanceUid).length, 12);
    assert.equal((await echo(peer())).ok, true, 'listening again');
    // `ctgate dicom receive --list` reads the same folder: the same studies, no patient attributes.
    const listed = JSON.parse(
      execFileSync(process.execPath, ['bin/ctgate.mjs', 'dicom', 'receive', '--list', '--dir', config.dir], {
        encoding: 'utf8',
        env: { ...process.env, CTGATE_LOG_LEVEL: 'error' },
      }),
    ) as { studies: { studyInstanceUid: string; instances: number }[] };
    assert.deepEqual(
      listed.studies.map((s) => s.studyInstanceUid).sort(),
      after.map((s) => s.studyInstanceUid),
    );
    assert.ok(!JSON.stringify(listed).includes(PATIENT_ID) && !JSON.stringify(listed).includes('RECEIVE'));
  });

  it('retention removes only expired studies that no job holds (and none when holds cannot say)', async () => {
    const dir = join(root, 'receive');
    const held = new Set([studyA.studyInstanceUid]);
    const later = Date.now() + 2 * 3600_000;
    let failHolds = true;
    const index = new StudyIndex(
      {
        dir,
        stableMs: 1000,
        retentionMs: 3600_000,
        now: () => later,
        holds: (uid) => {
          if (failHolds) throw new Error('redis down');
          return held.has(uid);
        },
      },
      log,
    );
    await index.init();
    await index.scan();
    assert.equal(index.list().length, 2);
    // Not expired yet: nothing goes, whatever holds says.
    const early = new StudyIndex({ dir, stableMs: 1000, retentionMs: 3600_000 }, log);
    await early.init();
    await early.scan();
    assert.deepEqual(await early.sweep(), []);
    assert.deepEqual(await index.sweep(), [], 'holds failing: nothing removed');
    failHolds = false;
    const removed = await index.sweep();
    assert.equal(removed.length, 1);
    assert.notEqual(removed[0], studyA.studyInstanceUid);
    assert.equal(index.findStudies({ accessionNumber: 'ACC-RCV-B' }).length, 0);
    assert.equal(index.seriesFiles(studyA.studyInstanceUid, studyA.seriesInstanceUid).length, 12, 'the held study stays');
    const folders = await readdir(index.studiesDir);
    assert.deepEqual(folders, [`st_${studyA.studyInstanceUid}`]);
    // Quarantined files past retention go too.
    assert.equal((await readdir(index.quarantineDir)).length, 0);
  });

  it('a SIGKILL of `ctgate dicom receive` during a storescu burst loses no instance that got a success response', async () => {
    await receiver?.stop();
    receiver = undefined;
    const c = await syntheticSeries(join(root, 'c'), 73, 'ACC-RCV-C', 40);
    const dir = join(root, 'receive');
    const env = { ...process.env, CTGATE_DIMSE_ALLOWED_CALLERS: 'MODALITY', CTGATE_DIMSE_RECEIVE_DIR: dir, CTGATE_LOG_LEVEL: 'warn' };
    const gw = spawn(process.execPath, ['bin/ctgate.mjs', 'dicom', 'receive', '--port', String(port)], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const gwClosed = once(gw, 'close');
    let out = '';
    gw.stdout.on('data', (d) => {
      out += d;
    });
    await until('ready', () => out.includes('"ready":true'));
    // One association of 40 files; its verbose output says which got a success response before the kill.
    const scu = spawn('storescu', ['-v', '-aet', 'MODALITY', '-aec', 'CTGATE', '-to', '5', '-ta', '5', '-td', '5', '127.0.0.1', String(port), ...c.files], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const scuClosed = once(scu, 'close');
    let scuOut = '';
    let killed = false;
    const onOut = (d: Buffer) => {
      scuOut += d;
      const ok = (scuOut.match(/Received Store Response \(Success\)/g) ?? []).length;
      if (ok >= 15 && !killed) {
        killed = true;
        gw.kill('SIGKILL');
      }
    };
    scu.stdout.on('data', onOut);
    scu.stderr.on('data', onOut);
    await scuClosed;
    await gwClosed;
    assert.ok(killed, 'killed during the burst');
    // The files storescu got a success response for, in the order sent.
    const acked: string[] = [];
    let current = '';
    for (const line of scuOut.split('\n')) {
      const sending = /Sending file:\s*(.+)$/.exec(line);
      if (sending) current = sending[1]?.trim() ?? '';
      if (/Received Store Response \(Success\)/.test(line)) acked.push(current);
    }
    assert.ok(acked.length >= 15 && acked.length < 40, `acked ${acked.length}`);
    // Restarted: every acknowledged instance is indexed.
    await sleep(300);
    receiver = await startDimseReceiver(config, log, { scanMs: 200 });
    const files = receiver.index.seriesFiles(c.studyInstanceUid, c.seriesInstanceUid);
    const have = new Set(files.map((f) => /CT\.(.+)\.dcm$/.exec(f)?.[1]));
    for (const f of acked) {
      const i = c.files.indexOf(f);
      assert.ok(have.has(c.sops[i]), `instance ${i + 1} (acknowledged) is indexed`);
    }
  });
});

/** A throwaway CA, server and client certificate made with the openssl CLI. */
function makeCerts(dir: string) {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=ctgate-test-ca', '-keyout', 'ca.key', '-out', 'ca.pem');
  for (const name of ['server', 'client']) {
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.csr`);
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', `${name}.pem`);
  }
  const f = (n: string) => join(dir, n);
  return { ca: f('ca.pem'), cert: f('server.pem'), key: f('server.key'), clientCert: f('client.pem'), clientKey: f('client.key') };
}

describe('DIMSE receive over DICOM TLS (ctgate terminates TLS; DCMTK echoscu/storescu +tls)', () => {
  let root = '';
  let receiver: DimseReceiver | undefined;
  const lines: string[] = [];
  const log = createLogger('debug', false, (l) => lines.push(l));
  let certs: ReturnType<typeof makeCerts>;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ctgate-dimse-tls-'));
    certs = makeCerts(root);
    const cfg = loadConfig({
      CTGATE_DIMSE_LISTEN_PORT: '0',
      CTGATE_DIMSE_ALLOWED_CALLERS: 'MODALITY',
      CTGATE_DIMSE_RECEIVE_DIR: join(root, 'receive'),
      CTGATE_DIMSE_TLS_CERT_FILE: certs.cert,
      CTGATE_DIMSE_TLS_KEY_FILE: certs.key,
      CTGATE_DIMSE_TLS_CA_FILE: certs.ca,
    }).dimseReceive;
    assert.ok(cfg?.tls);
    receiver = await startDimseReceiver(cfg, log, { scanMs: 200 });
  });
  after(async () => {
    await receiver?.stop();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('takes C-ECHO and C-STORE from a sender with a certificate the CA signed; refuses one without, and plain TCP', async () => {
    const base: DimsePeer = { host: '127.0.0.1', port: receiver?.port ?? 0, calledAe: 'CTGATE', callingAe: 'MODALITY', timeoutS: 5, label: 'ctgate' };
    const mutual = { ...base, tls: { caFile: certs.ca, certFile: certs.clientCert, keyFile: certs.clientKey } };
    assert.equal((await echo(mutual)).ok, true);
    const s = await syntheticSeries(join(root, 'a'), 81, 'ACC-TLS', 3);
    const statuses = await storeFiles(mutual, s.files, 'CT');
    assert.equal(statuses.length, 3);
    await receiver?.index.scan();
    assert.equal(receiver?.index.findStudies({ accessionNumber: 'ACC-TLS' })[0]?.instances, 3);
    assert.equal((await echo({ ...base, tls: { caFile: certs.ca } })).ok, false, 'no client certificate');
    assert.equal((await echo(base)).ok, false, 'plain TCP');
    assert.ok(lines.some((l) => /dimse\.tls-refused/.test(l)));
    // The gate still checks the calling AE inside TLS.
    const stranger = await echo({ ...mutual, callingAe: 'STRANGER' });
    assert.match(stranger.error?.message ?? '', /Calling AE Title Not Recognized/);
  });
});
