import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { type Geometry, type HuVolume, patientToVoxel, voxelToPatient } from '../../src/imaging/volume.js';
import { synthCommand } from '../../src/synthetic/cli.js';
import { type CtSeries, deterministicUid, formatDs, writeCtSeries, writeSeriesToDir } from '../../src/synthetic/dicom-writer.js';
import { distanceToBackgroundMm } from '../../src/synthetic/distance.js';
import { decodeNpyU8, readMasks, writeMasks } from '../../src/synthetic/masks.js';
import { addSphere, generateChestCt, maskVolumesMl, PHANTOM_KINDS, type Phantom, type PhantomKind, phantomGeometry } from '../../src/synthetic/phantom.js';
import { assertDciodvfyClean } from '../helpers/dciodvfy.js';

const PYTHON = '/usr/bin/python3';
const tmp = mkdtempSync(join(tmpdir(), 'ctgate-synth-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const cache = new Map<string, Phantom>();
/** Default size and spacing (128×128×64 at 2.8×2.8×5 mm); generated once per kind and seed. */
function phantom(kind: PhantomKind, seed: number): Phantom {
  const key = `${kind}/${seed}`;
  let p = cache.get(key);
  if (!p) {
    p = generateChestCt({ kind, seed });
    cache.set(key, p);
  }
  return p;
}

/** Byte equality without a megabyte-long diff on failure. */
function sameBytes(a: ArrayBufferView, b: ArrayBufferView | undefined, what: string): void {
  assert.ok(b, `${what}: missing`);
  const x = Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  const y = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  assert.ok(x.length === y.length && x.equals(y), `${what}: bytes differ`);
}

function differ(a: ArrayBufferView, b: ArrayBufferView, what: string): void {
  assert.ok(!Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength)), `${what}: identical`);
}

/** Patient x (mm) of voxel index idx for an identity-direction geometry. */
function xOf(g: Geometry, idx: number): number {
  return g.origin[0] + (idx % g.size[0]) * g.spacing[0];
}

function lesionStats(p: Phantom) {
  const g = p.volume.geometry;
  let n = 0;
  let right = 0;
  let left = 0;
  let outside = 0;
  let sum = 0;
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < p.lesionMask.length; i++) {
    if (p.lesionMask[i] !== 1) continue;
    n++;
    if (p.lungMask[i] !== 1) outside++;
    if (xOf(g, i) < 0) right++;
    else left++;
    const v = p.volume.data[i] as number;
    sum += v;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { n, right, left, outside, mean: sum / n, min, max };
}

