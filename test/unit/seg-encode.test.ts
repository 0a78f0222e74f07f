import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type ResultContext, sourceSeriesKey } from '../../src/results/context.js';
import { encodeSeg, NoSegError, SEG_SERIES_DESCRIPTION, SEGMENTATION_STORAGE, segUids } from '../../src/results/seg/encode.js';
import { readSeg } from '../../src/results/seg/read.js';
import { assertDciodvfyClean } from '../helpers/dciodvfy.js';
import { syntheticResult } from '../helpers/result-context.js';

interface PyFrame {
  segment: number;
  sop: string;
  position: number[];
  dimensionIndexValues: number[];
  pixels: string;
}
interface PySeg {
  sopClassUid: string;
  sopInstanceUid: string;
  studyInstanceUid: string;
  seriesInstanceUid: string;
  frameOfReferenceUid: string;
  transferSyntax: string;
  modality: string;
  segmentationType: string;
  patientId: string;
  patientName: string;
  accessionNumber: string;
  numberOfFrames: number;
  rows: number;
  columns: number;
  pixelArrayShape: number[];
  orientation: number[];
  pixelSpacing: number[];
  softwareVersions: string[];
  segments: {
    number: number;
    label: string;
    algorithmType: string;
    algorithmName: string;
    category: { value: string; scheme: string };
    type: { value: string; scheme: string };
  }[];
  referencedSeries: { series: string; instances: string[] }[];
  dimensionPointers: string[];
  frames: PyFrame[];
}

let dir = '';
let count = 0;

/** Writes the SEG to a temp file, fails on any dciodvfy "Error" line, and returns what pydicom reads from it. */
function validate(bytes: Uint8Array): PySeg {
  const path = join(dir, `seg-${++count}.dcm`);
  writeFileSync(path, bytes);
  assertDciodvfyClean(path);
  const json = execFileSync('/usr/bin/python3', ['test/helpers/seg-check.py', path], { encoding: 'utf8', maxBuffer: 1 << 28 });
  return (JSON.parse(json) as Record<string, PySeg>)[path] as PySeg;
}

/** Every frame pydicom decodes equals the lesion mask on the slice its source reference names, and vice versa. */
function assertFramesMatchMask(py: PySeg, ctx: ResultContext): void {
  const mask = ctx.analysis.lesionMask as Uint8Array;
  const [nx, ny, nz] = ctx.series.geometry.size;
  const len = nx * ny;
  const zOf = new Map(ctx.series.slices.map((s, z) => [s.sopInstanceUid, z]));
  const nonEmpty = new Set<number>();
  for (let z = 0; z < nz; z++) if (mask.subarray(z * len, (z + 1) * len).some((v) => v !== 0)) nonEmpty.add(z);
  assert.equal(py.numberOfFrames, nonEmpty.size, 'one frame per non-empty slice');
  assert.deepEqual(py.pixelArrayShape, [nonEmpty.size, ny, nx]);
  const seen = new Set<number>();
  let voxels = 0;
  for (const f of py.frames) {
    const z = zOf.get(f.sop);
    assert.ok(z !== undefined, `frame references a CT instance of the series (${f.sop})`);
    assert.ok(!seen.has(z), `slice ${z} has one frame`);
    seen.add(z);
    const expected = ctx.series.slices[z]?.position as number[];
    f.position.forEach((v, i) => {
      assert.ok(Math.abs(v - (expected[i] as number)) < 1e-6, `frame of slice ${z}: position ${f.position} ≠ ${expected}`);
    });
    const px = Buffer.from(f.pixels, 'base64');
    assert.equal(px.length, len);
    const want = mask.subarray(z * len, (z + 1) * len);
    let diff = 0;
    for (let p = 0; p < len; p++) if ((px[p] ? 1 : 0) !== (want[p] ? 1 : 0)) diff++;
    assert.equal(diff, 0, `slice ${z}: ${diff} pixels differ from the mask`);
    voxels += px.reduce((n, v) => n + (v ? 1 : 0), 0);
  }
  assert.deepEqual(
    [...seen].sort((a, b) => a - b),
    [...nonEmpty],
  );
  assert.equal(
    voxels,
    mask.reduce((n, v) => n + (v ? 1 : 0), 0),
  );
}

