import { squaredDistanceTo } from '../imaging/distance.js';

/**
 * Binary-mask tools for the lung and findings steps: connected components, exact Euclidean distance
 * transforms (2-D and 3-D, anisotropic), per-slice hole filling and closing. Masks are Uint8Array (0 / non-0),
 * x fastest, as every volume in ctgate.
 */

/** Grows as needed; a stack of voxel indices for flood fills. */
class IndexStack {
  private buf: Int32Array;
  length = 0;
  constructor(capacity = 1 << 16) {
    this.buf = new Int32Array(capacity);
  }
  push(v: number): void {
    if (this.length === this.buf.length) {
      const next = new Int32Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.length++] = v;
  }
  pop(): number {
    return this.buf[--this.length] as number;
  }
}

export interface Components {
  /** 0 = background, 1..count = component (numbered in scan order). */
  labels: Int32Array;
  /** sizes[c − 1] = voxels of component c. */
  sizes: number[];
}

/**
 * 3-D connected components of mask ≠ 0: 6-connectivity (faces) or 26 (faces, edges and corners).
 */
export function label3d(mask: Uint8Array, size: readonly [number, number, number], connectivity: 6 | 26 = 6): Components {
  const [nx, ny, nz] = size;
  const nxy = nx * ny;
  if (mask.length !== nxy * nz) throw new Error(`mask has ${mask.length} voxels, size ${nx}×${ny}×${nz}`);
  const labels = new Int32Array(mask.length);
  const sizes: number[] = [];
  const stack = new IndexStack();
  const offsets: [number, number, number][] = [];
  for (let dz = -1; dz <= 1; dz++)
    for (let dy = -1; dy <= 1; dy++)
      for (let dx = -1; dx <= 1; dx++) {
        const n = Math.abs(dx) + Math.abs(dy) + Math.abs(dz);
        if (n === 0 || (connectivity === 6 && n > 1)) continue;
        offsets.push([dx, dy, dz]);
      }
  const deltas = Int32Array.from(offsets.map(([dx, dy, dz]) => dx + dy * nx + dz * nxy));
  let next = 0;
  const visit = (q: number) => {
    if (mask[q] !== 0 && labels[q] === 0) {
      labels[q] = next;
      stack.push(q);
    }
  };
  for (let start = 0; start < mask.length; start++) {
    if (mask[start] === 0 || labels[start] !== 0) continue;
    next++;
    labels[start] = next;
    stack.push(start);
    let count = 0;
    while (stack.length > 0) {
      const p = stack.pop();
      count++;
      const z = Math.floor(p / nxy);
      const r = p - z * nxy;
      const y = Math.floor(r / nx);
      const x = r - y * nx;
      if (connectivity === 6) {
        // Faces only: the common case and the hot loop of the lung step.
        if (x > 0) visit(p - 1);
        if (x < nx - 1) visit(p + 1);
        if (y > 0) visit(p - nx);
        if (y < ny - 1) visit(p + nx);
        if (z > 0) visit(p - nxy);
        if (z < nz - 1) visit(p + nxy);
        continue;
      }
      if (x > 0 && y > 0 && z > 0 && x < nx - 1 && y < ny - 1 && z < nz - 1) {
        for (let o = 0; o < deltas.length; o++) visit(p + (deltas[o] as number));
        continue;
      }
      for (const [dx, dy, dz] of offsets) {
        const xx = x + dx;
        const yy = y + dy;
        const zz = z + dz;
        if (xx < 0 || yy < 0 || zz < 0 || xx >= nx || yy >= ny || zz >= nz) continue;
        visit(p + dx + dy * nx + dz * nxy);
      }
    }
    sizes.push(count);
  }
  return { labels, sizes };
}

/**
 * Marks (in `out`, set to 1) the pixels of one w×h slice that are `value` (0, or non-0 for 1) in `src` and
 * 4-connected to the slice border through such pixels. src and out are views of one slice; `stack` is scratch
 * space of at least w·h entries (made when not given).
 */