describe('synthetic phantom', () => {
  it('is deterministic: same seed → identical bytes, another seed → different', () => {
    const opts = { kind: 'covid' as const, size: [96, 80, 24] as [number, number, number], spacing: [3.5, 4, 12] as [number, number, number] };
    const a = generateChestCt({ ...opts, seed: 11 });
    const b = generateChestCt({ ...opts, seed: 11 });
    const c = generateChestCt({ ...opts, seed: 12 });
    sameBytes(a.volume.data, b.volume.data, 'volume');
    sameBytes(a.lungMask, b.lungMask, 'lung mask');
    sameBytes(a.lesionMask, b.lesionMask, 'lesion mask');
    assert.deepEqual(a.lesions, b.lesions);
    differ(a.volume.data, c.volume.data, 'volumes of seeds 11 and 12');
    differ(a.lesionMask, c.lesionMask, 'lesion masks of seeds 11 and 12');
  });

  it('lays the volume out as documented: axial, x/y centred on 0, top slice at z = 0', () => {
    const p = phantom('healthy', 1);
    const g = p.volume.geometry;
    assert.deepEqual(g.size, [128, 128, 64]);
    assert.deepEqual(g.spacing, [2.8, 2.8, 5]);
    assert.deepEqual(g.direction, [1, 0, 0, 0, 1, 0, 0, 0, 1]);
    assert.deepEqual(g, phantomGeometry([128, 128, 64], [2.8, 2.8, 5]));
    const first = voxelToPatient(g, 0, 0, 0);
    const last = voxelToPatient(g, 127, 127, 63);
    assert.ok(Math.abs(first[0] + last[0]) < 1e-9 && Math.abs(first[1] + last[1]) < 1e-9);
    assert.ok(Math.abs(last[2]) < 1e-9);
    assert.equal(first[2], -315);
    assert.equal(p.volume.data.length, 128 * 128 * 64);
    assert.equal(p.lesions.length, 0);
    assert.ok(p.lesionMask.every((v) => v === 0));
  });

  it('keeps every lesion inside the lungs, and the lesion records agree with the mask', () => {
    for (const kind of PHANTOM_KINDS) {
      for (const seed of [1, 2]) {
        const p = phantom(kind, seed);
        const s = lesionStats(p);
        assert.equal(s.outside, 0, `${kind}/${seed}: lesion voxels outside the lung mask`);
        if (kind === 'healthy') {
          assert.equal(s.n, 0);
          continue;
        }
        assert.ok(p.lesions.length > 0 && s.n > 0, `${kind}/${seed}: no lesion`);
        const g = p.volume.geometry;
        for (const l of p.lesions) {
          assert.equal(l.lung, l.centerMm[0] < 0 ? 'right' : 'left');
          const [i, j, k] = patientToVoxel(g, l.centerMm).map(Math.round) as [number, number, number];
          assert.ok(i >= 0 && j >= 0 && k >= 0 && i < 128 && j < 128 && k < 64);
          assert.ok(l.voxels > 0 && l.radiusMm > 0);
        }
        // Overlapping lesions share voxels, so the records count at least the mask.
        assert.ok(p.lesions.reduce((a, l) => a + l.voxels, 0) >= s.n);
      }
    }
  });

  it('covid: bilateral, mostly peripheral ground glass', () => {
    for (const seed of [1, 2, 3, 4]) {
      const p = phantom('covid', seed);
      const s = lesionStats(p);
      assert.ok(s.right > 0 && s.left > 0, `seed ${seed}: not bilateral (${s.right} right, ${s.left} left)`);
      assert.ok(new Set(p.lesions.map((l) => l.lung)).size === 2);
      assert.ok(p.lesions.some((l) => l.type === 'ggo'));
      assert.ok(p.lesions.every((l) => ['ggo', 'crazy-paving', 'consolidation'].includes(l.type)));
      const dist = distanceToBackgroundMm(p.lungMask, p.volume.geometry);
      let near = 0;
      for (let i = 0; i < dist.length; i++) if (p.lesionMask[i] === 1 && (dist[i] as number) <= 15) near++;
      assert.ok(near / s.n >= 0.6, `seed ${seed}: only ${((100 * near) / s.n).toFixed(0)} % of lesion voxels within 15 mm of the pleura`);
      assert.ok(s.mean > -750 && s.mean < -250, `seed ${seed}: mean lesion HU ${s.mean}`);
    }
  });

  it('lobar pneumonia: one large unilateral consolidation with air bronchograms', () => {
    for (const seed of [1, 2, 3]) {
      const p = phantom('lobar-pneumonia', seed);
      const s = lesionStats(p);
      assert.equal(p.lesions.length, 1);
      const lesion = p.lesions[0];
      assert.equal(lesion?.type, 'lobar-consolidation');
      assert.ok(s.right === 0 || s.left === 0, 'not unilateral');
      const lung = maskVolumesMl(p.lungMask, p.volume.geometry);
      const ml = maskVolumesMl(p.lesionMask, p.volume.geometry).total;
      const side = lesion?.lung ?? 'left';
      assert.ok(ml / lung[side] > 0.2 && ml > 300, `seed ${seed}: ${ml} mL of a ${lung[side]} mL lung`);
      assert.ok(s.mean > -120 && s.mean < 60, `seed ${seed}: mean HU ${s.mean}`);
      let air = 0;
      for (let i = 0; i < p.lesionMask.length; i++) if (p.lesionMask[i] === 1 && (p.volume.data[i] as number) < -500) air++;
      assert.ok(air > 50, `seed ${seed}: ${air} air-bronchogram voxels`);
    }
  });

  it('nodules are solid and round; old lesions calcified or fibrotic', () => {
    for (const seed of [1, 2, 3]) {
      const n = phantom('nodule', seed);
      assert.ok(n.lesions.length >= 1 && n.lesions.length <= 3);
      assert.ok(n.lesions.every((l) => l.type === 'nodule' || l.type === 'mass'));
      assert.ok(n.lesions.every((l) => l.radiusMm < 30));
      assert.ok(lesionStats(n).mean > -300);
      const o = phantom('old-lesion', seed);
      assert.ok(o.lesions.every((l) => l.type === 'calcified-nodule' || l.type === 'fibrotic-strand'));
      if (o.lesions.some((l) => l.type === 'calcified-nodule')) assert.ok(lesionStats(o).max > 200);
    }
  });

  it('has the documented HU per tissue, and noise of the requested σ', () => {
    const clean = generateChestCt({ kind: 'healthy', seed: 5, noiseSigma: 0 });
    const noisy = phantom('healthy', 5);
    const d = clean.volume.data;
    const g = clean.volume.geometry;
    const [nx, ny] = g.size;
    assert.equal(d[0], -1000, 'air outside the body');
    const lungHu: number[] = [];
    let bone = 0;
    for (let i = 0; i < d.length; i++) {
      if (clean.lungMask[i] === 1) lungHu.push(d[i] as number);
      if ((d[i] as number) >= 700) bone++;
    }
    lungHu.sort((a, b) => a - b);
    const median = lungHu[lungHu.length >> 1] as number;
    assert.ok(median >= -890 && median <= -820, `lung median ${median}`);
    assert.ok((lungHu[Math.floor(lungHu.length * 0.9)] as number) <= -800, 'mostly aerated lung');
    assert.ok(bone > 1000, `bone voxels ${bone}`);
    const ml = maskVolumesMl(clean.lungMask, g);
    assert.ok(ml.total > 3000 && ml.total < 7000 && ml.right > ml.left, `lung volumes ${JSON.stringify(ml)}`);
    // Vertebral body (cancellous 300) and heart (40) at their anatomical centres.
    const at = (p: [number, number, number]) => {
      const [i, j, k] = patientToVoxel(g, p).map(Math.round) as [number, number, number];
      return d[i + j * nx + k * nx * ny];
    };
    const a = clean.anatomy;
    assert.equal(at([0, a.spine.cy, -150]), 300);
    assert.equal(at(a.heart.center), 40);
    assert.equal(at([0, a.trachea.cy, -5]), -1000);
    // Noise: noisy − clean, where nothing was clamped at −1024.
    let n = 0;
    let s1 = 0;
    let s2 = 0;
    for (let i = 0; i < d.length; i++) {
      if ((d[i] as number) < -900) continue;
      const e = (noisy.volume.data[i] as number) - (d[i] as number);
      n++;
      s1 += e;
      s2 += e * e;
    }
    const sigma = Math.sqrt(s2 / n - (s1 / n) ** 2);
    assert.ok(Math.abs(s1 / n) < 0.2 && sigma > 14 && sigma < 16, `noise mean ${s1 / n}, σ ${sigma}`);
    sameBytes(noisy.lungMask, clean.lungMask, 'lung mask with and without noise');
  });

  it('addSphere fills exactly the voxels within the radius, for any origin, spacing and direction', () => {
    const c30 = Math.cos(Math.PI / 6);
    const s30 = Math.sin(Math.PI / 6);
    const geometries: Geometry[] = [
      { size: [40, 30, 20], spacing: [0.8, 1.3, 2.5], origin: [-100.5, 37.25, -310], direction: [1, 0, 0, 0, 1, 0, 0, 0, 1] },
      { size: [40, 30, 20], spacing: [0.8, 1.3, 2.5], origin: [12, -40, 7], direction: [c30, s30, 0, -s30, c30, 0, 0, 0, 1] },
      { size: [40, 30, 20], spacing: [0.8, 1.3, 2.5], origin: [12, -40, 7], direction: [1, 0, 0, 0, 0, -1, 0, 1, 0] },
    ];
    for (const g of geometries) {
      const vol: HuVolume = { geometry: g, data: new Int16Array(40 * 30 * 20).fill(-1000) };
      const centreIndex: [number, number, number] = [17.3, 11.6, 8.2];
      const centre = voxelToPatient(g, ...centreIndex);
      const r = 6;
      const set = addSphere(vol, centre, r, 123);
      let expected = 0;
      const sum: [number, number, number] = [0, 0, 0];
      for (let k = 0; k < 20; k++)
        for (let j = 0; j < 30; j++)
          for (let i = 0; i < 40; i++) {
            const p = voxelToPatient(g, i, j, k);
            const inside = Math.hypot(p[0] - centre[0], p[1] - centre[1], p[2] - centre[2]) <= r;
            const v = vol.data[i + j * 40 + k * 1200];
            assert.equal(v, inside ? 123 : -1000, `voxel ${i},${j},${k}`);
            if (inside) {
              expected++;
              sum[0] = sum[0] + i;
              sum[1] = sum[1] + j;
              sum[2] = sum[2] + k;
            }
          }
      assert.equal(set, expected);
      assert.ok(expected > 100);
      // The sphere sits where it was asked: its voxel centroid is the requested (continuous) index.
      for (let a = 0; a < 3; a++) assert.ok(Math.abs((sum[a] as number) / expected - (centreIndex[a] as number)) < 0.35, `axis ${a}`);
    }
    // Known voxel: the centre of voxel (5, 6, 7) with a radius below half the smallest spacing sets exactly it.
    const g = geometries[0] as Geometry;
    const vol: HuVolume = { geometry: g, data: new Int16Array(40 * 30 * 20) };
    assert.equal(addSphere(vol, voxelToPatient(g, 5, 6, 7), 0.3, 77), 1);
    assert.equal(vol.data[5 + 6 * 40 + 7 * 1200], 77);
    // Radius 1 mm at voxel (10, 20, 5): its x neighbours (0.8 mm away) are in, y (1.3 mm) and z (2.5 mm) are not.
    const centre: [number, number, number] = [-100.5 + 10 * 0.8, 37.25 + 20 * 1.3, -310 + 5 * 2.5];
    assert.equal(addSphere(vol, centre, 1, 55), 3);
    const hit: number[] = [];
    vol.data.forEach((v, idx) => {
      if (v === 55) hit.push(idx);
    });
    assert.deepEqual(
      hit,
      [9, 10, 11].map((i) => i + 20 * 40 + 5 * 1200),
    );
  });

  it('measures distance to the lung boundary exactly (anisotropic EDT)', () => {
    const g: Geometry = { size: [9, 7, 5], spacing: [1, 2, 3], origin: [0, 0, 0], direction: [1, 0, 0, 0, 1, 0, 0, 0, 1] };
    const mask = new Uint8Array(9 * 7 * 5).fill(1);
    mask[0] = 0;
    const d = distanceToBackgroundMm(mask, g);
    for (let k = 0; k < 5; k++)
      for (let j = 0; j < 7; j++) for (let i = 0; i < 9; i++) assert.ok(Math.abs((d[i + j * 9 + k * 63] as number) - Math.hypot(i, 2 * j, 3 * k)) < 1e-4);
  });
});