describe('DICOM SEG encoder', () => {
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'ctgate-seg-'));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const { context } = syntheticResult({ seed: 7, kind: 'covid' });

  it('writes a SEG that dciodvfy accepts and pydicom reads as the lesion mask, slice for slice', () => {
    const voxels = (context.analysis.lesionMask as Uint8Array).reduce((n, v) => n + v, 0);
    assert.ok(voxels >= 100, `the synthetic covid mask is not trivial (${voxels} voxels)`);
    const seg = encodeSeg(context);
    const py = validate(seg.bytes);
    assertFramesMatchMask(py, context);
    assert.equal(seg.frames, py.numberOfFrames);
    assert.deepEqual(seg.segments, [{ number: 1, label: 'Lesion', frames: seg.frames, voxels }]);

    assert.equal(py.sopClassUid, SEGMENTATION_STORAGE);
    assert.equal(py.transferSyntax, '1.2.840.10008.1.2.1');
    assert.equal(py.modality, 'SEG');
    assert.equal(py.segmentationType, 'BINARY');
    assert.equal(py.studyInstanceUid, context.study.studyInstanceUid);
    assert.equal(py.frameOfReferenceUid, context.series.frameOfReferenceUid);
    assert.equal(py.patientId, context.study.patientId);
    assert.equal(py.patientName, context.study.patientName);
    assert.equal(py.accessionNumber, context.study.accessionNumber);
    assert.notEqual(py.seriesInstanceUid, context.series.seriesInstanceUid);
    assert.equal(py.seriesInstanceUid, seg.seriesInstanceUid);
    assert.equal(py.sopInstanceUid, seg.sopInstanceUid);
    assert.deepEqual(py.referencedSeries, [{ series: context.series.seriesInstanceUid, instances: context.series.slices.map((s) => s.sopInstanceUid) }]);
    assert.deepEqual(py.orientation, context.series.slices[0]?.orientation);
    assert.deepEqual(py.pixelSpacing, context.series.slices[0]?.pixelSpacing);
    assert.deepEqual(py.segments, [
      {
        number: 1,
        label: 'Lesion',
        algorithmType: 'AUTOMATIC',
        algorithmName: 'lesion-unetpp@0.1.0',
        category: { value: '49755003', scheme: 'SCT', meaning: 'Morphologically Abnormal Structure' },
        type: { value: '52988006', scheme: 'SCT', meaning: 'Lesion' },
      },
    ]);
    assert.ok(py.softwareVersions.includes('lesion-unetpp 0.1.0'));
    // Dimension index: (segment, position rank) with the pointers the DimensionIndexSequence declares.
    assert.deepEqual(py.dimensionPointers, ['(0062, 000b)', '(0020, 0032)']);
    py.frames.forEach((f, i) => {
      assert.deepEqual(f.dimensionIndexValues, [1, i + 1]);
    });
    const zs = py.frames.map((f) => context.series.slices.findIndex((s) => s.sopInstanceUid === f.sop));
    assert.deepEqual(
      zs,
      [...zs].sort((a, b) => a - b),
      'frames in slice order',
    );
  });

  it('packs odd-sized frames (97 × 93) bit-continuously, as pydicom unpacks them', () => {
    const odd = syntheticResult({ seed: 11, kind: 'covid', size: [97, 93, 12] }).context;
    const seg = encodeSeg(odd);
    assert.ok(seg.frames >= 2, `several frames (${seg.frames}), so frames start mid-byte`);
    const py = validate(seg.bytes);
    assert.equal(py.rows, 93);
    assert.equal(py.columns, 97);
    assertFramesMatchMask(py, odd);
  });

  it('reads back with ctgate’s own reader', () => {
    const seg = encodeSeg(context);
    const r = readSeg(seg.bytes);
    assert.equal(r.sopInstanceUid, seg.sopInstanceUid);
    assert.equal(r.seriesDescription, SEG_SERIES_DESCRIPTION);
    assert.equal(r.frames.length, seg.frames);
    const [nx, ny] = context.series.geometry.size;
    const mask = context.analysis.lesionMask as Uint8Array;
    for (const f of r.frames) {
      const z = context.series.slices.findIndex((s) => s.sopInstanceUid === f.sourceSopInstanceUid);
      assert.ok(z >= 0);
      assert.deepEqual(f.pixels, mask.slice(z * nx * ny, (z + 1) * nx * ny));
      assert.deepEqual(f.imagePosition, context.series.slices[z]?.position);
    }
  });

  it('is deterministic: the same context gives the same bytes and UIDs; another model version another series', () => {
    const a = encodeSeg(context);
    const b = encodeSeg(syntheticResult({ seed: 7, kind: 'covid' }).context);
    assert.deepEqual(a.bytes, b.bytes);
    assert.equal(a.seriesInstanceUid, b.seriesInstanceUid);
    assert.equal(a.sopInstanceUid, b.sopInstanceUid);
    const v2: ResultContext = {
      ...context,
      analysis: { ...context.analysis, models: context.analysis.models.map((m) => (m.name === 'lesion-unetpp' ? { ...m, version: '0.2.0' } : m)) },
    };
    const c = encodeSeg(v2);
    assert.notEqual(c.seriesInstanceUid, a.seriesInstanceUid);
    assert.notEqual(c.sopInstanceUid, a.sopInstanceUid);
    assert.deepEqual(segUids(sourceSeriesKey(context.series), { name: 'lesion-unetpp', version: '0.2.0' }).seriesInstanceUid, c.seriesInstanceUid);
    assert.match(a.seriesInstanceUid, /^2\.25\.\d+$/);
    assert.ok(a.seriesInstanceUid.length <= 64 && a.sopInstanceUid.length <= 64);
    // Other models' versions (the classifier's) do not change the SEG's identity.
    const cls: ResultContext = {
      ...context,
      analysis: { ...context.analysis, models: context.analysis.models.map((m) => (m.name === 'covid-resnet' ? { ...m, version: '9.9.9' } : m)) },
    };
    assert.equal(encodeSeg(cls).seriesInstanceUid, a.seriesInstanceUid);
  });

  it('dates the content from analysis.completedAt, not the clock', () => {
    const at = (completedAt: string, timeZone?: string) => {
      const r = readSeg(encodeSeg({ ...context, analysis: { ...context.analysis, completedAt } }, { timeZone }).bytes);
      return `${r.contentDate} ${r.contentTime}`;
    };
    assert.equal(at('2026-11-27T10:00:00.000Z'), '20261127 100000');
    assert.equal(at('2026-11-27T23:30:05+01:00'), '20261127 233005');
    assert.equal(at('2026-11-27T23:30:05Z', 'Europe/Berlin'), '20261128 003005');
  });

  it('keeps non-ASCII patient names (UTF-8, ISO_IR 192)', () => {
    const seg = encodeSeg({ ...context, study: { ...context.study, patientName: 'Müller^Jörg' } });
    assert.equal(validate(seg.bytes).patientName, 'Müller^Jörg');
  });

  it('makes no SEG without a lesion, and says why', () => {
    const healthy = syntheticResult({ seed: 3, kind: 'healthy' }).context;
    const empty: ResultContext = { ...healthy, analysis: { ...healthy.analysis, lesionMask: new Uint8Array(healthy.analysis.lesionMask?.length ?? 0) } };
    assert.throws(
      () => encodeSeg(empty),
      (e: unknown) => e instanceof NoSegError && e.reason === 'no-lesion' && /no lesion: no SEG/.test(e.message),
    );
    const na: ResultContext = { ...context, analysis: { ...context.analysis, verdict: 'not-assessable', reason: 'lung mask too small', lesionMask: null } };
    assert.throws(
      () => encodeSeg(na),
      (e: unknown) => e instanceof NoSegError && e.reason === 'not-assessable',
    );
  });

  it('refuses a mask that does not fit the series grid', () => {
    const bad: ResultContext = { ...context, analysis: { ...context.analysis, lesionMask: new Uint8Array(10).fill(1) } };
    assert.throws(() => encodeSeg(bad), /lesion mask has 10 voxels/);
  });
});
