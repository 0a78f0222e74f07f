/**
 * Results over DIMSE with real peers: DCMTK's echoscu/storescu (run by ctgate) against Orthanc's DICOM server over
 * loopback. `ctgate dicom echo` succeeds, names a rejection (wrong called AE, calling AE not allowed: exit 3) and a
 * closed port (exit 1). The write-seg stage's writer with CTGATE_RESULTS_TRANSPORT=dimse puts the SEG, the key images,
 * the KOS and the SR in a second Orthanc (the destination) by C-STORE, not in the DICOMweb PACS it read from; a resend
 * leaves one copy of each; a destination that rejects ctgate's AE, one whose storage is full (C-STORE 0xa700, a real
 * Orthanc refusal) and a closed port fail with messages naming pacs-dimse, retryable or not as they should be.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../../src/config/index.js';
import { DimseError, type DimsePeer } from '../../src/dicom/dcmtk.js';
import { str, TAG } from '../../src/dicomweb/dicom-json.js';
import { classifyError } from '../../src/jobs/screening.js';
import { segWriter } from '../../src/jobs/writers.js';
import { errorPeer } from '../../src/observability/metric-names.js';
import { freePort, TestOrthanc } from '../helpers/orthanc.js';
import { syntheticResult } from '../helpers/result-context.js';

async function ctgate(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, ['bin/ctgate.mjs', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => {
    out += d;
  });
  child.stderr.on('data', (d) => {
    err += d;
  });
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, out, err };
}

/** pydicom's small CT (python3-pydicom, installed by .ci/setup.sh): a patient other than the synthetic one. */
const PYDICOM_CT = '/usr/lib/python3/dist-packages/pydicom/data/test_files/CT_small.dcm';
const SOP_CLASS = '00080016';
const SOP_CLASSES: Record<string, string> = {
  SEG: '1.2.840.10008.5.1.4.1.1.66.4',
  SR: '1.2.840.10008.5.1.4.1.1.88.34',
  KO: '1.2.840.10008.5.1.4.1.1.88.59',
  OT: '1.2.840.10008.5.1.4.1.1.7',
};