interface PyFile {
  file: string;
  sopClass: string;
  sop: string;
  study: string;
  series: string;
  frameOfReference: string;
  transferSyntax: string;
  modality: string;
  imageType: string[];
  instance: number;
  ipp: number[];
  iop: number[];
  pixelSpacing: number[];
  sliceThickness: number;
  rows: number;
  columns: number;
  intercept: number;
  slope: number;
  pixelRepresentation: number;
  bitsStored: number;
  accession: string;
  patientId: string;
  patientPosition: string;
  bodyPart: string;
  manufacturer: string;
  huSha256: string;
  huMin: number;
  huMax: number;
  huSum: number;
}

/** Reads every .dcm in dir with pydicom (no numpy): header fields and a hash of the HU values per file. */
function readWithPydicom(dir: string): PyFile[] {
  const script = `
import glob, hashlib, json, struct, sys
import pydicom
out = []
for f in sorted(glob.glob(sys.argv[1] + '/*.dcm')):
    d = pydicom.dcmread(f)
    n = d.Rows * d.Columns
    fmt = '<%d%s' % (n, 'h' if d.PixelRepresentation == 1 else 'H')
    stored = struct.unpack(fmt, d.PixelData)
    slope, intercept = float(d.RescaleSlope), float(d.RescaleIntercept)
    hu = [int(round(v * slope + intercept)) for v in stored]
    out.append(dict(file=f.split('/')[-1], sopClass=d.SOPClassUID, sop=d.SOPInstanceUID, study=d.StudyInstanceUID,
        series=d.SeriesInstanceUID, frameOfReference=d.FrameOfReferenceUID, transferSyntax=d.file_meta.TransferSyntaxUID,
        modality=d.Modality, imageType=list(d.ImageType), instance=int(d.InstanceNumber),
        ipp=[float(v) for v in d.ImagePositionPatient], iop=[float(v) for v in d.ImageOrientationPatient],
        pixelSpacing=[float(v) for v in d.PixelSpacing], sliceThickness=float(d.SliceThickness), rows=d.Rows, columns=d.Columns,
        intercept=intercept, slope=slope, pixelRepresentation=d.PixelRepresentation, bitsStored=d.BitsStored,
        accession=d.AccessionNumber, patientId=d.PatientID, patientPosition=d.PatientPosition, bodyPart=d.BodyPartExamined,
        manufacturer=d.Manufacturer, huSha256=hashlib.sha256(struct.pack('<%dh' % n, *hu)).hexdigest(),
        huMin=min(hu), huMax=max(hu), huSum=sum(hu)))
print(json.dumps(out))
`;
  const r = spawnSync(PYTHON, ['-c', script, dir], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) assert.fail(`cannot run ${PYTHON} (needed to check DICOM with pydicom): ${r.error.message}`);
  if (r.status !== 0) assert.fail(`pydicom read failed (is pydicom installed for ${PYTHON}?):\n${r.stderr}`);
  return JSON.parse(r.stdout) as PyFile[];
}

