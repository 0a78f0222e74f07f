/**
 * One result set: the same result context through the worker's writers (write-seg into a capturing series store,
 * write-fhir's bundle from the JSON checkpoint write-seg leaves, send-oru to an in-process MLLP peer) and through
 * `ctgate analyze`'s files gives the same DICOM objects, the same FHIR bundle and the same ORU^R01.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import dcmjs from 'dcmjs';
import type { Bundle, FhirResource, ImagingStudy, Observation } from 'fhir/r4.js';
import { keyImageFileName, writeResultFiles } from '../../src/cli/analyze-results.js';
import { type Config, loadConfig } from '../../src/config/index.js';
import { CTGATE_VERSION } from '../../src/config/version.js';
import { encodeFrame, MllpDecoder } from '../../src/hl7/mllp-framing.js';
import type { StageOutputs } from '../../src/jobs/job-state.js';
import { fhirStageBundle, oruWriter, segStageOutput, seriesOfSegStage, storeDicomResults } from '../../src/jobs/writers.js';
import { silentLogger } from '../../src/observability/log.js';
import type { ResultContext } from '../../src/results/context.js';
import { loadFhirMappings } from '../../src/results/fhir/mappings.js';
import { SECONDARY_CAPTURE_IMAGE_STORAGE } from '../../src/results/key-image-sc/encode.js';
import { KEY_OBJECT_SELECTION_STORAGE } from '../../src/results/kos/encode.js';
import { dicomResults, resultSeries, resultSet } from '../../src/results/result-set.js';
import { SEGMENTATION_STORAGE } from '../../src/results/seg/encode.js';
import type { SeriesToStore } from '../../src/results/seg/store.js';
import { COMPREHENSIVE_3D_SR_STORAGE } from '../../src/results/sr/encode.js';
import { fhirProblems } from '../helpers/fhir-validate.js';
import { syntheticResult } from '../helpers/result-context.js';

type Dataset = Record<string, unknown>;

function dataset(bytes: Uint8Array): Dataset {
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  return dcmjs.data.DicomMetaDictionary.naturalizeDataset(dcmjs.data.DicomMessage.readFile(buffer).dict) as Dataset;
}

/** Every ReferencedSOPInstanceUID anywhere in the dataset (per-frame references, evidence, content items). */
function referencedSops(v: unknown, out = new Set<string>()): Set<string> {
  if (Array.isArray(v)) for (const x of v) referencedSops(x, out);
  else if (v && typeof v === 'object' && !ArrayBuffer.isView(v) && !(v instanceof ArrayBuffer)) {
    for (const [k, x] of Object.entries(v)) {
      if (k === 'ReferencedSOPInstanceUID' && typeof x === 'string') out.add(x);
      else referencedSops(x, out);
    }
  }
  return out;
}

const list = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : v === undefined ? [] : [String(v)]);

/** What must agree between the two paths for one DICOM object. */
function summary(bytes: Uint8Array) {
  const ds = dataset(bytes);
  return {
    sopClassUid: ds.SOPClassUID,
    modality: ds.Modality,
    studyInstanceUid: ds.StudyInstanceUID,
    seriesInstanceUid: ds.SeriesInstanceUID,
    sopInstanceUid: ds.SOPInstanceUID,
    softwareVersions: list(ds.SoftwareVersions),
    referenced: [...referencedSops(ds)].sort(),
  };
}
type Summary = ReturnType<typeof summary>;

/** A PACS stand-in for write-seg: keeps what it is given, in order. */
function capturingStore() {
  const stored: { what: string; series: SeriesToStore }[] = [];
  const store = async (series: SeriesToStore, what: string) => {
    stored.push({ what, series });
    return {
      studyInstanceUid: series.studyInstanceUid,
      seriesInstanceUid: series.seriesInstanceUid,
      instances: series.instances.map((i) => ({ sopInstanceUid: i.sopInstanceUid, outcome: 'stored' as const })),
    };
  };
  return { store, stored };
}

