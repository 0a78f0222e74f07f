import type { Geometry } from '../imaging/volume.js';

/**
 * Exact Euclidean distance (mm) from every voxel where mask ≠ 0 to the centre of the nearest voxel where
 * mask = 0 (0 for background voxels), with anisotropic spacing (Felzenszwalb & Huttenlocher's separable
 * lower-envelope algorithm, O(n)). Outside the grid counts as nothing: a mask touching the border is not
 * "closer" to the border. A mask without background gives +Infinity everywhere.
 */
export function distanceToBackgroundMm(mask: Uint8Array, geometry: Geometry): Float32Array {
  const [nx, ny, nz] = geometry.size;
  const [sx, sy, sz] = geometry.spacing;
  const n = nx * ny * nz;
  if (mask.length !== n) throw new Error(`mask has ${mask.length} voxels, geometry ${n}`);
  const d2 = new Float64Array(n);
  for (let i = 0; i < n; i++) d2[i] = mask[i] === 0 ? 0 : Number.POSITIVE_INFINITY;
  const maxLen = Math.max(nx, ny, nz);
  const f = new Float64Array(maxLen);
  const out = new Float64Array(maxLen);
  const v = new Int32Array(maxLen);
  const zb = new Float64Array(maxLen + 1);
  const pass = (len: number, stride: number, start: number, w: number) => {
    for (let q = 0; q < len; q++) f[q] = d2[start + q * stride] as number;
    edt1d(f, len, w, v, zb, out);
    for (let q = 0; q < len; q++) d2[start + q * stride] = out[q] as number;
  };
  for (let k = 0; k < nz; k++) for (let j = 0; j < ny; j++) pass(nx, 1, k * nx * ny + j * nx, sx);
  for (let k = 0; k < nz; k++) for (let i = 0; i < nx; i++) pass(ny, nx, k * nx * ny + i, sy);
  for (let j = 0; j < ny; j++) for (let i = 0; i < nx; i++) pass(nz, nx * ny, j * nx + i, sz);
  const res = new Float32Array(n);
  for (let i = 0; i < n; i++) res[i] = Math.sqrt(d2[i] as number);
  return res;
}

/** 1-D squared distance transform of f (samples w mm apart) into out. */
function edt1d(f: Float64Array, len: number, w: number, v: Int32Array, z: Float64Array, out: Float64Array): void {
  let k = -1;
  for (let q = 0; q < len; q++) {
    const fq = f[q] as number;
    if (fq === Number.POSITIVE_INFINITY) continue;
    const pq = q * w;
    let s = Number.NEGATIVE_INFINITY;
    while (k >= 0) {
      const vk = v[k] as number;
      const pv = vk * w;
      s = (fq + pq * pq - ((f[vk] as number) + pv * pv)) / (2 * (pq - pv));
      if (s > (z[k] as number)) break;
      k--;
    }
    k++;
    v[k] = q;
    z[k] = k === 0 ? Number.NEGATIVE_INFINITY : s;
    z[k + 1] = Number.POSITIVE_INFINITY;
  }
  if (k < 0) {
    out.fill(Number.POSITIVE_INFINITY, 0, len);
    return;
  }
  let j = 0;
  for (let q = 0; q < len; q++) {
    const p = q * w;
    while ((z[j + 1] as number) < p) j++;
    const vj = v[j] as number;
    const dp = p - vj * w;
    out[q] = dp * dp + (f[vj] as number);
  }
}