/** dciodvfy's verdict: fails on a non-zero exit or any "Error" line (it exits 0 on some errors). */
function dciodvfy(file: string): string[] {
  return assertDciodvfyClean(file)
    .split('\n')
    .filter((l) => /^Warning/.test(l));
}

function checkRoundTrip(volume: HuVolume, series: CtSeries, dir: string, expected: { intercept: number; pixelRepresentation: number }) {
  const g = volume.geometry;
  const [nx, ny, nz] = g.size;
  const files = readWithPydicom(dir);
  assert.equal(files.length, nz);
  for (const [k, f] of files.entries()) {
    assert.equal(f.file, `${String(k + 1).padStart(4, '0')}.dcm`);
    assert.equal(f.instance, k + 1);
    assert.equal(f.sop, series.files[k]?.sopInstanceUid);
    assert.equal(f.sopClass, '1.2.840.10008.5.1.4.1.1.2');
    assert.equal(f.transferSyntax, '1.2.840.10008.1.2.1');
    assert.equal(f.study, series.studyInstanceUid);
    assert.equal(f.series, series.seriesInstanceUid);
    assert.equal(f.frameOfReference, series.frameOfReferenceUid);
    assert.equal(f.modality, 'CT');
    assert.deepEqual(f.imageType, ['ORIGINAL', 'PRIMARY', 'AXIAL']);
    assert.equal(f.patientPosition, 'HFS');
    assert.equal(f.bodyPart, 'CHEST');
    assert.equal(f.manufacturer, 'ctgate-synthetic');
    const ipp = voxelToPatient(g, 0, 0, k);
    for (let a = 0; a < 3; a++) assert.ok(Math.abs((f.ipp[a] as number) - (ipp[a] as number)) < 1e-6, `IPP ${f.ipp} vs ${ipp}`);
    assert.deepEqual(f.iop, g.direction.slice(0, 6));
    // PixelSpacing = [between rows (y), between columns (x)].
    assert.deepEqual(f.pixelSpacing, [g.spacing[1], g.spacing[0]]);
    assert.equal(f.sliceThickness, g.spacing[2]);
    assert.equal(f.rows, ny);
    assert.equal(f.columns, nx);
    assert.equal(f.intercept, expected.intercept);
    assert.equal(f.slope, 1);
    assert.equal(f.pixelRepresentation, expected.pixelRepresentation);
    assert.equal(f.bitsStored, 16);
    const slice = volume.data.subarray(k * nx * ny, (k + 1) * nx * ny);
    const le = Buffer.alloc(slice.length * 2);
    let sum = 0;
    let min = Number.POSITIVE_INFINITY;
    let max = Number.NEGATIVE_INFINITY;
    for (let p = 0; p < slice.length; p++) {
      const v = slice[p] as number;
      le.writeInt16LE(v, p * 2);
      sum += v;
      if (v < min) min = v;
      if (v > max) max = v;
    }
    assert.equal(f.huSha256, createHash('sha256').update(le).digest('hex'), `slice ${k}: HU differ`);
    assert.deepEqual([f.huMin, f.huMax, f.huSum], [min, max, sum]);
  }
  return files;
}