/** An EMR stand-in on MLLP: keeps each ORU and answers AA. */
async function mllpPeer(): Promise<{ port: number; received: string[]; close: () => Promise<void> }> {
  const received: string[] = [];
  const server = net.createServer((socket) => {
    const decoder = new MllpDecoder(1 << 22);
    socket.on('data', (chunk) => {
      for (const ev of decoder.push(chunk)) {
        if (ev.type !== 'message') continue;
        const text = ev.data.toString('utf8');
        received.push(text);
        const controlId = text.split('\r')[0]?.split('|')[9] ?? '';
        socket.write(encodeFrame(`MSH|^~\\&|EMR|HOSP|CTGATE|CTGATE|20261127100000||ACK^R01^ACK|ACK-${controlId}|P|2.5.1\rMSA|AA|${controlId}`));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  return { port, received, close: () => new Promise((r) => server.close(() => r())) };
}

interface Paths {
  /** The worker: the objects write-seg stored, by series in store order; the bundle write-fhir sends; the ORU sent. */
  worker: { stored: { what: string; series: SeriesToStore }[]; segOut: NonNullable<StageOutputs['write-seg']>; bundle: Bundle; oru: string };
  /** `ctgate analyze`: the files it wrote. */
  analyze: { files: string[]; dcm: Map<string, Uint8Array>; bundle: Bundle; oru: string };
}

let root = '';
let config: Config;
let peer: Awaited<ReturnType<typeof mllpPeer>>;

async function bothPaths(ctx: ResultContext, name: string): Promise<Paths> {
  const { store, stored } = capturingStore();
  const segOut = await storeDicomResults(store)(ctx);
  // write-fhir reads write-seg's output from the job's checkpoint (JSON in Redis).
  const checkpoint = JSON.parse(JSON.stringify(segOut)) as StageOutputs['write-seg'];
  const bundle = fhirStageBundle(ctx, loadFhirMappings(config.resultMappingsFile), checkpoint);
  const before = peer.received.length;
  const sent = await (oruWriter(config, silentLogger) as NonNullable<ReturnType<typeof oruWriter>>)(ctx, undefined);
  assert.ok('ackCode' in sent && sent.ackCode === 'AA');
  const oru = peer.received.slice(before).join('');

  const out = await mkdtemp(join(root, `${name}-`));
  const written = await writeResultFiles(ctx, config, out);
  const dcm = new Map<string, Uint8Array>();
  for (const f of written.files.filter((x) => x.endsWith('.dcm'))) dcm.set(f, new Uint8Array(await readFile(join(out, f))));
  return {
    worker: { stored, segOut, bundle, oru },
    analyze: {
      files: written.files,
      dcm,
      bundle: JSON.parse(await readFile(join(out, 'bundle.json'), 'utf8')) as Bundle,
      oru: (await readFile(join(out, 'oru.hl7'), 'utf8')).trimEnd().replace(/\n/g, '\r'),
    },
  };
}

/** Analyze's file of each object the worker stored, in the worker's order. */
function fileNames(stored: Paths['worker']['stored'], ctx: ResultContext): string[] {
  const names: Record<string, string> = { SEG: 'seg.dcm', KOS: 'key-objects.dcm', SR: 'report-sr.dcm' };
  return stored.flatMap(({ what, series }) =>
    what === 'key-image SC'
      ? series.instances.map((_, i) => keyImageFileName(i + 1, ctx.keyImages[i]?.sliceIndex ?? -1, 'dcm'))
      : [names[what] ?? `unknown ${what}`],
  );
}

const resources = (b: Bundle) => (b.entry ?? []).map((e) => e.resource as FhirResource);
const imagingStudy = (b: Bundle) => resources(b).find((r): r is ImagingStudy => r.resourceType === 'ImagingStudy') as ImagingStudy;
const observationCodes = (b: Bundle) =>
  resources(b)
    .filter((r): r is Observation => r.resourceType === 'Observation')
    .map((o) => o.code.coding?.map((c) => `${c.system}|${c.code}`).join(','));

describe('one result set: the worker and ctgate analyze hand out the same objects', () => {
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ctgate-result-set-'));
    peer = await mllpPeer();
    config = loadConfig({
      CTGATE_ORU_HOST: '127.0.0.1',
      CTGATE_ORU_PORT: String(peer.port),
      CTGATE_ORU_RETRIES: '0',
      CTGATE_ORU_RECEIVING_APPLICATION: 'EMR',
      CTGATE_ORU_RECEIVING_FACILITY: 'HOSP',
    });
  });
  after(async () => {
    await peer.close();
    await rm(root, { recursive: true, force: true });
  });

  it('with a lesion: SEG, key images, KOS and SR, byte for byte; the same bundle and ORU', async () => {
    const ctx = syntheticResult({ seed: 7, kind: 'covid' }).context;
    const { worker, analyze } = await bothPaths(ctx, 'covid');

    assert.deepEqual(
      worker.stored.map((s) => s.what),
      ['SEG', 'key-image SC', 'KOS', 'SR'],
    );
    const names = fileNames(worker.stored, ctx);
    assert.deepEqual([...analyze.dcm.keys()], names, 'analyze writes every object the worker stores, in the same order');
    assert.deepEqual(analyze.files, [...names, 'bundle.json', 'oru.hl7']);
    const workerObjects = worker.stored.flatMap((s) => s.series.instances.map((i) => i.bytes));
    const summaries: Summary[] = [];
    names.forEach((name, i) => {
      const w = workerObjects[i] as Uint8Array;
      const a = analyze.dcm.get(name) as Uint8Array;
      const sw = summary(w);
      assert.deepEqual(summary(a), sw, name);
      assert.ok(Buffer.from(a).equals(Buffer.from(w)), `${name}: the same bytes`);
      summaries.push(sw);
    });

    // What the objects are and what they point at.
    const [seg, ...rest] = summaries as [Summary, ...Summary[]];
    const sr = rest.at(-1) as Summary;
    const kos = rest.at(-2) as Summary;
    const keyImages = rest.slice(0, -2);
    assert.equal(seg.sopClassUid, SEGMENTATION_STORAGE);
    assert.ok(keyImages.length > 0 && keyImages.every((k) => k.sopClassUid === SECONDARY_CAPTURE_IMAGE_STORAGE && k.modality === 'OT'));
    assert.equal(kos.sopClassUid, KEY_OBJECT_SELECTION_STORAGE);
    assert.equal(sr.sopClassUid, COMPREHENSIVE_3D_SR_STORAGE);
    for (const s of summaries) {
      assert.equal(s.studyInstanceUid, ctx.study.studyInstanceUid, 'in the CT study');
      assert.equal(s.softwareVersions[0], `ctgate ${CTGATE_VERSION}`, `${s.modality}: ctgate's version first`);
      assert.ok(s.softwareVersions.includes(`${ctx.analysis.models[1]?.name} ${ctx.analysis.models[1]?.version}`), `${s.modality}: the lesion model`);
    }
    assert.ok(sr.referenced.includes(seg.sopInstanceUid as string), 'the SR points at the SEG');
    for (const k of keyImages) assert.ok(kos.referenced.includes(k.sopInstanceUid as string), 'the KOS flags the key images');
    for (const k of ctx.keyImages) assert.ok(kos.referenced.includes(k.sopInstanceUid), 'and their CT slices');

    // The same bundle: its ImagingStudy lists CT, SEG, key images, KOS and SR with the objects' UIDs.
    assert.deepEqual(analyze.bundle, worker.bundle);
    const is = imagingStudy(worker.bundle);
    assert.deepEqual(
      is.series?.map((s) => [s.modality.code, s.uid, s.numberOfInstances]),
      [
        ['CT', ctx.series.seriesInstanceUid, ctx.series.slices.length],
        ['SEG', seg.seriesInstanceUid, 1],
        ['OT', keyImages[0]?.seriesInstanceUid, keyImages.length],
        ['KO', kos.seriesInstanceUid, 1],
        ['SR', sr.seriesInstanceUid, 1],
      ],
    );
    assert.equal(is.numberOfSeries, 5);
    assert.deepEqual(observationCodes(analyze.bundle), observationCodes(worker.bundle));
    assert.ok(observationCodes(worker.bundle).length >= 3);
    assert.deepEqual([...fhirProblems(worker.bundle), ...resources(worker.bundle).flatMap((r) => fhirProblems(r))], []);

    assert.equal(analyze.oru, worker.oru);
    assert.match(worker.oru, /^MSH\|\^~\\&\|CTGATE\|CTGATE\|EMR\|HOSP\|.*ORU\^R01/);
  });

  it('without a lesion: only the SR (saying so), in both; the ImagingStudy lists CT and SR', async () => {
    const ctx = syntheticResult({ seed: 8, kind: 'healthy' }).context;
    const { worker, analyze } = await bothPaths(ctx, 'healthy');
    assert.deepEqual(
      worker.stored.map((s) => s.what),
      ['SR'],
    );
    assert.ok('skipped' in worker.segOut);
    assert.deepEqual(analyze.files, ['report-sr.dcm', 'bundle.json', 'oru.hl7']);
    const w = worker.stored[0]?.series.instances[0]?.bytes as Uint8Array;
    assert.ok(Buffer.from(analyze.dcm.get('report-sr.dcm') as Uint8Array).equals(Buffer.from(w)));
    assert.equal(summary(w).softwareVersions[0], `ctgate ${CTGATE_VERSION}`);
    assert.deepEqual(analyze.bundle, worker.bundle);
    assert.deepEqual(
      imagingStudy(worker.bundle).series?.map((s) => [s.modality.code, s.uid]),
      [
        ['CT', ctx.series.seriesInstanceUid],
        ['SR', summary(w).seriesInstanceUid],
      ],
    );
    assert.equal(analyze.oru, worker.oru);
  });

  it("write-seg's checkpoint names exactly the result set's series (write-fhir lists them from it)", () => {
    for (const kind of ['covid', 'healthy'] as const) {
      const ctx = syntheticResult({ seed: 9, kind }).context;
      const d = dicomResults(ctx);
      assert.deepEqual(seriesOfSegStage(segStageOutput(d)), resultSeries(d), kind);
      assert.deepEqual(
        resultSet(ctx, { fhirMappings: loadFhirMappings(config.resultMappingsFile), oru: { sendingApplication: 'A', sendingFacility: 'F' } }).series,
        resultSeries(d),
      );
    }
    // A checkpoint of an older ctgate (before KOS and SR): the ImagingStudy lists what it names, nothing more.
    assert.deepEqual(seriesOfSegStage({ seriesInstanceUid: '2.25.1', sopInstanceUid: '2.25.2', frames: 3 }), {
      seg: { seriesInstanceUid: '2.25.1', sopInstanceUid: '2.25.2' },
    });
    assert.deepEqual(seriesOfSegStage({ skipped: 'no PACS writer configured' }), {});
  });
});
