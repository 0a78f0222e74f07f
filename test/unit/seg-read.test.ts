import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import dcmjs from 'dcmjs';
import { encodeSeg } from '../../src/results/seg/encode.js';
import { type ReadSeg, readSeg, SegReadError } from '../../src/results/seg/read.js';
import { syntheticResult } from '../helpers/result-context.js';

// Third-party SEG goldens (see its README); read in place, never copied into the project.
const DATA = join(process.cwd(), '..', 'shared', 'data');
const HD = join(DATA, 'highdicom-seg');
const DCMQI = join(DATA, 'dcmqi-ct-3slice');

function read(path: string): ReadSeg {
  assert.ok(existsSync(path), `test data present: ${path}`);
  return readSeg(readFileSync(path));
}

/** SOP Instance UID and position of a CT file (dcmjs). */
function ct(path: string): { sop: string; position: number[]; study: string } {
  const b = readFileSync(path);
  const ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dcmjs.data.DicomMessage.readFile(b.buffer.slice(b.byteOffset, b.byteOffset + b.length)).dict);
  return { sop: String(ds.SOPInstanceUID), position: (ds.ImagePositionPatient as unknown[]).map(Number), study: String(ds.StudyInstanceUID) };
}

// dcmjs warns about the implicit VR goldens' ambiguous VRs (it picks the right ones); keep test output clean.
dcmjs.log.setLevel('error');

const count = (px: Uint8Array, v?: number) => px.reduce((n, x) => n + (v === undefined ? (x ? 1 : 0) : x === v ? 1 : 0), 0);

/** ctgate's reader and pydicom agree on every frame: segment, source image, position and every pixel. */
function assertSameAsPydicom(path: string, r: ReadSeg): void {
  const json = execFileSync('/usr/bin/python3', ['test/helpers/seg-check.py', path], { encoding: 'utf8', maxBuffer: 1 << 28 });
  const py = (JSON.parse(json) as Record<string, { frames: { segment: number; sop: string; position: number[]; pixels: string }[] }>)[path];
  assert.ok(py);
  assert.equal(r.frames.length, py.frames.length);
  r.frames.forEach((f, i) => {
    const p = py.frames[i];
    assert.ok(p);
    assert.equal(f.segmentNumber, p.segment);
    assert.equal(f.sourceSopInstanceUid, p.sop);
    assert.deepEqual(f.imagePosition, p.position);
    assert.deepEqual(f.pixels, new Uint8Array(Buffer.from(p.pixels, 'base64')), `frame ${i + 1} pixels`);
  });
}