describe('synthetic DICOM series', () => {
  const p = generateChestCt({ kind: 'covid', seed: 3, size: [64, 64, 8], spacing: [5.6, 5.2, 40] });

  it('writes a valid CT series (dciodvfy) that pydicom reads back to the same HU, unsigned and signed', async () => {
    const unsigned = writeCtSeries(p.volume, { seed: 3, accessionNumber: 'ACC1', patientId: 'PID1' });
    const signed = writeCtSeries(p.volume, { seed: 3, accessionNumber: 'ACC1', patientId: 'PID1', pixelRepresentation: 1, seriesNumber: 2 });
    assert.equal(unsigned.clampedVoxels, 0);
    assert.equal(signed.studyInstanceUid, unsigned.studyInstanceUid);
    assert.notEqual(signed.seriesInstanceUid, unsigned.seriesInstanceUid);
    const du = join(tmp, 'unsigned');
    const ds = join(tmp, 'signed');
    const paths = await writeSeriesToDir(du, unsigned);
    await writeSeriesToDir(ds, signed);
    assert.deepEqual(readdirSync(du), ['0001.dcm', '0002.dcm', '0003.dcm', '0004.dcm', '0005.dcm', '0006.dcm', '0007.dcm', '0008.dcm']);
    sameBytes(readFileSync(paths[0] as string), unsigned.files[0]?.bytes, '0001.dcm');
    assert.deepEqual(dciodvfy(join(du, '0001.dcm')), []);
    assert.deepEqual(dciodvfy(join(ds, '0008.dcm')), []);
    const a = checkRoundTrip(p.volume, unsigned, du, { intercept: -1024, pixelRepresentation: 0 });
    checkRoundTrip(p.volume, signed, ds, { intercept: 0, pixelRepresentation: 1 });
    assert.equal(a[0]?.accession, 'ACC1');
    assert.equal(a[0]?.patientId, 'PID1');
  });

  it('derives the same UIDs and bytes from the same seed, different UIDs from another', () => {
    const a = writeCtSeries(p.volume, { seed: 3 });
    const b = writeCtSeries(p.volume, { seed: 3 });
    const c = writeCtSeries(p.volume, { seed: 4 });
    const r = writeCtSeries(p.volume, {});
    assert.equal(a.files.length, b.files.length);
    for (const [q, f] of a.files.entries()) sameBytes(f.bytes, b.files[q]?.bytes, `instance ${q + 1}`);
    assert.notEqual(a.studyInstanceUid, c.studyInstanceUid);
    assert.notEqual(a.studyInstanceUid, r.studyInstanceUid);
    const uids = [
      a.studyInstanceUid,
      a.seriesInstanceUid,
      a.frameOfReferenceUid,
      ...a.files.map((f) => f.sopInstanceUid),
      r.studyInstanceUid,
      r.files[0]?.sopInstanceUid ?? '',
    ];
    assert.equal(new Set(uids).size, uids.length);
    for (const u of uids) assert.match(u, /^2\.25\.[1-9][0-9]*$/);
    for (const u of uids) assert.ok(u.length <= 64 && BigInt(u.slice(5)) < 2n ** 128n);
    assert.equal(deterministicUid('x'), deterministicUid('x'));
    const given = writeCtSeries(p.volume, { studyInstanceUid: '1.2.3.4', seriesInstanceUid: '1.2.3.4.5' });
    assert.equal(given.studyInstanceUid, '1.2.3.4');
    assert.equal(given.seriesInstanceUid, '1.2.3.4.5');
  });

  it('formats decimal strings within 16 characters', () => {
    assert.equal(formatDs(-177.79999999999998), '-177.8');
    assert.equal(formatDs(-0), '0');
    assert.equal(formatDs(2.8), '2.8');
    assert.equal(formatDs(1e-12), '0.000000000001');
    for (const v of [Math.PI * 1e6, -Math.E * 1e-7, 123456789.12345, 1 / 3])
      assert.ok(formatDs(v).length <= 16 && Math.abs(Number(formatDs(v)) - v) < 1e-5 * Math.max(1, Math.abs(v)));
  });

  it('writes masks as .npy (numpy header, shape nz, ny, nx) with a geometry sidecar', async () => {
    const dir = join(tmp, 'masks');
    const sidecar = await writeMasks(dir, { geometry: p.volume.geometry, lungMask: p.lungMask, lesionMask: p.lesionMask });
    assert.deepEqual(sidecar.shape, [8, 64, 64]);
    const back = await readMasks(dir);
    sameBytes(back.lungMask, p.lungMask, 'lung mask');
    sameBytes(back.lesionMask, p.lesionMask, 'lesion mask');
    assert.deepEqual(back.geometry, p.volume.geometry);
    const npy = readFileSync(join(dir, 'lesion-mask.npy'));
    assert.equal((10 + npy.readUInt16LE(8)) % 64, 0);
    assert.deepEqual(decodeNpyU8(npy).shape, [8, 64, 64]);
    // The header is what numpy writes: a Python dict literal.
    const r = spawnSync(
      PYTHON,
      [
        '-c',
        `import ast,sys; b=open(sys.argv[1],'rb').read(); n=int.from_bytes(b[8:10],'little'); h=ast.literal_eval(b[10:10+n].decode('latin1')); print(h['descr'], h['fortran_order'], h['shape'], len(b)-10-n)`,
        join(dir, 'lesion-mask.npy'),
      ],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), `|u1 False (8, 64, 64) ${8 * 64 * 64}`);
  });
});