describe('results over DIMSE (DCMTK storescu/echoscu, Orthanc DICOM server)', () => {
  // The PACS the study is read from (DICOMweb), and the C-STORE destination (an archive with a DICOM server).
  const source = new TestOrthanc();
  const dest = new TestOrthanc({ dicom: { aet: 'ARCHIVE', checkCalledAet: true } });
  // Knows only the AE OTHER: rejects ctgate's associations (echo and store) with "calling AE not recognized".
  const strict = new TestOrthanc({
    dicom: { aet: 'STRICT', alwaysAllowEcho: false, alwaysAllowStore: false, modalities: { OTHER: ['OTHER', '127.0.0.1', 1] } },
  });
  // Holds one protected patient and may hold no more: a new patient's instances are refused (C-STORE 0xa700).
  const full = new TestOrthanc({ dicom: { aet: 'FULL', maximumPatientCount: 1 } });
  let closedPort = 0;

  const peer = (o: TestOrthanc, extra: Partial<DimsePeer> = {}): DimsePeer => ({
    host: '127.0.0.1',
    port: o.dicomPort,
    calledAe: o.dicomAet,
    callingAe: 'CTGATE',
    timeoutS: 5,
    ...extra,
  });

  before(async () => {
    await Promise.all([source.start(), dest.start(), strict.start(), full.start()]);
    closedPort = await freePort();
    // Another patient's CT fills the full PACS, protected from recycling.
    const res = await fetch(`${full.url}/instances`, { method: 'POST', body: readFileSync(PYDICOM_CT) });
    assert.equal(res.status, 200);
    const patients = (await (await fetch(`${full.url}/patients`)).json()) as string[];
    assert.equal(patients.length, 1);
    assert.equal((await fetch(`${full.url}/patients/${patients[0]}/protected`, { method: 'PUT', body: '1' })).status, 200);
  });
  after(async () => {
    await Promise.all([source.stop(), dest.stop(), strict.stop(), full.stop()]);
  });

  it('ctgate dicom echo: ok; a wrong called AE or an unknown calling AE is a rejection (exit 3); a closed port exit 1', async () => {
    const ok = await ctgate(['dicom', 'echo', '--host', '127.0.0.1', '--port', String(dest.dicomPort), '--called-ae', 'ARCHIVE']);
    assert.equal(ok.code, 0, ok.err);
    const line = JSON.parse(ok.out) as { ok: boolean; host: string; port: number; calledAe: string; ms: number; error?: string };
    assert.equal(line.ok, true);
    assert.equal(line.host, '127.0.0.1');
    assert.equal(line.port, dest.dicomPort);
    assert.equal(line.calledAe, 'ARCHIVE');
    assert.ok(Number.isFinite(line.ms));
    assert.equal(line.error, undefined);

    const wrongCalled = await ctgate(['dicom', 'echo', '--host', '127.0.0.1', '--port', String(dest.dicomPort), '--called-ae', 'NOT-ARCHIVE']);
    assert.equal(wrongCalled.code, 3, wrongCalled.out + wrongCalled.err);
    const w = JSON.parse(wrongCalled.out) as { ok: boolean; error: string };
    assert.equal(w.ok, false);
    assert.match(w.error, /Called AE Title Not Recognized/);

    const unknownCalling = await ctgate(['dicom', 'echo', '--host', '127.0.0.1', '--port', String(strict.dicomPort), '--called-ae', 'STRICT'], {
      CTGATE_DICOM_AE_TITLE: 'CTGATE',
    });
    assert.equal(unknownCalling.code, 3, unknownCalling.out + unknownCalling.err);
    assert.match((JSON.parse(unknownCalling.out) as { error: string }).error, /Calling AE Title Not Recognized/);
    // The AE Orthanc knows is let in.
    const known = await ctgate(['dicom', 'echo', '--host', '127.0.0.1', '--port', String(strict.dicomPort), '--called-ae', 'STRICT', '--calling-ae', 'OTHER']);
    assert.equal(known.code, 0, known.out + known.err);

    const closed = await ctgate(['dicom', 'echo', '--host', '127.0.0.1', '--port', String(closedPort), '--timeout', '3']);
    assert.equal(closed.code, 1);
    const c = JSON.parse(closed.out) as { ok: boolean; error: string };
    assert.equal(c.ok, false);
    assert.match(c.error, /unreachable: connection refused/);

    const bad = await ctgate(['dicom', 'echo', '--host', '127.0.0.1', '--port', '104', '--called-ae', 'A\\B']);
    assert.equal(bad.code, 1);
    assert.match(bad.err, /--called-ae/);
  });

  it('CTGATE_RESULTS_TRANSPORT=dimse: SEG, key images, KOS and SR go to the destination by C-STORE; a resend adds nothing', async () => {
    const { context, series } = syntheticResult({ seed: 7, kind: 'covid' });
    await source.client().store(series.files.map((f) => f.bytes));
    const config = loadConfig({
      CTGATE_PACS_URL: source.dicomweb,
      CTGATE_RESULTS_TRANSPORT: 'dimse',
      CTGATE_RESULTS_DIMSE_HOST: '127.0.0.1',
      CTGATE_RESULTS_DIMSE_PORT: String(dest.dicomPort),
      CTGATE_RESULTS_DIMSE_CALLED_AE: 'ARCHIVE',
      CTGATE_RESULTS_DIMSE_TIMEOUT_S: '10',
    });
    assert.equal(config.results.transport, 'dimse');
    // Checked at start, the error naming the key.
    assert.throws(() => loadConfig({ CTGATE_RESULTS_TRANSPORT: 'dimse', CTGATE_RESULTS_DIMSE_HOST: 'pacs' }), /^ConfigError: CTGATE_RESULTS_DIMSE_CALLED_AE/);
    assert.throws(() => loadConfig({ CTGATE_DICOM_AE_TITLE: 'MUCH-TOO-LONG-AE-TITLE' }), /CTGATE_DICOM_AE_TITLE: expected an AE title/);
    assert.throws(() => loadConfig({ CTGATE_RESULTS_TRANSPORT: 'c-store' }), /CTGATE_RESULTS_TRANSPORT: expected one of stow, dimse, both/);
    assert.throws(() => loadConfig({ CTGATE_RESULTS_DIMSE_HOST: 'pacs' }), /CTGATE_RESULTS_TRANSPORT: expected dimse or both/);
    assert.equal(config.results.dimse?.callingAe, 'CTGATE');
    const write = segWriter(source.client(), config.results);
    const out = await write(context);
    assert.ok('seriesInstanceUid' in out, JSON.stringify(out));
    const study = context.study.studyInstanceUid;

    const check = async () => {
      const all = await dest.client().searchSeries(study);
      const byModality = new Map(all.map((s) => [str(s, TAG.Modality) ?? '', str(s, TAG.SeriesInstanceUID) ?? '']));
      assert.deepEqual([...byModality.keys()].sort(), ['KO', 'OT', 'SEG', 'SR'], 'every object in the destination, the CT not');
      assert.equal(byModality.get('SEG'), out.seriesInstanceUid);
      assert.equal(byModality.get('SR'), out.srSeriesInstanceUid);
      assert.equal(byModality.get('KO'), out.kosSeriesInstanceUid);
      assert.equal(byModality.get('OT'), out.keyImageSeriesInstanceUid);
      const counts: Record<string, number> = {};
      for (const [modality, uid] of byModality) {
        const instances = await dest.client().searchInstances(study, uid);
        counts[modality] = instances.length;
        for (const i of instances) assert.equal(str(i, SOP_CLASS), SOP_CLASSES[modality], modality);
      }
      assert.deepEqual(counts, { KO: 1, OT: out.keyImages, SEG: 1, SR: 1 });
      const stats = (await (await fetch(`${dest.url}/statistics`)).json()) as { CountInstances: number };
      assert.equal(stats.CountInstances, 3 + (out.keyImages ?? 0));
    };
    await check();
    assert.ok((out.keyImages ?? 0) >= 1);
    // Not by STOW-RS into the PACS it read from: that one still holds only the CT.
    const sourceSeries = await source.client().searchSeries(study);
    assert.deepEqual(
      sourceSeries.map((s) => str(s, TAG.Modality)),
      ['CT'],
    );
    // The stage again (a retry after a crash): the same instances, no second copy.
    const again = await write(syntheticResult({ seed: 7, kind: 'covid' }).context);
    assert.deepEqual(again, out);
    await check();
  });

  it('a destination that refuses: rejected AE (not retryable), storage full 0xa700 (retryable), closed port (retryable)', async () => {
    const { context } = syntheticResult({ seed: 11, kind: 'covid', size: [48, 48, 16] });
    const attempt = async (p: DimsePeer): Promise<DimseError> => {
      const e = await segWriter(source.client(), { transport: 'dimse', dimse: p })(context).then(
        () => assert.fail('stored'),
        (x: unknown) => x,
      );
      assert.ok(e instanceof DimseError, String(e));
      assert.equal(errorPeer('write-seg', e), 'pacs-dimse');
      return e;
    };
    const rejected = await attempt(peer(strict));
    assert.equal(rejected.kind, 'rejected');
    assert.match(rejected.message, /^pacs-dimse rejected the association for C-STORE of SEG: Calling AE Title Not Recognized/);
    assert.equal(classifyError(rejected).retryable, false);

    const refused = await attempt(peer(full));
    assert.equal(refused.kind, 'refused');
    assert.equal(refused.status, 0xa700);
    assert.match(refused.message, /^pacs-dimse refused the SEG instance: C-STORE status 0xa700 \(Refused: OutOfResources\)/);
    assert.equal(classifyError(refused).retryable, true);
    // Orthanc kept nothing of it.
    const stats = (await (await fetch(`${full.url}/statistics`)).json()) as { CountPatients: number };
    assert.equal(stats.CountPatients, 1);

    const down = await attempt(peer(dest, { port: closedPort }));
    assert.equal(down.kind, 'network');
    assert.match(down.message, /^pacs-dimse unreachable: connection refused/);
    assert.equal(classifyError(down).retryable, true);
    // No host, file or patient data in what becomes the job's lastError.
    for (const e of [rejected, refused, down]) assert.doesNotMatch(e.message, /127\.0\.0\.1|\/tmp|ctgate-cstore|Synthetic/);
  });
});
