import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import dcmjs from 'dcmjs';
import { ANALYZE_USAGE, type AnalyzeIo, analyzeCommand, EXIT_BAD_MANIFEST, EXIT_UNUSABLE_INPUT, type FindingsJson } from '../../src/cli/analyze.js';
import { CTGATE_VERSION } from '../../src/config/version.js';
import { readNifti } from '../../src/imaging/nifti.js';
import { PNG_SIGNATURE } from '../../src/inference/key-images.js';
import { dice, LEFT_LUNG, RIGHT_LUNG, segmentLungs } from '../../src/inference/lungs.js';
import { loadManifest } from '../../src/inference/manifest.js';
import { readSeg } from '../../src/results/seg/read.js';
import { writeCtSeries, writeSeriesToDir } from '../../src/synthetic/dicom-writer.js';
import { generateChestCt, maskVolumesMl, type PhantomKind, phantomGeometry } from '../../src/synthetic/phantom.js';
import { assertDciodvfyClean } from '../helpers/dciodvfy.js';
import { unlessPresent } from '../helpers/requires.js';
import { standInModelSet } from '../helpers/stand-in-models.js';

function capture(): AnalyzeIo & { stdout: () => string; stderr: () => string } {
  let out = '';
  let err = '';
  return { out: (t) => (out += t), err: (t) => (err += t), tty: false, stdout: () => out, stderr: () => err };
}

/** A small chest phantom (72 × 72 × 28 at 2.8 × 2.8 × 5 mm: ≈ 750 mL of lung, 8 lesion tiles) as DICOM files. */
async function writeStudy(
  dir: string,
  kind: PhantomKind,
  seed: number,
  size: [number, number, number] = [72, 72, 28],
  spacing: [number, number, number] = [2.8, 2.8, 5],
  patient: { patientId?: string; patientName?: string; patientBirthDate?: string } = {},
) {
  const p = generateChestCt({ seed, kind, size, spacing });
  await writeSeriesToDir(dir, writeCtSeries(p.volume, { seed, seriesDescription: `synthetic ${kind}`, ...patient }));
  return p;
}

/**
 * seg.dcm (dciodvfy-clean, frames on the study's slices), the key images as secondary captures (one .dcm beside each
 * key PNG, dciodvfy-clean), key-objects.dcm (the key object selection, dciodvfy-clean), report-sr.dcm
 * (dciodvfy-clean, with or without a lesion), bundle.json (its ImagingStudy listing the CT and each of those series)
 * and oru.hl7, as the service would send them: every object carries SoftwareVersions (ctgate's, then the models').
 */
