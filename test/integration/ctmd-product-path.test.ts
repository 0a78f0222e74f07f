/**
 * Issue 17 (items 4 and 5): three REAL whole chest CT volumes (../shared/data/covid-ct-md, test only: never used for
 * training or for any threshold) through the service path, as a hospital runs it:
 *
 *   stored in a real Orthanc → an HL7 ORM^O01 per study over MLLP (python-hl7's mllp_send, the real sender) to the
 *   real gateway → the real `ctgate worker` process with the shipped models (models/manifest.json) waits for the
 *   study, checks the patient, retrieves it over WADO-RS and analyses it → SEG, SR, KOS and key images back into
 *   Orthanc, ORU^R01 to python-hl7's MLLP receiver (the EMR) → the job's result read through the gateway's job API.
 *   The frames come as stored (JPEG Lossless SV1) and ctgate decodes them: the worker asks for explicit VR little
 *   endian first and the stored syntax (`transfer-syntax=*`) second, and Orthanc's DICOMweb plugin 1.7 answers the
 *   LAST media range of an Accept header (q values ignored), so it does not transcode here.
 *
 * - P002 (COVID-19, RT-PCR confirmed): covid-19-like, verdict positive;
 * - normal002 (normal chest): not covid-19-like; the lesion model's false-positive volume bounded (< 40 mL);
 * - cap002 (community-acquired pneumonia): what the shipped models say, asserted only through
 *   CAP002_EXPECTED_NOT_COVID below;
 * - the SEG and the SR the worker stores reference the source study by its StudyInstanceUID byte for byte (a UUID
 *   string as published, not a valid DICOM UID), and land in that same study in Orthanc (no new study).
 *
 * What the published files lack, and this test adds in a temporary copy (the data folder is never written to):
 * - SOPInstanceUID (0008,0018) is EMPTY in every file. A PACS cannot hold an instance without one: Orthanc 1.10
 *   answers REST POST /instances with 400 "missing StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID", and a
 *   STOW-RS of such a file with HTTP 200 and the instance in FailedSOPSequence (nothing stored). Each file gets a
 *   deterministic 2.25 UID from a hash of its bytes (dcmodify also updates the meta header's MediaStorageSOPInstanceUID).
 * - AccessionNumber (0008,0050) is empty, and so are StudyDate, PatientName and PatientBirthDate (anonymised). An
 *   order links to its study by accession number (or StudyInstanceUID, but intake refuses a UUID there: HL7 IPC-3 /
 *   ZDS-1 must be a valid DICOM UID), so each copy gets the accession its order carries, as a modality worklist
 *   would have put it. The patient identity rule of this sending facility compares PatientID only (the files
 *   carry no name or birth date to compare), set in a temporary copy of mappings/orders.yaml.
 * Pixel data, StudyInstanceUID and SeriesInstanceUID stay as published; the files stay JPEG Lossless SV1.
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { type Receiver, running, startReceiver } from '../../src/cli/local-peers/oru-receiver.js';
import { str, TAG } from '../../src/dicomweb/dicom-json.js';
import { jobIdFor } from '../../src/domain/job.js';
import type { JobState } from '../../src/jobs/job-state.js';
import { startTestGateway, TEST_TOKEN, type TestGateway } from '../helpers/gateway.js';
import { mllpSend } from '../helpers/hl7.js';
import { TestOrthanc } from '../helpers/orthanc.js';
import { REDIS_URL, requireRedis } from '../helpers/redis.js';
import { unlessPresent } from '../helpers/requires.js';
import { fastWorkerEnv, killWorkers, sleep, spawnWorker, type WorkerProcess } from '../helpers/worker-process.js';

/**
 * issue 17: the shipped classifier 0.2 calls cap002 covid-19-like; the lead flips this when a model that passes ships.
 * true: the test asserts cap002's category is NOT covid-19-like; false: it asserts it IS (today's behaviour), so the
 * test fails when the models' answer changes either way.
 */