describe('ctgate synth', () => {
  it('writes the series, masks and truth.json', async () => {
    const dir = join(tmp, 'cli');
    const lines: string[] = [];
    const sink = { write: (t: string) => lines.push(t) };
    const code = await synthCommand(
      ['--out', dir, '--seed', '9', '--kind', 'lobar-pneumonia', '--size', '48,40,6', '--spacing', '7,8,45', '--accession', 'ACC9'],
      { out: sink, err: sink },
    );
    assert.equal(code, 0, lines.join(''));
    assert.match(lines.join(''), /encoded 6 DICOM instances/);
    assert.deepEqual(readdirSync(join(dir, 'dicom')), ['0001.dcm', '0002.dcm', '0003.dcm', '0004.dcm', '0005.dcm', '0006.dcm']);
    const truth = JSON.parse(readFileSync(join(dir, 'truth.json'), 'utf8'));
    assert.equal(truth.kind, 'lobar-pneumonia');
    assert.equal(truth.positive, false);
    assert.equal(truth.accessionNumber, 'ACC9');
    assert.equal(truth.lesions.length, 1);
    const side = truth.lesions[0].lung;
    assert.ok(truth.lesionVolumeMl[side] > 0 && truth.lesionVolumeMl[side === 'left' ? 'right' : 'left'] === 0);
    assert.ok(truth.lungVolumeMl.total > truth.lesionVolumeMl.total);
    const masks = await readMasks(dir);
    assert.deepEqual(masks.geometry.size, [48, 40, 6]);
    assert.equal(maskVolumesMl(masks.lesionMask, masks.geometry).total, truth.lesionVolumeMl.total);
    const bad = await synthCommand(['--out', dir, '--seed', '1', '--kind', 'flu'], { out: sink, err: sink });
    assert.equal(bad, 1);
    assert.equal(await synthCommand(['--seed', '1', '--kind', 'covid'], { out: sink, err: sink }), 1);
    assert.equal(await synthCommand(['--out', dir, '--seed', '1', '--kind', 'covid', '--size', '1,2'], { out: sink, err: sink }), 1);
  });
});
