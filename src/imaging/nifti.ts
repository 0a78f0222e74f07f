/**
 * A minimal NIfTI-1 reader (single-file .nii or .nii.gz; int16 or uint8; sform affine), converted from RAS to
 * DICOM's LPS: what ctgate needs to turn a research volume (the TotalSegmentator example) into a CT series.
 */
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import type { Geometry } from './volume.js';

export interface Nifti {
  geometry: Geometry;
  data: Int16Array | Uint8Array;
}

export function readNifti(file: string): Nifti {
  const raw = readFileSync(file);
  const b = raw[0] === 0x1f && raw[1] === 0x8b ? gunzipSync(raw) : raw;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (v.getInt32(0, true) !== 348) throw new Error(`${file}: not a little-endian NIfTI-1 file`);
  const dim = [1, 2, 3].map((i) => v.getInt16(40 + 2 * i, true)) as [number, number, number];
  const datatype = v.getInt16(70, true);
  const voxOffset = v.getFloat32(108, true);
  const slope = v.getFloat32(112, true);
  const inter = v.getFloat32(116, true);
  if (v.getInt16(254, true) <= 0) throw new Error(`${file}: no sform (the affine ctgate needs)`);
  const srow = [280, 296, 312].map((o) => [0, 1, 2, 3].map((c) => v.getFloat32(o + 4 * c, true)));
  // RAS → LPS: negate the first two rows of the affine.
  const lps = srow.map((row, r) => row.map((x) => (r < 2 ? -x : x)));
  const col = (c: number) => [0, 1, 2].map((r) => (lps[r] as number[])[c] as number);
  const spacing = [0, 1, 2].map((c) => Math.hypot(...col(c))) as [number, number, number];
  const direction = [0, 1, 2].flatMap((c) => col(c).map((x) => x / (spacing[c] as number))) as Geometry['direction'];
  const origin = col(3) as [number, number, number];
  const n = dim[0] * dim[1] * dim[2];
  let data: Int16Array | Uint8Array;
  if (datatype === 4) {
    data = new Int16Array(n);
    for (let i = 0; i < n; i++) data[i] = Math.round(v.getInt16(voxOffset + 2 * i, true) * (slope || 1) + inter);
  } else if (datatype === 2) {
    data = Uint8Array.from(b.subarray(voxOffset, voxOffset + n));
  } else throw new Error(`NIfTI datatype ${datatype} not handled`);
  return { geometry: { size: dim, spacing, origin, direction }, data };
}