export const CAP002_EXPECTED_NOT_COVID = false;

const DATA = join('..', 'shared', 'data', 'covid-ct-md');
const MANIFEST = 'models/manifest.json';
const FACILITY = 'CTMD';
const SENDER = { application: 'EPIC', facility: FACILITY };

interface Study {
  name: string;
  rel: string;
  studyInstanceUid: string;
  seriesInstanceUid: string;
  files: number;
}

/** The three volumes as published (UIDs from their files; the test checks them against the files). */
const STUDIES: Study[] = [
  {
    name: 'P002',
    rel: 'covid/P002',
    studyInstanceUid: '896911bf-1143-4c8d-8f04-f3cd1a7f6204',
    seriesInstanceUid: '09bc8aea-ff9c-4106-8514-294cbcf9a082',
    files: 67,
  },
  {
    name: 'cap002',
    rel: 'cap/cap002',
    studyInstanceUid: '4bae1d63-1eeb-4386-bd1b-68e8ba379989',
    seriesInstanceUid: '7afb0d48-ec01-4941-9a58-66d15cab76fb',
    files: 66,
  },
  {
    name: 'normal002',
    rel: 'normal/normal002',
    studyInstanceUid: '1355759b-7653-424e-b0b5-1d131628d0e4',
    seriesInstanceUid: '1bc8b288-610b-4001-aac8-f814641169da',
    files: 84,
  },
];

const accessionOf = (s: Study) => `CTMD-${s.name}`;
const placerOf = (s: Study) => `PLC-CTMD-${s.name}`;

const execFileP = promisify(execFile);
const tool = (name: string) => (spawnSync(name, ['--version']).error ? `${name} not installed (bash .ci/setup.sh installs dcmtk)` : false);
const skip = unlessPresent(
  !existsSync(MANIFEST)
    ? `${MANIFEST} not present`
    : STUDIES.find((s) => !existsSync(join(DATA, s.rel)))
      ? `${DATA} not present (see ../shared/data/README.md)`
      : !existsSync('/usr/bin/mllp_send')
        ? '/usr/bin/mllp_send not installed (python3-hl7)'
        : tool('dcmodify') || tool('dcmdump'),
);

/** A deterministic UID under the 2.25 root (ITU-T X.667: a 128-bit number) from a file's bytes. */
function uidFromBytes(bytes: Uint8Array): string {
  return `2.25.${BigInt(`0x${createHash('sha256').update(bytes).digest('hex').slice(0, 32)}`)}`;
}

/** Copies a study's files to `dir`, giving each its SOPInstanceUID and the order's AccessionNumber (see the header). */
async function prepareCopy(study: Study, dir: string): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const names = (await readdir(join(DATA, study.rel))).filter((n) => n.endsWith('.dcm')).sort();
  assert.equal(names.length, study.files, `${study.name}: files`);
  const uids = new Set<string>();
  const queue = [...names];
  const one = async () => {
    for (let n = queue.shift(); n !== undefined; n = queue.shift()) {
      const src = join(DATA, study.rel, n);
      const dst = join(dir, n);
      const uid = uidFromBytes(await readFile(src));
      uids.add(uid);
      await copyFile(src, dst);
      await execFileP('dcmodify', ['-nb', '-i', `(0008,0018)=${uid}`, '-i', `(0008,0050)=${accessionOf(study)}`, dst]);
    }
  };
  await Promise.all([one(), one()]);
  assert.equal(uids.size, names.length, `${study.name}: one SOPInstanceUID per file`);
  return names.map((n) => join(dir, n));
}

/** The values of one tag anywhere in a file (sequences included), as dcmdump prints them. */
async function tagValues(file: string, tag: string, opts: string[] = []): Promise<string[]> {
  const { stdout } = await execFileP('dcmdump', [...opts, '+P', tag, '-q', file], { maxBuffer: 64 * 1024 * 1024 });
  return [...stdout.matchAll(/\[([^\]]*)\]/g)].map((m) => m[1] as string);
}

