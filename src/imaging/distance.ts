/** 1-D squared distance transform (Felzenszwalb & Huttenlocher) of f (samples w mm apart) into out. */
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

/**
 * Squared Euclidean distance (mm²) of every voxel to the nearest target voxel (targets[i] ≠ 0; 0 on targets),
 * over a grid of up to three axes with the given spacings. Outside the grid counts as nothing. No target
 * anywhere gives +Infinity everywhere.
 */
export function squaredDistanceTo(targets: Uint8Array, size: readonly number[], spacing: readonly number[]): Float64Array {
  const [nx = 1, ny = 1, nz = 1] = size;
  const [sx = 1, sy = 1, sz = 1] = spacing;
  const n = nx * ny * nz;
  if (targets.length !== n) throw new Error(`mask has ${targets.length} voxels, size ${nx}×${ny}×${nz}`);
  const d2 = new Float64Array(n);
  const inf = Number.POSITIVE_INFINITY;
  for (let i = 0; i < n; i++) d2[i] = targets[i] !== 0 ? 0 : inf;
  const maxLen = Math.max(nx, ny, nz);
  const f = new Float64Array(maxLen);
  const out = new Float64Array(maxLen);
  const v = new Int32Array(maxLen);
  const zb = new Float64Array(maxLen + 1);
  const pass = (len: number, stride: number, start: number, w: number) => {
    let any = false;
    for (let q = 0; q < len; q++) {
      const x = d2[start + q * stride] as number;
      f[q] = x;
      if (x !== inf) any = true;
    }
    if (!any) return; // nothing to propagate along this line: it stays +Infinity
    edt1d(f, len, w, v, zb, out);
    for (let q = 0; q < len; q++) d2[start + q * stride] = out[q] as number;
  };
  const nxy = nx * ny;
  if (nx > 1) for (let k = 0; k < nz; k++) for (let j = 0; j < ny; j++) pass(nx, 1, k * nxy + j * nx, sx);
  if (ny > 1) for (let k = 0; k < nz; k++) for (let i = 0; i < nx; i++) pass(ny, nx, k * nxy + i, sy);
  if (nz > 1) for (let j = 0; j < ny; j++) for (let i = 0; i < nx; i++) pass(nz, nxy, j * nx + i, sz);
  return d2;
}