async function assertResultFiles(out: string, f: FindingsJson, withSeg: boolean) {
  const keyDcm = f.keySlices.map((k) => k.image.replace(/\.png$/, '.dcm'));
  assert.deepEqual(
    f.results,
    withSeg ? ['seg.dcm', ...keyDcm, 'key-objects.dcm', 'report-sr.dcm', 'bundle.json', 'oru.hl7'] : ['report-sr.dcm', 'bundle.json', 'oru.hl7'],
  );
  if (withSeg) assert.ok(keyDcm.length > 0, 'key images with a lesion');
  for (const file of withSeg ? ['seg.dcm', ...keyDcm, 'key-objects.dcm', 'report-sr.dcm'] : ['report-sr.dcm']) {
    assertDciodvfyClean(join(out, file));
  }
  if (withSeg) {
    const seg = readSeg(new Uint8Array(await readFile(join(out, 'seg.dcm'))));
    assert.ok(seg.frames.length > 0);
    const keyUids = new Set(f.keySlices.map((k) => k.sopInstanceUid));
    assert.ok(
      seg.frames.some((fr) => keyUids.has(fr.sourceSopInstanceUid ?? '')),
      'the key slices have SEG frames',
    );
  }
  // Every object names ctgate's version, then the models (SoftwareVersions), as the worker's do.
  const uids = new Map<string, { series: string; software: string[] }>();
  for (const file of withSeg ? ['seg.dcm', ...keyDcm, 'key-objects.dcm', 'report-sr.dcm'] : ['report-sr.dcm']) {
    const bytes = await readFile(join(out, file));
    const ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(
      dcmjs.data.DicomMessage.readFile(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer).dict,
    );
    const software = ([] as unknown[]).concat(ds.SoftwareVersions ?? []).map(String);
    assert.equal(software[0], `ctgate ${CTGATE_VERSION}`, `${file}: SoftwareVersions ${software.join(', ')}`);
    assert.deepEqual(
      software.slice(1),
      f.models.map((m) => m.replace('@', ' ')).filter((m) => software.includes(m)),
      `${file}: then its models`,
    );
    assert.ok(software.length >= 2, `${file}: at least one model`);
    uids.set(file, { series: String(ds.SeriesInstanceUID), software });
  }
  const bundle = JSON.parse(await readFile(join(out, 'bundle.json'), 'utf8')) as {
    resourceType: string;
    type: string;
    entry: { resource: { resourceType: string; conclusion?: string; series?: { uid: string; modality: { code: string }; numberOfInstances?: number }[] } }[];
  };
  assert.equal(bundle.type, 'transaction');
  const report = bundle.entry.find((e) => e.resource.resourceType === 'DiagnosticReport')?.resource;
  assert.match(report?.conclusion ?? '', /not for clinical use/i);
  // The ImagingStudy lists the CT and every result series written, as the worker's lists those it stored.
  const study = bundle.entry.find((e) => e.resource.resourceType === 'ImagingStudy')?.resource;
  const series = (file: string) => uids.get(file)?.series;
  assert.deepEqual(
    study?.series?.map((s) => [s.modality.code, s.uid, s.numberOfInstances]),
    [
      ['CT', f.series.seriesInstanceUid, f.series.slices],
      ...(withSeg
        ? [
            ['SEG', series('seg.dcm'), 1],
            ['OT', series(keyDcm[0] as string), keyDcm.length],
            ['KO', series('key-objects.dcm'), 1],
          ]
        : []),
      ['SR', series('report-sr.dcm'), 1],
    ],
  );
  const oru = await readFile(join(out, 'oru.hl7'), 'utf8');
  assert.match(oru, /^MSH\|\^~\\&\|.*ORU\^R01/);
  assert.match(oru, /\nOBR\|/);
}

async function readFindings(dir: string): Promise<FindingsJson> {
  return JSON.parse(await readFile(join(dir, 'findings.json'), 'utf8')) as FindingsJson;
}

function assertFindingsShape(f: FindingsJson) {
  assert.ok(['positive', 'negative', 'not-assessable'].includes(f.verdict));
  for (const k of [
    'probability',
    'lesionVolumeMl',
    'lungInvolvementPercent',
    'lesionCount',
    'bilateral',
    'peripheralShare',
    'keySlices',
    'models',
    'executionProvider',
    'timingsMs',
  ])
    assert.ok(k in f, `findings.json has ${k}`);
  assert.ok(Array.isArray(f.models) && f.models.every((m) => /^[^@]+@[^@]+$/.test(m)));
  assert.equal(typeof f.executionProvider, 'string');
  assert.equal(typeof f.timingsMs.total, 'number');
  if (f.verdict === 'not-assessable') {
    assert.equal(typeof f.reason, 'string');
    assert.equal(f.probability, null);
  } else {
    assert.ok(typeof f.probability === 'number' && f.probability >= 0 && f.probability <= 1);
    assert.equal(typeof f.lesionVolumeMl, 'number');
    for (const side of ['left', 'right', 'total'] as const) assert.equal(typeof f.lungInvolvementPercent?.[side], 'number');
    for (const s of ['resample', 'lungs', 'lesions', 'classify', 'findings']) assert.equal(typeof f.timingsMs[s], 'number', `timingsMs.${s}`);
  }
}

