import type { Geometry } from './volume.js';

type Voxels = Int16Array | Uint8Array | Float32Array;

/** Per-axis interpolation table: output index → two input indices and the weight of the second. */
interface AxisTable {
  i0: Int32Array;
  i1: Int32Array;
  w: Float32Array;
}

function axisTable(nOut: number, nIn: number, start: number, step: number, nearest: boolean): AxisTable {
  const i0 = new Int32Array(nOut);
  const i1 = new Int32Array(nOut);
  const w = new Float32Array(nOut);
  for (let o = 0; o < nOut; o++) {
    // Continuous input index; clamp so the edges repeat rather than read outside the volume.
    const x = Math.min(Math.max(start + o * step, 0), nIn - 1);
    if (nearest) {
      const r = Math.min(Math.round(x), nIn - 1);
      i0[o] = r;
      i1[o] = r;
      w[o] = 0;
    } else {
      const f = Math.floor(x);
      const a = Math.min(f, nIn - 1);
      i0[o] = a;
      i1[o] = Math.min(a + 1, nIn - 1);
      w[o] = x - a;
    }
  }
  return { i0, i1, w };
}

/**
 * The grid a volume takes at `spacing`: same origin and direction, covering the same extent (first to last
 * voxel centre along each axis).
 */
export function resampledGeometry(g: Geometry, spacing: [number, number, number]): Geometry {
  const size = g.size.map((n, a) => Math.max(1, Math.floor(((n - 1) * (g.spacing[a] as number)) / (spacing[a] as number) + 1e-6) + 1)) as Geometry['size'];
  return { size, spacing: [...spacing], origin: [...g.origin], direction: [...g.direction] };
}

/**
 * Resamples between two grids that share a direction (as a volume and its model grid do): trilinear, or nearest
 * neighbour for label masks. Done as three separable 1-D passes (z, then y, then x) — the same result as direct
 * trilinear interpolation at a fraction of the memory traffic.
 */
export function resample(src: Voxels, from: Geometry, to: Geometry, mode: 'linear' | 'nearest' = 'linear'): Float32Array {
  const [nx, ny, nz] = from.size;
  const [mx, my, mz] = to.size;
  const nearest = mode === 'nearest';
  // Output axis a starts at (to.origin − from.origin)·dir_a / from.spacing_a in input index units.
  const d = from.direction;
  const [o0, o1, o2] = [to.origin[0] - from.origin[0], to.origin[1] - from.origin[1], to.origin[2] - from.origin[2]];
  const start = (a: number) => (o0 * (d[3 * a] as number) + o1 * (d[3 * a + 1] as number) + o2 * (d[3 * a + 2] as number)) / (from.spacing[a] as number);
  const tx = axisTable(mx, nx, start(0), to.spacing[0] / from.spacing[0], nearest);
  const ty = axisTable(my, ny, start(1), to.spacing[1] / from.spacing[1], nearest);
  const tz = axisTable(mz, nz, start(2), to.spacing[2] / from.spacing[2], nearest);
  const plane = nx * ny;

  // Pass 1: along z → nx × ny × mz
  const a = new Float32Array(plane * mz);
  for (let k = 0; k < mz; k++) {
    const s0 = (tz.i0[k] as number) * plane;
    const s1 = (tz.i1[k] as number) * plane;
    const w = tz.w[k] as number;
    const o = k * plane;
    if (w === 0) for (let i = 0; i < plane; i++) a[o + i] = src[s0 + i] as number;
    else
      for (let i = 0; i < plane; i++) {
        const v0 = src[s0 + i] as number;
        a[o + i] = v0 + w * ((src[s1 + i] as number) - v0);
      }
  }
  // Pass 2: along y → nx × my × mz
  const b = new Float32Array(nx * my * mz);
  for (let k = 0; k < mz; k++) {
    for (let j = 0; j < my; j++) {
      const r0 = k * plane + (ty.i0[j] as number) * nx;
      const r1 = k * plane + (ty.i1[j] as number) * nx;
      const w = ty.w[j] as number;
      const o = (k * my + j) * nx;
      for (let i = 0; i < nx; i++) {
        const v0 = a[r0 + i] as number;
        b[o + i] = v0 + w * ((a[r1 + i] as number) - v0);
      }
    }
  }
  // Pass 3: along x → mx × my × mz
  const out = new Float32Array(mx * my * mz);
  const rows = my * mz;
  for (let r = 0; r < rows; r++) {
    const base = r * nx;
    const o = r * mx;
    for (let i = 0; i < mx; i++) {
      const v0 = b[base + (tx.i0[i] as number)] as number;
      out[o + i] = v0 + (tx.w[i] as number) * ((b[base + (tx.i1[i] as number)] as number) - v0);
    }
  }
  return out;
}
