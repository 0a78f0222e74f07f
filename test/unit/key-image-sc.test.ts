import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { deflateSync } from 'node:zlib';
import { decodePng } from '../../src/imaging/png.js';
import { encodePng } from '../../src/inference/key-images.js';
import { type ResultContext, sourceSeriesKey } from '../../src/results/context.js';
import {
  encodeKeyImages,
  KEY_IMAGE_SERIES_DESCRIPTION,
  keyImageUids,
  NoKeyImagesError,
  orientationLetters,
  SECONDARY_CAPTURE_IMAGE_STORAGE,
} from '../../src/results/key-image-sc/encode.js';
import { segUids } from '../../src/results/seg/encode.js';
import { assertDciodvfyClean } from '../helpers/dciodvfy.js';
import { syntheticResult } from '../helpers/result-context.js';

interface PyKeyImage {
  sopClassUid: string;
  mediaSopClassUid: string;
  sopInstanceUid: string;
  studyInstanceUid: string;
  seriesInstanceUid: string;
  transferSyntax: string;
  modality: string;
  conversionType: string;
  imageType: string[];
  seriesDescription: string;
  imageComments: string;
  derivationDescription: string;
  burnedInAnnotation: string;
  patientId: string;
  patientName: string;
  accessionNumber: string;
  contentDate: string;
  contentTime: string;
  instanceNumber: number;
  photometricInterpretation: string;
  samplesPerPixel: number;
  planarConfiguration: number;
  bitsAllocated: number;
  rows: number;
  columns: number;
  pixelSpacing: number[];
  patientOrientation: string[];
  sourceImages: string[];
  sourceSpatialLocationsPreserved: string[];
  referencedImages: string[];
  referencedSeries: { series: string; instances: string[] }[];
  pixelArrayShape: number[];
  pixels: string;
}

let dir = '';
let count = 0;

/** Writes each instance to a temp file, fails on any dciodvfy "Error" line, and returns what pydicom reads. */
function validate(instances: Uint8Array[]): PyKeyImage[] {
  const paths = instances.map((bytes) => {
    const path = join(dir, `sc-${++count}.dcm`);
    writeFileSync(path, bytes);
    assertDciodvfyClean(path, /^SCImage$/m);
    return path;
  });
  const json = execFileSync('/usr/bin/python3', ['test/helpers/key-image-check.py', ...paths], { encoding: 'utf8', maxBuffer: 1 << 28 });
  const all = JSON.parse(json) as Record<string, PyKeyImage>;
  return paths.map((p) => all[p] as PyKeyImage);
}

/** Red overlay as renderSlice blends it (45 % towards pure red): R well above G, G = B. Text and CT are gray. */
const isRed = (rgb: Uint8Array, p: number) => (rgb[p * 3] as number) - (rgb[p * 3 + 1] as number) >= 60 && rgb[p * 3 + 1] === rgb[p * 3 + 2];

/** Every pixel is red exactly where the lesion mask has the key slice's voxel. */
function assertOverlayMatchesMask(rgb: Uint8Array, ctx: ResultContext, z: number): void {
  const mask = ctx.analysis.lesionMask as Uint8Array;
  const [nx, ny] = ctx.series.geometry.size;
  let lesion = 0;
  const wrong: number[] = [];
  for (let p = 0; p < nx * ny; p++) {
    const inLesion = mask[z * nx * ny + p] !== 0;
    if (inLesion) lesion++;
    if (inLesion !== isRed(rgb, p)) wrong.push(p);
  }
  assert.ok(lesion > 0, `key slice ${z} holds lesion`);
  assert.deepEqual(wrong.slice(0, 10), [], `${wrong.length} pixels where red and lesion disagree on slice ${z}`);
}