describe('ctgate analyze (stand-in ONNX models)', () => {
  let root = '';
  let manifest = '';
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ctgate-analyze-'));
    const models = join(root, 'models');
    await mkdir(models);
    manifest = join(models, 'manifest.json');
    await writeFile(manifest, JSON.stringify(await standInModelSet(models, { version: 'test', classifierThreshold: 0.2 })));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('analyses a study end to end: findings.json, key images, exit 0', async () => {
    const study = join(root, 'covid');
    const out = join(root, 'out-covid');
    await writeStudy(study, 'covid', 31);
    const io = capture();
    const rc = await analyzeCommand([study, '--out', out, '--manifest', manifest, '--threads', '1', '--providers', 'cpu'], io);
    assert.equal(rc, 0, io.stderr());
    const f = await readFindings(out);
    assertFindingsShape(f);
    assert.notEqual(f.verdict, 'not-assessable');
    assert.deepEqual(f.models, ['lung-threshold@test', 'identity@test', 'mean@test']);
    assert.equal(f.executionProvider, 'cpu');
    assert.equal(f.series.slices, 28);
    assert.match(io.stderr(), /segmenting the lungs/);
    assert.match(io.stderr(), /lesion model: tile \d+\/\d+/);
    assert.match(io.stdout(), /wrote .*findings\.json/);
    // The identity "model" marks everything dense as lesion: there are key images, and they are PNGs.
    assert.ok(f.keySlices.length > 0);
    for (const k of f.keySlices) {
      assert.ok(k.sliceIndex >= 0 && k.sliceIndex < 28);
      assert.match(k.sopInstanceUid, /^2\.25\./);
      const png = await readFile(join(out, k.image));
      assert.deepEqual(new Uint8Array(png.subarray(0, 8)), PNG_SIGNATURE);
    }
    // What the service would send: every object, with SoftwareVersions, each series in the bundle's ImagingStudy.
    await assertResultFiles(out, f, true);
  });

  it('says not-assessable (exit 0) for a study of 5 slices and for one with no lungs', async () => {
    const few = join(root, 'few');
    await writeStudy(few, 'covid', 32, [64, 64, 5]);
    const io = capture();
    assert.equal(await analyzeCommand([few, '--out', join(root, 'out-few'), '--manifest', manifest, '--providers', 'cpu'], io), 0, io.stderr());
    const f = await readFindings(join(root, 'out-few'));
    assertFindingsShape(f);
    assert.equal(f.verdict, 'not-assessable');
    assert.match(f.reason as string, /5 slices/);
    assert.match(io.stdout(), /not assessable/);
    await assertResultFiles(join(root, 'out-few'), f, false);

    const soft = join(root, 'soft');
    const g = phantomGeometry([48, 48, 24], [6, 6, 6]);
    await writeSeriesToDir(soft, writeCtSeries({ geometry: g, data: new Int16Array(48 * 48 * 24).fill(40) }, { seed: 33 }));
    assert.equal(await analyzeCommand([soft, '--out', join(root, 'out-soft'), '--manifest', manifest, '--providers', 'cpu'], capture()), 0);
    const s = await readFindings(join(root, 'out-soft'));
    assert.equal(s.verdict, 'not-assessable');
    assert.match(s.reason as string, /no lungs/);
  });

  it('picks the series with the most slices and says so', async () => {
    const dir = join(root, 'two-series');
    await writeStudy(dir, 'healthy', 34, [64, 64, 5]);
    const p = generateChestCt({ seed: 35, kind: 'healthy', size: [64, 64, 12], spacing: [2.8, 2.8, 5] });
    const other = writeCtSeries(p.volume, { seed: 35 });
    await writeSeriesToDir(join(dir, 'b'), other);
    await writeFile(join(dir, 'README.txt'), 'not DICOM');
    const io = capture();
    assert.equal(await analyzeCommand([dir, '--out', join(root, 'out-two'), '--manifest', manifest, '--providers', 'cpu'], io), 0, io.stderr());
    assert.match(io.stderr(), /2 series found; analysing \S+ .*with the most slices \(12\)/);
    assert.match(io.stderr(), /skipped 1 file: not DICOM/);
    const f = await readFindings(join(root, 'out-two'));
    assert.equal(f.series.seriesInstanceUid, other.seriesInstanceUid);
  });

  it('refuses unusable input with exit 2 and a clear message', async () => {
    const empty = join(root, 'empty');
    await mkdir(empty);
    let io = capture();
    assert.equal(await analyzeCommand([empty, '--out', join(root, 'x'), '--manifest', manifest], io), EXIT_UNUSABLE_INPUT);
    assert.match(io.stderr(), /unusable input: no files found/);

    const text = join(root, 'text');
    await mkdir(text);
    await writeFile(join(text, 'a.dcm'), 'hello');
    io = capture();
    assert.equal(await analyzeCommand([text, '--out', join(root, 'x'), '--manifest', manifest], io), EXIT_UNUSABLE_INPUT);
    assert.match(io.stderr(), /no CT image slices among 1 file/);

    // A series whose files say MPEG2 (a transfer syntax ctgate does not read) is refused by name.
    const jpeg = join(root, 'jpeg');
    const p = generateChestCt({ seed: 36, kind: 'healthy', size: [32, 32, 12], spacing: [5, 5, 6] });
    const series = writeCtSeries(p.volume, { seed: 36 });
    await mkdir(jpeg);
    for (const f of series.files) {
      const b = f.bytes;
      const dict = dcmjs.data.DicomMessage.readFile(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer);
      dict.meta['00020010'] = { vr: 'UI', Value: ['1.2.840.10008.1.2.4.100'] };
      await writeFile(join(jpeg, `${f.instanceNumber}.dcm`), new Uint8Array(dict.write()));
    }
    io = capture();
    assert.equal(await analyzeCommand([jpeg, '--out', join(root, 'x'), '--manifest', manifest], io), EXIT_UNUSABLE_INPUT);
    assert.match(io.stderr(), /1\.2\.840\.10008\.1\.2\.4\.100 \(unknown transfer syntax\), which ctgate does not read/);

    // Slices that do not make one volume (a missing slice).
    const gap = join(root, 'gap');
    await mkdir(gap);
    const s2 = writeCtSeries(p.volume, { seed: 37 });
    for (const f of s2.files.filter((x) => x.instanceNumber !== 6)) await writeFile(join(gap, `${f.instanceNumber}.dcm`), f.bytes);
    io = capture();
    assert.equal(await analyzeCommand([gap, '--out', join(root, 'x'), '--manifest', manifest], io), EXIT_UNUSABLE_INPUT);
    assert.match(io.stderr(), /does not form one volume: missing slices/);
  });

  it('exits 78 for a bad manifest and 1 for bad usage', async () => {
    const bad = join(root, 'bad-manifest.json');
    await writeFile(bad, JSON.stringify({ schemaVersion: 1, models: [] }));
    let io = capture();
    assert.equal(await analyzeCommand([root, '--out', join(root, 'x'), '--manifest', bad], io), EXIT_BAD_MANIFEST);
    assert.match(io.stderr(), /invalid model manifest/);
    io = capture();
    assert.equal(await analyzeCommand([root, '--out', join(root, 'x'), '--manifest', join(root, 'nope.json')], io), EXIT_BAD_MANIFEST);
    io = capture();
    assert.equal(await analyzeCommand([root], io), 1);
    assert.ok(io.stderr().includes(ANALYZE_USAGE));
    assert.equal(await analyzeCommand([root, '--out', 'x', '--threads', 'many'], capture()), 1);
  });
});

