/**
 * Masks on disk: NumPy .npy (format 1.0), dtype uint8 ('|u1'), C order, shape (nz, ny, nx) — so
 * numpy.load(path)[k, j, i] is voxel (i, j, k), the same indexing as HuVolume.data — plus masks.json beside
 * them with the geometry (size, spacing, origin, direction in LPS mm) and what each file holds.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Geometry } from '../imaging/volume.js';

export interface MaskSet {
  geometry: Geometry;
  lungMask: Uint8Array;
  lesionMask: Uint8Array;
}

export interface MasksSidecar {
  format: 'npy-u1';
  geometry: Geometry;
  /** numpy shape of every file: [nz, ny, nx]. */
  shape: [number, number, number];
  files: { lung: string; lesion: string };
  description: string;
}

/** .npy bytes for a uint8 array of the given C-order shape. */
export function encodeNpyU8(data: Uint8Array, shape: readonly number[]): Uint8Array {
  return encodeNpy(data, shape);
}

/** .npy bytes (little-endian) for a uint8 or float32 array of the given C-order shape. */
export function encodeNpy(data: Uint8Array | Float32Array, shape: readonly number[]): Uint8Array {
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== data.length) throw new Error(`shape ${shape.join('×')} holds ${count} values, data has ${data.length}`);
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  const descr = data instanceof Float32Array ? '<f4' : '|u1';
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  // Magic (6) + version (2) + header length (2) + header, padded with spaces and ending in \n to a multiple of 64.
  const total = Math.ceil((10 + header.length + 1) / 64) * 64;
  header = `${header.padEnd(total - 10 - 1, ' ')}\n`;
  const out = new Uint8Array(total + data.byteLength);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0], 0);
  out[8] = header.length & 0xff;
  out[9] = header.length >> 8;
  for (let i = 0; i < header.length; i++) out[10 + i] = header.charCodeAt(i);
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), total);
  return out;
}

/** Reads a uint8 .npy (format 1.x, C order) as written by encodeNpyU8. */
export function decodeNpyU8(bytes: Uint8Array): { shape: number[]; data: Uint8Array } {
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];
  if (bytes.length < 10 || magic.some((m, i) => bytes[i] !== m)) throw new Error('not a .npy file');
  if (bytes[6] !== 1) throw new Error(`unsupported .npy version ${bytes[6]}`);
  const headerLen = (bytes[8] as number) | ((bytes[9] as number) << 8);
  const header = Buffer.from(bytes.subarray(10, 10 + headerLen)).toString('latin1');
  if (!/'descr':\s*'\|u1'/.test(header)) throw new Error(`not a uint8 .npy: ${header.trim()}`);
  if (/'fortran_order':\s*True/.test(header)) throw new Error('Fortran-order .npy is not supported');
  const m = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!m) throw new Error('no shape in .npy header');
  const shape = (m[1] as string)
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const start = 10 + headerLen;
  if (bytes.length - start !== count) throw new Error(`.npy holds ${bytes.length - start} bytes, shape needs ${count}`);
  // A plain Uint8Array copy (not a Buffer view of the file), like the masks generateChestCt returns.
  return { shape, data: new Uint8Array(bytes.subarray(start)) };
}

/** Writes DIR/lung-mask.npy, DIR/lesion-mask.npy and DIR/masks.json; returns the sidecar. */
export async function writeMasks(dir: string, masks: MaskSet): Promise<MasksSidecar> {
  const [nx, ny, nz] = masks.geometry.size;
  const shape: [number, number, number] = [nz, ny, nx];
  await mkdir(dir, { recursive: true });
  const files = { lung: 'lung-mask.npy', lesion: 'lesion-mask.npy' };
  await writeFile(join(dir, files.lung), encodeNpyU8(masks.lungMask, shape));
  await writeFile(join(dir, files.lesion), encodeNpyU8(masks.lesionMask, shape));
  const sidecar: MasksSidecar = {
    format: 'npy-u1',
    geometry: masks.geometry,
    shape,
    files,
    description:
      'uint8 masks, numpy shape (nz, ny, nx): array[k, j, i] is voxel (i, j, k), at patient position origin + i·spacing[0]·row + j·spacing[1]·col + k·spacing[2]·normal (LPS mm). lung: 1 = lung parenchyma incl. lesions; lesion: 1 = any lesion.',
  };
  await writeFile(join(dir, 'masks.json'), `${JSON.stringify(sidecar, null, 2)}\n`);
  return sidecar;
}

/** Reads what writeMasks wrote. */
export async function readMasks(dir: string): Promise<MaskSet> {
  const sidecar = JSON.parse(await readFile(join(dir, 'masks.json'), 'utf8')) as MasksSidecar;
  const lung = decodeNpyU8(await readFile(join(dir, sidecar.files.lung)));
  const lesion = decodeNpyU8(await readFile(join(dir, sidecar.files.lesion)));
  return { geometry: sidecar.geometry, lungMask: lung.data, lesionMask: lesion.data };
}