/** An ORM^O01 new order for the study; the patient is the study's PatientID (the files carry no name or birth date). */
function orderFor(s: Study, i: number): string {
  const placer = placerOf(s);
  return [
    `MSH|^~\\&|${SENDER.application}|${FACILITY}|CTGATE|RADIOLOGY|20261204101500||ORM^O01^ORM_O01|MSG-CTMD-${i}|P|2.5.1`,
    `PID|1||${s.name}^^^${FACILITY}^MR||ANONYMOUS^CTMD`,
    `ORC|NW|${placer}^EPIC|F-${placer}^RIS||SC||^^^20261204101000^^R||20261204101400|||77^ORDERING^OLIVIA`,
    `OBR|1|${placer}^EPIC|F-${placer}^RIS|71250^CT THORAX WO CONTRAST^C4|||20261204101000||||||||77^ORDERING^OLIVIA|||${accessionOf(s)}`,
  ].join('\r');
}

interface Outcome {
  study: Study;
  queueState: string;
  checkpoint: JobState;
  category: string;
  verdict: string;
  probability: number | null;
  lesionMl: number;
  oru: string;
}

describe('covid-ct-md volumes through the product path (Orthanc, MLLP gateway, worker, shipped models)', { skip }, () => {
  const orthanc = new TestOrthanc();
  let gw: TestGateway | undefined;
  let rx: Receiver | undefined;
  let worker: WorkerProcess | undefined;
  let root = '';
  const outcomes = new Map<string, Outcome>();
  let runError: unknown;
  let wallS = 0;

  const api = async <T>(path: string): Promise<T> => {
    const r = await fetch(`http://127.0.0.1:${gw?.httpPort}${path}`, { headers: { Authorization: `Bearer ${TEST_TOKEN}` } });
    assert.equal(r.status, 200, `${path}: HTTP ${r.status}`);
    return (await r.json()) as T;
  };
  const orthancJson = async <T>(path: string, body?: string): Promise<T> => {
    const r = await fetch(`${orthanc.url}${path}`, body === undefined ? {} : { method: 'POST', body });
    assert.ok(r.ok, `Orthanc ${path}: HTTP ${r.status}`);
    return (await r.json()) as T;
  };

  /** The one instance of a series, as Orthanc stores it, written to a temporary file. */
  async function fetchInstance(seriesInstanceUid: string, as: string): Promise<{ file: string; bytes: Buffer }> {
    const hits = await orthancJson<{ ID: string; Type: string }[]>('/tools/lookup', seriesInstanceUid);
    const series = hits.find((h) => h.Type === 'Series');
    assert.ok(series, `series ${seriesInstanceUid} in Orthanc`);
    const instances = await orthancJson<{ ID: string }[]>(`/series/${series.ID}/instances`);
    assert.equal(instances.length, 1, `one instance in ${as}`);
    const r = await fetch(`${orthanc.url}/instances/${instances[0]?.ID}/file`);
    assert.equal(r.status, 200);
    const bytes = Buffer.from(await r.arrayBuffer());
    const file = join(root, `${as}.dcm`);
    await writeFile(file, bytes);
    return { file, bytes };
  }

  before(async () => {
    await requireRedis();
    root = await mkdtemp(join(tmpdir(), 'ctgate-ctmd-path-'));
    const t0 = performance.now();
    await orthanc.start();
    rx = await startReceiver();

    // The studies into the PACS first (the worker would wait for them otherwise; this keeps the run short).
    for (const s of STUDIES) {
      const files = await prepareCopy(s, join(root, 'data', s.name));
      const first = files[0] as string;
      assert.deepEqual(await tagValues(first, '0020,000d'), [s.studyInstanceUid], `${s.name}: StudyInstanceUID as published`);
      assert.deepEqual(await tagValues(first, '0020,000e'), [s.seriesInstanceUid], `${s.name}: SeriesInstanceUID as published`);
      assert.deepEqual(await tagValues(first, '0002,0010', ['-Un']), ['1.2.840.10008.1.2.4.70'], `${s.name}: still JPEG Lossless SV1`);
      const answer = await orthanc.client().store(await Promise.all(files.map((f) => readFile(f))));
      assert.equal(answer['00081198']?.Value?.length ?? 0, 0, `${s.name}: no failed instance in the STOW-RS answer`);
    }
    const studies = await orthancJson<string[]>('/studies');
    assert.equal(studies.length, STUDIES.length, 'one Orthanc study per volume');
    for (const s of STUDIES) {
      const inst = await orthanc.client().searchInstances(s.studyInstanceUid, s.seriesInstanceUid);
      assert.equal(inst.length, s.files, `${s.name}: every instance stored`);
    }
    process.stdout.write(`# covid-ct-md: ${STUDIES.length} studies prepared and stored in Orthanc in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);

    // The sender's rule: this PACS's patients carry PatientID only (anonymised data), so only the ID is compared.
    const mappings = join(root, 'orders.yaml');
    const yaml = await readFile('mappings/orders.yaml', 'utf8');
    assert.match(yaml, /^facilities:\n/m);
    await writeFile(mappings, yaml.replace(/^facilities:\n/m, `facilities:\n  ${FACILITY}:\n    patientIdentity:\n      compare: [id]\n`));

    gw = await startTestGateway({ CTGATE_PACS_URL: orthanc.dicomweb, CTGATE_MAPPINGS_FILE: mappings });
    worker = spawnWorker(
      fastWorkerEnv(
        { redisUrl: REDIS_URL, prefix: gw.prefix, pacsUrl: orthanc.dicomweb, oruPort: rx.port },
        { CTGATE_MAPPINGS_FILE: mappings, CTGATE_MODELS_MANIFEST: MANIFEST, CTGATE_MODEL_PROVIDERS: 'cpu', CTGATE_REDIS_REQUIRE_AOF: 'false' },
      ),
      { tail: 8000 },
    );

    // One run for the three studies through one worker; the tests below read its outcomes.
    const start = performance.now();
    try {
      const acks = await mllpSend(gw.mllp.port, STUDIES.map(orderFor));
      assert.equal(acks.length, STUDIES.length, `one ACK per order: ${acks.join(' / ')}`);
      for (const a of acks) assert.match(a, /\rMSA\|(AA|CA)\|/, `ACK: ${a.replace(/\r/g, ' / ')}`);
      for (const s of STUDIES) {
        const jobId = jobIdFor(SENDER, placerOf(s));
        let prog: { queueState: string; checkpoint: JobState | null; lastError: unknown } = { queueState: '', checkpoint: null, lastError: null };
        const deadline = Date.now() + 180_000;
        for (;;) {
          prog = await api(`/api/jobs/${jobId}/progress`);
          if (prog.queueState === 'completed' || prog.queueState === 'failed') break;
          if (worker.child.exitCode !== null) throw new Error(`the worker exited (${worker.child.exitCode}): ${worker.stderr()}`);
          if (Date.now() > deadline) throw new Error(`${s.name}: job still ${prog.queueState}: ${JSON.stringify(prog.checkpoint)}; worker: ${worker.stderr()}`);
          await sleep(500);
        }
        const job = await api<{ failedReason?: string; status?: string }>(`/api/jobs/${jobId}`);
        assert.equal(prog.queueState, 'completed', `${s.name}: ${job.failedReason} ${JSON.stringify(prog.checkpoint)}; worker: ${worker.stderr()}`);
        const cp = prog.checkpoint as JobState;
        const oru: string[] = (rx as Receiver)
          .received()
          .map((m) => m.toString())
          .filter((m) => m.includes(`|${placerOf(s)}`));
        assert.equal(oru.length, 1, `${s.name}: one ORU`);
        const lesionObx = (oru[0] as string).split(/\r|\n/).find((l) => /^OBX\|\d*\|NM\|LESVOL\^/.test(l));
        const lesionMl = Number(lesionObx?.split('|')[5]);
        const a = cp.outputs.analyze;
        outcomes.set(s.name, {
          study: s,
          queueState: prog.queueState,
          checkpoint: cp,
          category: a?.category ?? '',
          verdict: a?.verdict ?? '',
          probability: a?.probability ?? null,
          lesionMl: lesionObx ? lesionMl : 0,
          oru: oru[0] as string,
        });
        process.stdout.write(
          `# covid-ct-md ${s.name}: ${a?.verdict} / ${a?.category} p=${a?.probability?.toFixed(4)}, lesion ${lesionObx ? lesionMl : 'none'} mL ` +
            `(retrieve ${cp.timingsMs.retrieve} ms, analyze ${cp.timingsMs.analyze} ms)\n`,
        );
      }
    } catch (e) {
      runError = e;
    }
    wallS = (performance.now() - start) / 1000;
    process.stdout.write(`# covid-ct-md: the three orders from MLLP to result in ${wallS.toFixed(1)} s\n`);
  });

  after(async () => {
    if (worker && worker.child.exitCode === null) {
      worker.child.kill('SIGTERM');
      await Promise.race([worker.exited, sleep(15_000)]);
    }
    killWorkers();
    await rx?.stop();
    for (const p of running) p.kill('SIGTERM');
    await gw?.cleanup();
    await orthanc.stop();
    if (root) await rm(root, { recursive: true, force: true });
  });

  const outcome = (name: string): Outcome => {
    if (runError) throw runError;
    const o = outcomes.get(name);
    assert.ok(o, `no outcome for ${name}`);
    return o;
  };

  it('runs every order to completed through the gateway and the worker, matching each study by its accession', () => {
    for (const s of STUDIES) {
      const o = outcome(s.name);
      const cp = o.checkpoint;
      assert.equal(cp.stage, 'done', s.name);
      assert.equal(cp.outputs['wait-for-study']?.studyInstanceUid, s.studyInstanceUid, `${s.name}: the study, byte for byte`);
      assert.equal(cp.outputs['wait-for-study']?.matchedBy, 'accessionNumber');
      assert.equal(cp.outputs['wait-for-study']?.patientIdentity?.outcome, 'match');
      assert.equal(cp.outputs.retrieve?.seriesInstanceUid, s.seriesInstanceUid);
      assert.equal(cp.outputs.retrieve?.slices, s.files);
      assert.equal(cp.outputs.analyze?.executionProvider, 'cpu');
      assert.equal(cp.outputs['send-oru'] && 'ackCode' in cp.outputs['send-oru'] ? cp.outputs['send-oru'].ackCode : undefined, 'AA');
    }
  });

  it('calls P002 (COVID-19) covid-19-like, verdict positive', () => {
    const o = outcome('P002');
    assert.equal(o.category, 'covid-19-like');
    assert.equal(o.verdict, 'positive');
  });

  it('does not call normal002 covid-19-like, and bounds its lesion volume', () => {
    const o = outcome('normal002');
    assert.notEqual(o.category, 'covid-19-like');
    assert.notEqual(o.verdict, 'positive');
    // About 25 mL with the 0.2 lesion model (MODEL_CARD.md); 40 mL is a generous guard.
    assert.ok(Number.isFinite(o.lesionMl) && o.lesionMl < 40, `normal002: lesion ${o.lesionMl} mL`);
  });

  it(`cap002 (community-acquired pneumonia): category ${CAP002_EXPECTED_NOT_COVID ? 'NOT ' : ''}covid-19-like, per CAP002_EXPECTED_NOT_COVID`, () => {
    const o = outcome('cap002');
    process.stdout.write(
      `# cap002: category ${o.category}, p=${o.probability}, lesion ${o.lesionMl} mL (CAP002_EXPECTED_NOT_COVID=${CAP002_EXPECTED_NOT_COVID})\n`,
    );
    if (CAP002_EXPECTED_NOT_COVID) assert.notEqual(o.category, 'covid-19-like', 'cap002 is another pneumonia');
    else assert.equal(o.category, 'covid-19-like', 'the shipped models call cap002 covid-19-like (issue 17); flip CAP002_EXPECTED_NOT_COVID if that changed');
  });

  it('stores SEG and SR in the source study, referencing its StudyInstanceUID (a UUID string) byte for byte', async () => {
    for (const s of STUDIES) {
      const o = outcome(s.name);
      const seg = o.checkpoint.outputs['write-seg'];
      assert.ok(seg, `${s.name}: write-seg output`);
      assert.ok(seg.srSeriesInstanceUid, `${s.name}: an SR series`);
      const segUid = 'seriesInstanceUid' in seg ? seg.seriesInstanceUid : undefined;
      // P002's lesions make a SEG; the others have one whenever the lesion model marked anything.
      if (s.name === 'P002' || o.lesionMl > 0) assert.ok(segUid, `${s.name}: a SEG series (${JSON.stringify(seg)})`);

      const want = Buffer.from(s.studyInstanceUid, 'latin1');
      for (const [kind, uid] of [
        ['SR', seg.srSeriesInstanceUid],
        ['SEG', segUid],
      ] as const) {
        if (!uid) continue;
        const { file, bytes } = await fetchInstance(uid, `${s.name}-${kind}`);
        // Every StudyInstanceUID in the object (its own and any in its references) is the source's, as published.
        const studies = await tagValues(file, '0020,000d');
        assert.ok(studies.length >= 1, `${s.name} ${kind}: a StudyInstanceUID`);
        assert.deepEqual([...new Set(studies)], [s.studyInstanceUid], `${s.name} ${kind}: StudyInstanceUID`);
        assert.ok(bytes.includes(want), `${s.name} ${kind}: the UUID's bytes in the file`);
        // 36 characters: an even length, so no padding byte; the element's value is exactly the UUID.
        const at = bytes.indexOf(Buffer.concat([Buffer.from([0x20, 0x00, 0x0d, 0x00]), Buffer.from('UI', 'latin1')]));
        assert.ok(at > 0, `${s.name} ${kind}: (0020,000D) in explicit VR`);
        assert.equal(bytes.readUInt16LE(at + 6), want.length, `${s.name} ${kind}: value length`);
        assert.ok(bytes.subarray(at + 8, at + 8 + want.length).equals(want), `${s.name} ${kind}: value bytes`);
        // The SEG references the source series (ReferencedSeriesSequence) too.
        if (kind === 'SEG') assert.ok((await tagValues(file, '0020,000e')).includes(s.seriesInstanceUid), `${s.name} SEG: references the source series`);
      }

      // In the same study, beside the CT, as QIDO-RS finds them.
      const series = await orthanc.client().searchSeries(s.studyInstanceUid);
      const modalities = series.map((x) => str(x, TAG.Modality)).sort();
      assert.ok(modalities.includes('CT') && modalities.includes('SR'), `${s.name}: ${modalities.join(', ')}`);
      if (segUid)
        assert.ok(
          series.some((x) => str(x, TAG.SeriesInstanceUID) === segUid && str(x, TAG.Modality) === 'SEG'),
          `${s.name}: SEG in the study`,
        );
      // And the ORU names the study by the same UID.
      assert.ok(o.oru.includes(s.studyInstanceUid), `${s.name}: StudyInstanceUID in the ORU`);
    }
    // No new study was made for any result: Orthanc still holds exactly the three.
    assert.equal((await orthancJson<string[]>('/studies')).length, STUDIES.length, 'no study besides the three sources');
  });
});