describe('key-image secondary captures', () => {
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'ctgate-key-sc-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('writes one dciodvfy-clean SC per key slice that pydicom reads as RGB, with the lesion in red exactly where the mask is', () => {
    const { context } = syntheticResult({ seed: 7, kind: 'covid' });
    const enc = encodeKeyImages(context);
    assert.equal(enc.instances.length, context.keyImages.length);
    assert.ok(enc.instances.length > 0);
    const py = validate(enc.instances.map((i) => i.bytes));
    const [nx, ny] = context.series.geometry.size;
    const first = context.series.slices[0];
    py.forEach((d, i) => {
      const key = context.keyImages[i];
      const inst = enc.instances[i];
      assert.ok(key && inst);
      assert.equal(d.sopClassUid, SECONDARY_CAPTURE_IMAGE_STORAGE);
      assert.equal(d.mediaSopClassUid, SECONDARY_CAPTURE_IMAGE_STORAGE);
      assert.equal(d.transferSyntax, '1.2.840.10008.1.2.1');
      assert.equal(d.sopInstanceUid, inst.sopInstanceUid);
      // Same study and patient as the CT; a series of its own.
      assert.equal(d.studyInstanceUid, context.study.studyInstanceUid);
      assert.equal(d.seriesInstanceUid, enc.seriesInstanceUid);
      assert.notEqual(d.seriesInstanceUid, context.series.seriesInstanceUid);
      assert.equal(d.patientId, context.study.patientId);
      assert.equal(d.patientName, context.study.patientName);
      assert.equal(d.accessionNumber, context.study.accessionNumber);
      // Labelled as derived, an overlay, not for clinical use.
      assert.equal(d.modality, 'OT');
      assert.equal(d.conversionType, 'WSD');
      assert.deepEqual(d.imageType, ['DERIVED', 'SECONDARY']);
      assert.equal(d.seriesDescription, KEY_IMAGE_SERIES_DESCRIPTION);
      assert.match(d.seriesDescription, /NOT FOR CLINICAL USE/);
      assert.match(d.imageComments, /derived/i);
      assert.match(d.imageComments, /overlay/i);
      assert.match(d.imageComments, /NOT FOR CLINICAL USE/);
      assert.match(d.derivationDescription, /NOT FOR CLINICAL USE/);
      assert.match(d.derivationDescription, /lesion-unetpp 0\.1\.0/);
      assert.equal(d.burnedInAnnotation, 'NO');
      // ContentDate/Time: when the analysis completed (2026-11-27T10:00:00Z).
      assert.equal(d.contentDate, '20261127');
      assert.equal(d.contentTime, '100000');
      assert.equal(d.instanceNumber, i + 1);
      // Every reference names the key slice's CT instance.
      assert.deepEqual(d.sourceImages, [key.sopInstanceUid]);
      assert.deepEqual(d.sourceSpatialLocationsPreserved, ['YES']);
      assert.deepEqual(d.referencedImages, [key.sopInstanceUid]);
      assert.deepEqual(d.referencedSeries, [{ series: context.series.seriesInstanceUid, instances: [key.sopInstanceUid] }]);
      assert.equal(context.series.slices[key.sliceIndex]?.sopInstanceUid, key.sopInstanceUid);
      // RGB, 8 bit, pixel-interleaved, on the CT slice's grid.
      assert.equal(d.photometricInterpretation, 'RGB');
      assert.equal(d.samplesPerPixel, 3);
      assert.equal(d.planarConfiguration, 0);
      assert.equal(d.bitsAllocated, 8);
      assert.deepEqual([d.rows, d.columns], [ny, nx]);
      assert.deepEqual(d.pixelArrayShape, [ny, nx, 3]);
      assert.deepEqual(d.pixelSpacing, first?.pixelSpacing);
      assert.deepEqual(d.patientOrientation, ['L', 'P']);
      const rgb = new Uint8Array(Buffer.from(d.pixels, 'base64'));
      assertOverlayMatchesMask(rgb, context, key.sliceIndex);
      // 96 × 96 is too small for the label: the pixels are the key-image PNG's, unchanged.
      assert.equal(inst.labelled, false);
      assert.deepEqual(rgb, decodePng(key.png).pixels);
    });
  });

  it('burns the NOT FOR CLINICAL USE label into a corner free of lesion on images large enough for it', () => {
    const { context } = syntheticResult({ seed: 7, kind: 'covid', size: [256, 256, 24] });
    const enc = encodeKeyImages(context);
    const py = validate(enc.instances.map((i) => i.bytes));
    const [nx, ny] = context.series.geometry.size;
    py.forEach((d, i) => {
      const key = context.keyImages[i];
      assert.ok(key);
      assert.equal(enc.instances[i]?.labelled, true);
      const rgb = new Uint8Array(Buffer.from(d.pixels, 'base64'));
      assertOverlayMatchesMask(rgb, context, key.sliceIndex);
      // The changed pixels are black or white and lie in one corner's box.
      const png = decodePng(key.png).pixels;
      let x0 = nx;
      let y0 = ny;
      let x1 = -1;
      let y1 = -1;
      let white = 0;
      for (let p = 0; p < nx * ny; p++) {
        if (rgb[p * 3] === png[p * 3] && rgb[p * 3 + 1] === png[p * 3 + 1] && rgb[p * 3 + 2] === png[p * 3 + 2]) continue;
        const v = rgb[p * 3];
        assert.ok((v === 0 || v === 255) && rgb[p * 3 + 1] === v && rgb[p * 3 + 2] === v, 'label pixels are black or white');
        if (v === 255) white++;
        const x = p % nx;
        const y = Math.floor(p / nx);
        x0 = Math.min(x0, x);
        x1 = Math.max(x1, x);
        y0 = Math.min(y0, y);
        y1 = Math.max(y1, y);
      }
      assert.ok(white > 200, `the label's letters are drawn (${white} white pixels)`);
      assert.ok(x1 - x0 < nx / 2 && y1 - y0 < ny / 4, `the label stays in a corner (${x0},${y0})–(${x1},${y1})`);
      assert.ok((x0 < 8 || x1 > nx - 8) && (y0 < 8 || y1 > ny - 8), 'in a corner');
    });
  });

  it('pads an odd-length Pixel Data to even (75 × 75 RGB)', () => {
    const { context } = syntheticResult({ seed: 7, kind: 'covid', size: [75, 75, 24] });
    const [d] = validate(encodeKeyImages(context).instances.map((i) => i.bytes));
    assert.deepEqual(d?.pixelArrayShape, [75, 75, 3]);
    assertOverlayMatchesMask(new Uint8Array(Buffer.from(d?.pixels ?? '', 'base64')), context, context.keyImages[0]?.sliceIndex ?? -1);
  });

  it('gives the same bytes and UIDs for the same job, and a series apart from the CT and the SEG', () => {
    const a = encodeKeyImages(syntheticResult({ seed: 7, kind: 'covid' }).context);
    const b = encodeKeyImages(syntheticResult({ seed: 7, kind: 'covid' }).context);
    assert.equal(a.seriesInstanceUid, b.seriesInstanceUid);
    assert.deepEqual(
      a.instances.map((i) => i.bytes),
      b.instances.map((i) => i.bytes),
    );
    assert.equal(new Set(a.instances.map((i) => i.sopInstanceUid)).size, a.instances.length, 'a UID per instance');
    const ctx = syntheticResult({ seed: 7, kind: 'covid' }).context;
    const model = ctx.analysis.models[1];
    assert.ok(model);
    assert.equal(a.seriesInstanceUid, keyImageUids(sourceSeriesKey(ctx.series), model).seriesInstanceUid);
    assert.notEqual(a.seriesInstanceUid, segUids(sourceSeriesKey(ctx.series), model).seriesInstanceUid);
    // A new lesion-model version makes a new series beside the old one.
    const v2 = encodeKeyImages({
      ...ctx,
      analysis: { ...ctx.analysis, models: ctx.analysis.models.map((m, i) => (i === 1 ? { ...m, version: '0.2.0' } : m)) },
    });
    assert.notEqual(v2.seriesInstanceUid, a.seriesInstanceUid);
    assert.notEqual(v2.instances[0]?.sopInstanceUid, a.instances[0]?.sopInstanceUid);
  });

  it('writes none for a healthy study (no key slices) or one that was not assessable', () => {
    const healthy = syntheticResult({ kind: 'healthy' }).context;
    assert.equal(healthy.keyImages.length, 0);
    assert.throws(
      () => encodeKeyImages(healthy),
      (e: unknown) => e instanceof NoKeyImagesError && e.reason === 'no-key-slices' && /no key slices/.test(e.message),
    );
    const covid = syntheticResult({ kind: 'covid' }).context;
    const na: ResultContext = {
      ...covid,
      analysis: { ...covid.analysis, verdict: 'not-assessable', reason: 'too few slices', lesionMask: null, findings: null },
      keyImages: [],
    };
    assert.throws(
      () => encodeKeyImages(na),
      (e: unknown) => e instanceof NoKeyImagesError && e.reason === 'not-assessable' && /too few slices/.test(e.message),
    );
  });

  it('refuses a key image whose PNG or slice does not match the series', () => {
    const ctx = syntheticResult({ kind: 'covid' }).context;
    const [k] = ctx.keyImages;
    assert.ok(k);
    const small = { ...ctx, keyImages: [{ ...k, png: encodePng(2, 2, new Uint8Array(12)) }] };
    assert.throws(() => encodeKeyImages(small), /PNG is 2×2/);
    const moved = { ...ctx, keyImages: [{ ...k, sliceIndex: k.sliceIndex + 1 }] };
    assert.throws(() => encodeKeyImages(moved), /the key image names/);
  });

  it('patient orientation letters from direction cosines', () => {
    assert.equal(orientationLetters([1, 0, 0]), 'L');
    assert.equal(orientationLetters([0, -1, 0]), 'A');
    assert.equal(orientationLetters([0, 0.6, -0.8]), 'FP');
  });
});