describe('DICOM SEG reader', () => {
  it('reads the dcmqi liver SEG: frames → CT slices 03, 02, 01, liver pixels per frame, same study', () => {
    const path = join(DCMQI, 'seg', 'liver.dcm');
    const r = read(path);
    const cts = ['01', '02', '03'].map((n) => ct(join(DCMQI, 'ct', `${n}.dcm`)));
    assert.equal(r.segmentationType, 'BINARY');
    assert.equal(r.rows, 512);
    assert.equal(r.columns, 512);
    assert.equal(r.studyInstanceUid, cts[0]?.study);
    assert.equal(r.segments.length, 1);
    assert.equal(r.segments[0]?.label, 'Liver');
    assert.equal(r.segments[0]?.algorithmType, 'SEMIAUTOMATIC');
    // Legacy SNOMED-RT code for liver (SCT 10200004 in current editions).
    assert.deepEqual(r.segments[0]?.type, { value: 'T-62000', scheme: 'SRT', meaning: 'Liver' });
    assert.deepEqual(
      r.frames.map((f) => f.sourceSopInstanceUid),
      [cts[2]?.sop, cts[1]?.sop, cts[0]?.sop],
    );
    assert.deepEqual(
      r.frames.map((f) => count(f.pixels)),
      [36233, 35645, 35220],
    );
    r.frames.forEach((f, i) => {
      const src = cts[2 - i];
      f.imagePosition?.forEach((v, a) => {
        assert.ok(Math.abs(v - (src?.position[a] as number)) < 1e-3, 'frame position = its CT slice position');
      });
    });
    assert.deepEqual(r.referencedSeries[0]?.instances.map((i) => i.sopInstanceUid).sort(), cts.map((c) => c.sop).sort());
    assert.deepEqual(r.pixelSpacing, [0.810547, 0.810547]);
    assertSameAsPydicom(path, r);
  });

  it('reads highdicom’s sparse BINARY SEG: a referenced CT slice with no frame', () => {
    const path = join(HD, 'seg', 'seg_image_ct_binary.dcm');
    const r = read(path);
    const sops = Object.fromEntries(['17106', '17136', '17166', '17196'].map((n) => [n, ct(join(HD, 'ct', `${n}.dcm`)).sop]));
    assert.deepEqual(
      r.frames.map((f) => f.sourceSopInstanceUid),
      [sops['17136'], sops['17166'], sops['17196']],
    );
    assert.ok(r.referencedSeries[0]?.instances.some((i) => i.sopInstanceUid === sops['17106']));
    assert.deepEqual(r.segments[0]?.type, { value: '272673000', scheme: 'SCT', meaning: 'Bone' });
    assert.equal(r.rows, 16);
    assertSameAsPydicom(path, r);
  });

  it('reads overlapping segments frame by frame', () => {
    const path = join(HD, 'seg', 'seg_image_ct_binary_overlap.dcm');
    const r = read(path);
    assert.equal(r.frames.length, 8);
    assert.deepEqual(
      r.segments.map((s) => s.type?.value),
      ['272673000', '421060004'],
    );
    assert.deepEqual(
      r.frames.map((f) => f.segmentNumber),
      [1, 1, 1, 1, 2, 2, 2, 2],
    );
    assertSameAsPydicom(path, r);
  });

  it('reads FRACTIONAL SEGs as stored values', () => {
    const frac = read(join(HD, 'seg', 'seg_image_ct_binary_fractional.dcm'));
    assert.equal(frac.segmentationType, 'FRACTIONAL');
    assert.equal(frac.maximumFractionalValue, 255);
    const values = new Set(frac.frames.flatMap((f) => [...f.pixels]));
    assert.deepEqual(
      [...values].sort((a, b) => a - b),
      [0, 255],
    );
    const truly = read(join(HD, 'seg', 'seg_image_ct_true_fractional.dcm'));
    assert.deepEqual(
      [...new Set(truly.frames.flatMap((f) => [...f.pixels]))].sort((a, b) => a - b),
      [0, 64, 128],
    );
    assertSameAsPydicom(join(HD, 'seg', 'seg_image_ct_true_fractional.dcm'), truly);
  });

  it('reads a single-frame SEG', () => {
    const r = read(join(HD, 'seg', 'seg_image_ct_binary_single_frame.dcm'));
    assert.equal(r.frames.length, 1);
    assert.equal(r.frames[0]?.pixels.length, 128 * 128);
    assert.equal(r.frames[0]?.sourceSopInstanceUid, ct(join(HD, 'ct-single', 'ct_image.dcm')).sop);
  });

  it('reads ctgate’s own SEG like the goldens, and refuses what is not a SEG', () => {
    const { context, series } = syntheticResult({ seed: 7, kind: 'covid' });
    const r = readSeg(encodeSeg(context).bytes);
    assert.equal(r.segments[0]?.algorithmName, 'lesion-unetpp@0.1.0');
    assert.deepEqual(r.referencedSeries[0]?.instances.length, context.series.slices.length);
    assert.throws(
      () => readSeg(series.files[0]?.bytes as Uint8Array),
      (e: unknown) => e instanceof SegReadError && /not a Segmentation/.test(e.message),
    );
    assert.throws(() => readSeg(new Uint8Array(10)), SegReadError);
  });
});