export function floodFromBorder2d(src: Uint8Array, w: number, h: number, value: 0 | 1, out: Uint8Array, stack?: Int32Array): void {
  const n = w * h;
  const st = stack && stack.length >= n ? stack : new Int32Array(n);
  const want = value !== 0;
  let sp = 0;
  // Every pixel is pushed at most once (it is marked when pushed), so n entries suffice.
  const seedAt = (p: number) => {
    if (out[p] === 0 && (src[p] !== 0) === want) {
      out[p] = 1;
      st[sp++] = p;
    }
  };
  for (let x = 0; x < w; x++) {
    seedAt(x);
    seedAt((h - 1) * w + x);
  }
  for (let y = 1; y < h - 1; y++) {
    seedAt(y * w);
    seedAt(y * w + w - 1);
  }
  while (sp > 0) {
    const p = st[--sp] as number;
    const x = p % w;
    let q = p - 1;
    if (x > 0 && out[q] === 0 && (src[q] !== 0) === want) {
      out[q] = 1;
      st[sp++] = q;
    }
    q = p + 1;
    if (x < w - 1 && out[q] === 0 && (src[q] !== 0) === want) {
      out[q] = 1;
      st[sp++] = q;
    }
    q = p - w;
    if (q >= 0 && out[q] === 0 && (src[q] !== 0) === want) {
      out[q] = 1;
      st[sp++] = q;
    }
    q = p + w;
    if (q < n && out[q] === 0 && (src[q] !== 0) === want) {
      out[q] = 1;
      st[sp++] = q;
    }
  }
}

/** Fills the holes (background not 4-connected to the slice border) of a w×h slice mask, in place. */
export function fillHoles2d(mask: Uint8Array, w: number, h: number, scratch?: Uint8Array, stack?: Int32Array): void {
  const n = w * h;
  const reached = scratch && scratch.length >= n ? scratch.subarray(0, n) : new Uint8Array(n);
  reached.fill(0);
  floodFromBorder2d(mask, w, h, 0, reached, stack);
  for (let p = 0; p < n; p++) if (reached[p] === 0) mask[p] = 1;
}

/**
 * Morphological closing of a w×h slice mask with a disk of radius r mm (Euclidean, pixel spacing sx × sy), in
 * place. The caller leaves at least ceil(r / min(sx, sy)) + 1 background pixels around the mask so the disk
 * never meets the slice border.
 */
export function close2d(mask: Uint8Array, w: number, h: number, sx: number, sy: number, r: number): void {
  const r2 = r * r + 1e-9;
  const toMask = squaredDistanceTo(mask, [w, h], [sx, sy]);
  // outsideDilated = 1 where the dilation by r does not reach.
  const outsideDilated = new Uint8Array(w * h);
  for (let i = 0; i < w * h; i++) outsideDilated[i] = (toMask[i] as number) <= r2 ? 0 : 1;
  const toOutside = squaredDistanceTo(outsideDilated, [w, h], [sx, sy]);
  for (let i = 0; i < w * h; i++) if ((toOutside[i] as number) > r2) mask[i] = 1;
}

/** Bounding box [x0, y0, z0, x1, y1, z1] (inclusive) of non-zero voxels; null when none. */
export function boundingBox(mask: Uint8Array, size: readonly [number, number, number]): [number, number, number, number, number, number] | null {
  const [nx, ny, nz] = size;
  let x0 = nx;
  let y0 = ny;
  let z0 = nz;
  let x1 = -1;
  let y1 = -1;
  let z1 = -1;
  for (let z = 0; z < nz; z++)
    for (let y = 0; y < ny; y++) {
      const row = (z * ny + y) * nx;
      for (let x = 0; x < nx; x++) {
        if (mask[row + x] === 0) continue;
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
        if (z < z0) z0 = z;
        if (z > z1) z1 = z;
      }
    }
  return x1 < 0 ? null : [x0, y0, z0, x1, y1, z1];
}

export { squaredDistanceTo };