describe('key-image PNG reader', () => {
  it('reads back what encodePng wrote (RGB and grayscale)', () => {
    const rgb = Uint8Array.from({ length: 5 * 3 * 3 }, (_, i) => (i * 37) & 0xff);
    assert.deepEqual(decodePng(encodePng(5, 3, rgb, 3)), { width: 5, height: 3, channels: 3, pixels: rgb });
    const gray = Uint8Array.from({ length: 4 * 2 }, (_, i) => i * 30);
    assert.deepEqual(decodePng(encodePng(4, 2, gray, 1)), { width: 4, height: 2, channels: 1, pixels: gray });
  });

  it('undoes all five row filters (as other PNG writers use them)', () => {
    const w = 4;
    const h = 5;
    const bpp = 3;
    const stride = w * bpp;
    const px = Uint8Array.from({ length: stride * h }, (_, i) => (i * 53 + (i >> 3) * 7) & 0xff);
    const at = (y: number, i: number) => (y < 0 || i < 0 ? 0 : (px[y * stride + i] as number));
    const paeth = (a: number, b: number, c: number) => {
      const p = a + b - c;
      const [pa, pb, pc] = [Math.abs(p - a), Math.abs(p - b), Math.abs(p - c)];
      return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
    };
    // Row y uses filter y (None, Sub, Up, Average, Paeth).
    const raw = new Uint8Array((stride + 1) * h);
    for (let y = 0; y < h; y++) {
      raw[y * (stride + 1)] = y;
      for (let i = 0; i < stride; i++) {
        const [x, a, b, c] = [at(y, i), at(y, i - bpp), at(y - 1, i), at(y - 1, i - bpp)];
        const pred = [0, a, b, (a + b) >> 1, paeth(a, b, c)][y] as number;
        raw[y * (stride + 1) + 1 + i] = (x - pred) & 0xff;
      }
    }
    const png = encodePng(w, h, px, 3);
    // Swap the IDAT of encodePng's output for the filtered one (CRCs are not checked by the reader).
    const ihdrEnd = 8 + 25;
    const idat = deflateSync(raw);
    const chunk = new Uint8Array(12 + idat.length);
    new DataView(chunk.buffer).setUint32(0, idat.length);
    chunk.set([0x49, 0x44, 0x41, 0x54], 4);
    chunk.set(idat, 8);
    const iend = png.subarray(png.length - 12);
    const filtered = new Uint8Array([...png.subarray(0, ihdrEnd), ...chunk, ...iend]);
    assert.deepEqual(decodePng(filtered).pixels, px);
  });

  it('refuses what is not an 8-bit RGB/grayscale PNG', () => {
    assert.throws(() => decodePng(new Uint8Array([1, 2, 3])), /not a PNG/);
    const png = encodePng(2, 2, new Uint8Array(12));
    const truncated = png.subarray(0, png.length - 12);
    assert.throws(() => decodePng(truncated), /IEND/);
    const palette = Uint8Array.from(png);
    palette[8 + 8 + 9] = 3; // colour type 3 (palette)
    assert.throws(() => decodePng(palette), /unsupported PNG/);
  });
});