const haveModels = existsSync('models/manifest.json');

/** The patient of fixtures/hl7/orm-chest-ct.hl7 (PID-3, PID-5, PID-7) as DICOM writes it. */
const FIXTURE_PATIENT = { patientId: 'MRN12345', patientName: 'TEST^PATIENT^A', patientBirthDate: '19800102' };

describe('ctgate analyze --order: the order must be for the patient of the images', () => {
  it('refuses (exit 2) an order for another patient, naming the fields and no value, before running any model', async () => {
    const root = await mkdtemp(join(tmpdir(), 'ctgate-analyze-identity-'));
    try {
      const study = join(root, 'study');
      await writeStudy(study, 'healthy', 61, [48, 48, 12], [6, 6, 10], { ...FIXTURE_PATIENT, patientBirthDate: '19800103' });
      const io = capture();
      const rc = await analyzeCommand([study, '--out', join(root, 'out'), '--order', 'fixtures/hl7/orm-chest-ct.hl7'], io);
      assert.equal(rc, 2, io.stderr());
      assert.match(io.stderr(), /not for the patient of these images: patient identity mismatch: PatientBirthDate differs from the order/);
      assert.doesNotMatch(io.stderr(), /1980/);
      assert.ok(!existsSync(join(root, 'out', 'findings.json')));
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('ctgate analyze with the trained models (models/)', { skip: unlessPresent(haveModels ? false : 'models/manifest.json not present') }, () => {
  let root = '';
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ctgate-analyze-real-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });
  // Held-out seeds (the training splits used seeds 1-3) at the training data's geometry (about 330 mm field of
  // view, 5 mm slices). The model card reports the synthetic test split's sensitivity/specificity; a fixed seed can
  // be a miss (0.1 missed seed 507, covid), which is why the seeds are fixed here and not drawn.
  for (const [kind, seed, expected] of [
    ['covid', 501, 'positive'],
    ['lobar-pneumonia', 504, 'negative'],
    ['healthy', 503, 'negative'],
  ] as const) {
    it(`calls a held-out synthetic ${kind} study ${expected}`, async () => {
      const study = join(root, kind);
      const out = join(root, `out-${kind}`);
      // The positive study is the fixture ORM's patient (the order is checked against it); the others get an order
      // made from their DICOM header.
      const p = await writeStudy(study, kind, seed, [128, 128, 52], [2.6, 2.6, 5], expected === 'positive' ? FIXTURE_PATIENT : {});
      const io = capture();
      const orderArgs = expected === 'positive' ? ['--order', 'fixtures/hl7/orm-chest-ct.hl7'] : [];
      const rc = await analyzeCommand([study, '--out', out, '--providers', 'cpu', ...orderArgs], io);
      assert.equal(rc, 0, io.stderr());
      const f = await readFindings(out);
      assertFindingsShape(f);
      if (expected === 'positive') assert.match(await readFile(join(out, 'oru.hl7'), 'utf8'), /\nOBR\|1\|PLC1001\^EPIC\|FIL2001\|[^\n]*\|ACC3001\|/);
      else assert.ok(f.warnings.some((w) => w.includes('no --order given')));
      assert.equal(f.verdict, expected, `p=${f.probability} at threshold ${f.threshold}`);
      assert.equal(f.threshold, (await loadManifest('models/manifest.json')).classifier.threshold, 'the manifest threshold is the one applied');
      const truth = maskVolumesMl(p.lesionMask, p.volume.geometry);
      const images = (await readdir(out)).filter((n) => n.endsWith('.png'));
      assert.equal(images.length, f.keySlices.length);
      if (expected === 'positive') {
        assert.ok((f.lesionVolumeMl ?? 0) > 0.3 * truth.total, `lesion ${f.lesionVolumeMl} mL vs truth ${truth.total} mL`);
        assert.ok(f.keySlices.length > 0);
      }
      await assertResultFiles(out, f, (f.lesionVolumeMl ?? 0) > 0);
      process.stdout.write(
        `# ${kind}: ${f.verdict} p=${f.probability?.toFixed(3)} lesion ${f.lesionVolumeMl} mL (truth ${truth.total} mL), ${f.lesionCount} region(s), models ${f.models.join(', ')}, ${f.timingsMs.total} ms\n`,
      );
    });
  }
});

// ---- TotalSegmentator's small example CT: classical lung mask against its reference segmentation ----

const TOTALSEG = '../shared/data/totalseg-ct-small';

describe('lung mask on a real CT (TotalSegmentator example)', { skip: unlessPresent(existsSync(TOTALSEG) ? false : `${TOTALSEG} not present`) }, () => {
  it('overlaps the reference lung lobes (labels 10–14); the lungs are tiny here, so the bound is loose', () => {
    const ct = readNifti(join(TOTALSEG, 'example_ct_sm.nii.gz'));
    const seg = readNifti(join(TOTALSEG, 'example_seg.nii.gz'));
    assert.deepEqual(ct.geometry.size, [122, 101, 30]);
    const ref = Uint8Array.from(seg.data, (l) => (l >= 10 && l <= 14 ? 1 : 0));
    const refLeft = Uint8Array.from(seg.data, (l) => (l === 10 || l === 11 ? 1 : 0));
    const refRight = Uint8Array.from(seg.data, (l) => (l >= 12 && l <= 14 ? 1 : 0));
    const r = segmentLungs({ geometry: ct.geometry, data: ct.data as Int16Array }, { minComponentMl: 5 });
    const d = dice(r.labels, ref);
    const dl = dice(
      Uint8Array.from(r.labels, (l) => (l === LEFT_LUNG ? 1 : 0)),
      refLeft,
    );
    const dr = dice(
      Uint8Array.from(r.labels, (l) => (l === RIGHT_LUNG ? 1 : 0)),
      refRight,
    );
    const refMl = (ref.reduce((s, x) => s + x, 0) * 27) / 1000;
    process.stdout.write(
      `# TotalSegmentator example: lung Dice ${d.toFixed(3)} (left ${dl.toFixed(3)}, right ${dr.toFixed(3)}); ours ${r.volumesMl.total} mL (L ${r.volumesMl.left}, R ${r.volumesMl.right}), reference ${refMl} mL; split ${r.split}\n`,
    );
    // Upper abdomen with lung bases: both bases are found and the bowel/stomach gas is not taken for lung (the
    // gas rule; test/unit/inference-lungs.test.ts checks it on both grids with the bowel labels).
    assert.ok(d > 0.85, `lung Dice ${d}`);
    assert.ok(dl > 0.85, `left lung Dice ${dl}`);
    assert.ok(dr > 0.9, `right lung Dice ${dr}`);
  });
});
