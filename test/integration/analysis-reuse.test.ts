/**
 * The same study ordered again shares the first order's analysis (jobs/analysis-reuse.ts), with real peers: Redis,
 * Orthanc, the Medplum FHIR server, python-hl7's MLLP receiver as the EMR, the trained models. The second order runs
 * no model and writes nothing to the PACS, yet gets its own DiagnosticReport and ORU that name the first order; a
 * changed series, other model versions or reuse switched off run the models again; a burst of orders for one
 * study runs them once.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Receiver, running, startReceiver } from '../../src/cli/local-peers/oru-receiver.js';
import { startWorker } from '../../src/cli/worker.js';
import { loadConfig } from '../../src/config/index.js';
import { str, TAG } from '../../src/dicomweb/dicom-json.js';
import type { JobState } from '../../src/jobs/job-state.js';
import { silentLogger } from '../../src/observability/log.js';
import { writeCtSeries } from '../../src/synthetic/dicom-writer.js';
import { generateChestCt } from '../../src/synthetic/phantom.js';
import { TestFhirServer } from '../helpers/fhir.js';
import { TestOrthanc } from '../helpers/orthanc.js';
import { deleteKeys, REDIS_URL, requireRedis } from '../helpers/redis.js';
import { fastWorkerEnv, uploadStudy, WorkerQueue } from '../helpers/worker-process.js';

describe('analysis reuse across orders of the same study (Redis, Orthanc, FHIR, python-hl7 receiver)', () => {
  const orthanc = new TestOrthanc();
  const fhir = new TestFhirServer();
  const prefix = `ctgate-test-${randomBytes(4).toString('hex')}`;
  let jq: WorkerQueue;
  let rx: Receiver;
  let tmp = '';

  const env = (extra: Record<string, string> = {}) =>
    loadConfig(fastWorkerEnv({ redisUrl: REDIS_URL, prefix, pacsUrl: orthanc.dicomweb, fhirUrl: fhir.url, oruPort: rx.port }, extra));

  /** Runs the orders (placer numbers) for one accession with a worker of this config; their final checkpoints. */
  async function runOrders(accession: string, placers: string[], extra: Record<string, string> = {}): Promise<JobState[]> {
    const worker = await startWorker(env(extra), silentLogger);
    try {
      const ids: string[] = [];
      for (const p of placers) ids.push(await jq.addJob(accession, p));
      const out: JobState[] = [];
      for (const id of ids) {
        const s = await jq.waitForJob(id, (x) => x === 'completed' || x === 'failed', 240_000);
        const st = await jq.states.get(id);
        assert.equal(s, 'completed', JSON.stringify(st));
        out.push(st as JobState);
      }
      return out;
    } finally {
      await worker.stop();
    }
  }

  const ran = (s: JobState) => s.timingsMs.analyze !== undefined;
  const orusFor = (placer: string) => rx.received().filter((m) => m.toString().includes(`|${placer}`));

  before(async () => {
    await requireRedis();
    await Promise.all([orthanc.start(), fhir.start()]);
    jq = new WorkerQueue(REDIS_URL, prefix);
    rx = await startReceiver();
    tmp = await mkdtemp(join(tmpdir(), 'ctgate-reuse-'));
  });

  after(async () => {
    for (const p of running) p.kill('SIGTERM');
    await jq?.close();
    await orthanc.stop();
    await fhir.stop();
    await deleteKeys(prefix);
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('a second order of the same study shares the first one’s analysis and PACS objects, with its own report and ORU', async () => {
    const series = await uploadStudy(orthanc, { seed: 611, kind: 'covid', accession: 'ACC-R1' });
    const [first] = await runOrders('ACC-R1', ['PLC-R1']);
    const [second] = await runOrders('ACC-R1', ['PLC-R2']);
    assert.ok(first && second);
    assert.ok(ran(first), 'the first order ran the models');
    assert.equal(first.outputs.analyze?.reusedFrom, undefined);
    // The second ran neither retrieve's pull nor the models nor the PACS writes, and says whose analysis it has.
    assert.equal(ran(second), false, JSON.stringify(second.timingsMs));
    assert.equal(second.attempts.analyze, undefined);
    assert.equal(second.attempts['write-seg'], undefined);
    const shared = second.outputs.analyze?.reusedFrom;
    assert.equal(shared?.jobId, first.jobId);
    assert.equal(shared?.placerOrderNumber, 'PLC-R1');
    assert.equal(shared?.accessionNumber, 'ACC-R1');
    assert.equal(second.outputs.analyze?.verdict, first.outputs.analyze?.verdict);
    const seg1 = first.outputs['write-seg'];
    const seg2 = second.outputs['write-seg'];
    assert.ok(seg1 && 'seriesInstanceUid' in seg1 && seg2 && 'seriesInstanceUid' in seg2);
    assert.equal(seg2.seriesInstanceUid, seg1.seriesInstanceUid);
    assert.equal(seg2.srSeriesInstanceUid, seg1.srSeriesInstanceUid);
    // One SEG and one SR in the study, whatever the number of orders.
    const all = await orthanc.client().searchSeries(series.studyInstanceUid);
    assert.deepEqual(all.map((s) => str(s, TAG.Modality)).sort(), ['CT', 'KO', 'OT', 'SEG', 'SR']);
    // Each order its own DiagnosticReport, the second one saying whose analysis it shares.
    const r1 = first.outputs['write-fhir'];
    const r2 = second.outputs['write-fhir'];
    assert.ok(r1 && 'diagnosticReportId' in r1 && r2 && 'diagnosticReportId' in r2);
    assert.notEqual(r2.diagnosticReportId, r1.diagnosticReportId);
    const report = (await (await fetch(`${fhir.url}/DiagnosticReport/${r2.diagnosticReportId}`)).json()) as {
      presentedForm?: { contentType: string; data: string }[];
      basedOn?: { reference: string }[];
    };
    const html = Buffer.from(report.presentedForm?.find((f) => f.contentType.startsWith('text/html'))?.data ?? '', 'base64').toString();
    assert.match(html, /Analysis shared with order PLC-R1 \(accession ACC-R1\)/);
    // Each order one ORU, with its own placer number; the second carries the NTE naming the first.
    assert.equal(orusFor('PLC-R1').length, 1);
    const oru2 = orusFor('PLC-R2');
    assert.equal(oru2.length, 1);
    assert.match(oru2[0]?.toString() ?? '', /\rNTE\|1\|L\|Analysis shared with order PLC-R1/);
    assert.doesNotMatch(orusFor('PLC-R1')[0]?.toString() ?? '', /\rNTE\|/);
  });

  it('runs the models again for a changed series, for other model versions and with reuse switched off', async () => {
    const p = generateChestCt({ seed: 612, kind: 'covid', size: [128, 128, 52], spacing: [2.6, 2.6, 5] });
    const ct = writeCtSeries(p.volume, { seed: 612, accessionNumber: 'ACC-R3', patientId: 'MRN000123', seriesDescription: 'synthetic covid' });
    const files = ct.files.map((f) => f.bytes);
    // First without the last slice; then the slice arrives late (the series' content changes).
    await orthanc.client().store(files.slice(0, -1));
    const [a] = await runOrders('ACC-R3', ['PLC-R3a']);
    await orthanc.client().store(files.slice(-1));
    const [b] = await runOrders('ACC-R3', ['PLC-R3b']);
    assert.ok(a && b);
    assert.ok(ran(a) && ran(b), 'a changed series is analysed again');
    assert.equal(b.outputs.analyze?.reusedFrom, undefined);
    assert.equal(b.outputs.retrieve?.slices, (a.outputs.retrieve?.slices ?? 0) + 1);
    // ... into a SEG of its own (result UIDs follow the series content), which the PACS keeps beside the first.
    const segA = a.outputs['write-seg'];
    const segB = b.outputs['write-seg'];
    assert.ok(segA && 'seriesInstanceUid' in segA && segB && 'seriesInstanceUid' in segB);
    assert.notEqual(segB.seriesInstanceUid, segA.seriesInstanceUid);
    assert.equal((await orthanc.client().searchSeries(ct.studyInstanceUid, { Modality: 'SEG' })).length, 2);

    // The same series under a new lesion-model version (the same weights, renamed version): analysed again.
    const manifest = JSON.parse(await readFile('models/manifest.json', 'utf8')) as { models: { name: string; version: string; file?: string }[] };
    for (const m of manifest.models) if (m.file) await symlink(resolve('models', m.file), join(tmp, m.file));
    const lesion = manifest.models.find((m) => m.name === 'lesion-unetpp');
    assert.ok(lesion);
    lesion.version = `${lesion.version}-reuse-test`;
    await writeFile(join(tmp, 'manifest.json'), JSON.stringify(manifest));
    const [c] = await runOrders('ACC-R3', ['PLC-R3c'], { CTGATE_MODELS_MANIFEST: join(tmp, 'manifest.json') });
    assert.ok(c && ran(c), 'new model versions run the models');
    assert.ok(c.outputs.analyze?.models.some((m) => m.endsWith('-reuse-test')));
    // ... and the original versions again share b's analysis; switched off, they run the models.
    const [d] = await runOrders('ACC-R3', ['PLC-R3d']);
    assert.equal(d?.outputs.analyze?.reusedFrom?.jobId, b.jobId);
    const [e] = await runOrders('ACC-R3', ['PLC-R3e'], { CTGATE_ANALYSIS_REUSE: 'false' });
    assert.ok(e && ran(e), 'CTGATE_ANALYSIS_REUSE=false runs the models');
  });

  it('a burst of orders for one study runs the models once; the others wait for it and share', async () => {
    await uploadStudy(orthanc, { seed: 613, kind: 'covid', accession: 'ACC-R4' });
    const placers = ['PLC-R4a', 'PLC-R4b', 'PLC-R4c', 'PLC-R4d'];
    const states = await runOrders('ACC-R4', placers, { CTGATE_WORKER_CONCURRENCY: '4' });
    const analysed = states.filter(ran);
    assert.equal(analysed.length, 1, JSON.stringify(states.map((s) => s.timingsMs)));
    const source = analysed[0] as JobState;
    for (const s of states.filter((x) => x !== source)) assert.equal(s.outputs.analyze?.reusedFrom?.jobId, source.jobId);
    // They ran at once (concurrency 4), so some waited for the claim rather than found a finished analysis.
    assert.ok(
      states.some((s) => s.waitingFor?.jobId === source.jobId),
      JSON.stringify(states.map((s) => s.waitingFor)),
    );
    for (const p of placers) assert.equal(orusFor(p).length, 1, p);
  });
});
