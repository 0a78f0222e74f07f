/**
 * Makes a training / evaluation set for ctgate's reference models from the project's own synthetic generator
 * (src/synthetic/phantom.ts) — no downloaded data.
 *
 *   node --import tsx models/training/make-dataset.ts --out DIR --count N --seed S
 *        [--covid-fraction 0.4] [--size 160,160] [--first 0]
 *
 * Each study is the paper's preprocessing (DESIGN.md, "The paper's pipeline") applied to one phantom:
 *   1. generateChestCt(kind, seed, size [160, 160, nz], spacing [sxy, sxy, 5]) with per-study variation:
 *      in-plane spacing 2.0–2.4 mm (field of view 320–384 mm, i.e. patient size ±10 %), nz 56–64 slices
 *      (lungs ≈ 230–260 mm tall), noise σ 10–25 HU;
 *   2. resample to (1, 1, 2.5) mm (x, y, z), trilinear, and window [-1024, 350] HU → [0, 1]
 *      (src/imaging/preprocess.ts); lung and lesion masks resampled nearest onto the same grid;
 *   3. crop to the lung bounding box on that grid plus a margin of 5 voxels (5 mm) in x and y and 2 slices (5 mm)
 *      in z, clipped to the volume.
 *
 * Writes DIR/<id>/ct.npy (float32), DIR/<id>/lung.npy (uint8), DIR/<id>/lesion.npy (uint8), all C order with shape
 * (nz, ny, nx) — numpy [k, j, i] is voxel (i, j, k) — and one JSON line per study in DIR/index.jsonl:
 * { id, kind, label (1 = COVID-19-like), seed, source: {size, spacing, noiseSigma}, geometry (of the crop, LPS mm),
 *   shape, lungVoxels, lesionVoxels, lesions: [{type, radiusMm, volumeMl}] }.
 *
 * Kinds: a seeded shuffle with `--covid-fraction` covid (positive) and the rest split lobar-pneumonia 1/3,
 * nodule 1/4, healthy 1/4, old-lesion 1/6 (negatives). Study i of a split has phantom seed S·100000 + i, so
 * splits made with different --seed never share a patient.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { preprocess } from '../../src/imaging/preprocess.js';
import { resample } from '../../src/imaging/resample.js';
import type { Geometry, HuVolume } from '../../src/imaging/volume.js';
import { generateChestCt, type PhantomKind, type Vec3 } from '../../src/synthetic/phantom.js';
import { Rng } from '../../src/synthetic/prng.js';

export const TARGET_SPACING: Vec3 = [1, 1, 2.5];
export const WINDOW: [number, number] = [-1024, 350];
export const CROP_MARGIN: Vec3 = [5, 5, 2];

/** .npy (format 1.0, C order) bytes for a typed array of the given shape. */
function encodeNpy(data: Float32Array | Uint8Array, shape: readonly number[]): Buffer {
  const descr = data instanceof Float32Array ? '<f4' : '|u1';
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(', ')}), }`;
  const total = Math.ceil((10 + header.length + 1) / 64) * 64;
  header = `${header.padEnd(total - 10 - 1, ' ')}\n`;
  const pre = Buffer.alloc(total);
  pre.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0], 0);
  pre.writeUInt16LE(header.length, 8);
  pre.write(header, 10, 'latin1');
  return Buffer.concat([pre, Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

/** Bounding box [lo, hi] (inclusive) of the non-zero voxels of a mask, per axis x y z; null when empty. */
function boundingBox(mask: Uint8Array | Float32Array, size: Vec3): [Vec3, Vec3] | null {
  const [nx, ny, nz] = size;
  const lo: Vec3 = [nx, ny, nz];
  const hi: Vec3 = [-1, -1, -1];
  for (let k = 0; k < nz; k++)
    for (let j = 0; j < ny; j++) {
      const row = (k * ny + j) * nx;
      for (let i = 0; i < nx; i++) {
        if (!mask[row + i]) continue;
        if (i < lo[0]) lo[0] = i;
        if (i > hi[0]) hi[0] = i;
        if (j < lo[1]) lo[1] = j;
        if (j > hi[1]) hi[1] = j;
        if (k < lo[2]) lo[2] = k;
        if (k > hi[2]) hi[2] = k;
      }
    }
  return hi[0] < 0 ? null : [lo, hi];
}

/** Sub-block [lo, hi] (inclusive, x y z) of a volume; returns the data and the sub-block's geometry. */
function crop<T extends Float32Array | Uint8Array | Int16Array>(data: T, g: Geometry, lo: Vec3, hi: Vec3, make: (n: number) => T): { data: T; geometry: Geometry } {
  const [nx, ny] = g.size;
  const size: Vec3 = [hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1];
  const out = make(size[0] * size[1] * size[2]);
  for (let k = 0; k < size[2]; k++)
    for (let j = 0; j < size[1]; j++) {
      const src = ((lo[2] + k) * ny + lo[1] + j) * nx + lo[0];
      out.set(data.subarray(src, src + size[0]), (k * size[1] + j) * size[0]);
    }
  const d = g.direction;
  const off = [lo[0] * g.spacing[0], lo[1] * g.spacing[1], lo[2] * g.spacing[2]] as const;
  const origin: Vec3 = [
    g.origin[0] + off[0] * d[0] + off[1] * d[3] + off[2] * d[6],
    g.origin[1] + off[0] * d[1] + off[1] * d[4] + off[2] * d[7],
    g.origin[2] + off[0] * d[2] + off[1] * d[5] + off[2] * d[8],
  ];
  return { data: out, geometry: { size, spacing: [...g.spacing], origin, direction: [...g.direction] } };
}

function expand(box: [Vec3, Vec3], margin: Vec3, size: Vec3): [Vec3, Vec3] {
  const lo = box[0].map((v, a) => Math.max(0, v - (margin[a] as number))) as Vec3;
  const hi = box[1].map((v, a) => Math.min((size[a] as number) - 1, v + (margin[a] as number))) as Vec3;
  return [lo, hi];
}

function toU8(values: Float32Array): Uint8Array {
  const out = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = (values[i] as number) >= 0.5 ? 1 : 0;
  return out;
}

function kindsFor(count: number, covidFraction: number, rng: Rng): PhantomKind[] {
  const nCovid = Math.round(count * covidFraction);
  const rest = count - nCovid;
  const nLobar = Math.round(rest / 3);
  const nNodule = Math.round(rest / 4);
  const nHealthy = Math.round(rest / 4);
  const nOld = rest - nLobar - nNodule - nHealthy;
  const kinds: PhantomKind[] = [
    ...Array<PhantomKind>(nCovid).fill('covid'),
    ...Array<PhantomKind>(nLobar).fill('lobar-pneumonia'),
    ...Array<PhantomKind>(nNodule).fill('nodule'),
    ...Array<PhantomKind>(nHealthy).fill('healthy'),
    ...Array<PhantomKind>(nOld).fill('old-lesion'),
  ];
  for (let i = kinds.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [kinds[i], kinds[j]] = [kinds[j] as PhantomKind, kinds[i] as PhantomKind];
  }
  return kinds;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      out: { type: 'string' },
      count: { type: 'string' },
      seed: { type: 'string' },
      'covid-fraction': { type: 'string', default: '0.4' },
      size: { type: 'string', default: '160,160' },
      first: { type: 'string', default: '0' },
    },
  });
  if (!values.out || !values.count || !values.seed) {
    process.stderr.write('usage: make-dataset.ts --out DIR --count N --seed S [--covid-fraction 0.4] [--size 160,160]\n');
    process.exit(2);
  }
  const out = values.out;
  const count = Number(values.count);
  const seed = Number(values.seed);
  const [nx, ny] = (values.size as string).split(',').map(Number) as [number, number];
  const kinds = kindsFor(count, Number(values['covid-fraction']), new Rng(seed, 77));
  await mkdir(out, { recursive: true });
  const lines: string[] = [];
  const t0 = Date.now();
  for (let i = Number(values.first); i < count; i++) {
    const kind = kinds[i] as PhantomKind;
    const studySeed = seed * 100000 + i;
    const vary = new Rng(studySeed, 99);
    const sxy = Math.round(vary.uniform(2.0, 2.4) * 1000) / 1000;
    const nz = vary.int(56, 64);
    const noiseSigma = Math.round(vary.uniform(10, 25));
    const size: Vec3 = [nx, ny, nz];
    const spacing: Vec3 = [sxy, sxy, 5];
    const ph = generateChestCt({ seed: studySeed, kind, size, spacing, noiseSigma });
    // Crop the source around the lungs first (generous margin) so the resampling only touches the chest.
    const g0 = ph.volume.geometry;
    const box0 = boundingBox(ph.lungMask, g0.size);
    if (!box0) throw new Error(`study ${studySeed}: empty lung mask`);
    const [lo0, hi0] = expand(box0, [4, 4, 2], g0.size);
    const src = crop(ph.volume.data, g0, lo0, hi0, (n) => new Int16Array(n));
    const srcLung = crop(ph.lungMask, g0, lo0, hi0, (n) => new Uint8Array(n));
    const srcLesion = crop(ph.lesionMask, g0, lo0, hi0, (n) => new Uint8Array(n));
    const volume: HuVolume = { geometry: src.geometry, data: src.data };
    const pre = preprocess(volume, { spacing: TARGET_SPACING, window: WINDOW });
    const lung = toU8(resample(srcLung.data, src.geometry, pre.geometry, 'nearest'));
    const lesion = toU8(resample(srcLesion.data, src.geometry, pre.geometry, 'nearest'));
    for (let v = 0; v < lesion.length; v++) if (!lung[v]) lesion[v] = 0;
    const box = boundingBox(lung, pre.geometry.size);
    if (!box) throw new Error(`study ${studySeed}: empty resampled lung mask`);
    const [lo, hi] = expand(box, CROP_MARGIN, pre.geometry.size);
    const ct = crop(pre.data, pre.geometry, lo, hi, (n) => new Float32Array(n));
    const lungC = crop(lung, pre.geometry, lo, hi, (n) => new Uint8Array(n));
    const lesionC = crop(lesion, pre.geometry, lo, hi, (n) => new Uint8Array(n));
    const [cx, cy, cz] = ct.geometry.size;
    const shape = [cz, cy, cx];
    const id = `s${seed}-${String(i).padStart(4, '0')}`;
    const dir = join(out, id);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'ct.npy'), encodeNpy(ct.data, shape));
    await writeFile(join(dir, 'lung.npy'), encodeNpy(lungC.data, shape));
    await writeFile(join(dir, 'lesion.npy'), encodeNpy(lesionC.data, shape));
    let lungVoxels = 0;
    let lesionVoxels = 0;
    for (let v = 0; v < lungC.data.length; v++) {
      lungVoxels += lungC.data[v] as number;
      lesionVoxels += lesionC.data[v] as number;
    }
    const line = {
      id,
      kind,
      label: kind === 'covid' ? 1 : 0,
      seed: studySeed,
      source: { size, spacing, noiseSigma },
      geometry: ct.geometry,
      shape,
      lungVoxels,
      lesionVoxels,
      lesions: ph.lesions.map((l) => ({ type: l.type, radiusMm: Math.round(l.radiusMm * 10) / 10, volumeMl: l.volumeMl })),
    };
    lines.push(JSON.stringify(line));
    process.stdout.write(`${id} ${kind.padEnd(15)} shape ${shape.join('x')} lesion ${lesionVoxels} (${((Date.now() - t0) / 1000).toFixed(1)} s)\n`);
  }
  await writeFile(join(out, 'index.jsonl'), `${lines.join('\n')}\n`);
}

await main();
