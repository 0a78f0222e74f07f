/**
 * Patch-wise inference over a volume larger than the model's patch: overlapping tiles, each padded to the
 * model's size multiple, probabilities averaged where tiles overlap. The model is any async function
 * (an ONNX session in production, a stand-in in tests).
 */

/** A one-channel model on one tile: input and output are d × h × w float32, x fastest. */
export type TileRun = (input: Float32Array, dims: [number, number, number]) => Promise<Float32Array>;

export interface TileSpec {
  /** Tile size in voxels, z y x (the model's patch). */
  patch: readonly [number, number, number];
  /** Voxels shared by neighbouring tiles, z y x. */
  overlap: readonly [number, number, number];
  /** Every tile dimension the model sees is a multiple of this (padding added at the far end). */
  multipleOf: number;
  /** Value of padded voxels (0 = the bottom of the window: air). */
  padValue?: number;
}

export interface AxisTiles {
  /** First voxel of each tile along the axis. */
  starts: number[];
  /** Voxels of the volume each tile covers. */
  length: number;
  /** Length after padding to the size multiple (what the model sees). */
  padded: number;
}

/**
 * Tiles along one axis of n voxels: one tile when n fits the patch (padded up to the multiple); otherwise full
 * patches every (patch − overlap) voxels, the last one moved back to end at the volume's edge.
 */
export function axisTiles(n: number, patch: number, overlap: number, multipleOf: number): AxisTiles {
  if (n < 1) throw new Error('cannot tile an empty axis');
  if (n <= patch) return { starts: [0], length: n, padded: Math.ceil(n / multipleOf) * multipleOf };
  const stride = patch - overlap;
  if (stride < 1) throw new Error(`overlap ${overlap} leaves no stride in a patch of ${patch}`);
  const starts: number[] = [];
  for (let s = 0; s + patch < n; s += stride) starts.push(s);
  const last = n - patch;
  if (starts[starts.length - 1] !== last) starts.push(last);
  return { starts, length: patch, padded: Math.ceil(patch / multipleOf) * multipleOf };
}

/** How many tiles a volume of size [nx, ny, nz] takes. */
export function tileCount(size: readonly [number, number, number], spec: TileSpec): number {
  const [nx, ny, nz] = size;
  const m = spec.multipleOf;
  return (
    axisTiles(nz, spec.patch[0], spec.overlap[0], m).starts.length *
    axisTiles(ny, spec.patch[1], spec.overlap[1], m).starts.length *
    axisTiles(nx, spec.patch[2], spec.overlap[2], m).starts.length
  );
}

/** Per-voxel count of the tiles covering each index along one axis. */
function coverage(n: number, t: AxisTiles): Float64Array {
  const c = new Float64Array(n);
  for (const s of t.starts) for (let i = s; i < Math.min(n, s + t.length); i++) c[i] = (c[i] as number) + 1;
  return c;
}

/**
 * Runs `run` on every tile of `volume` (size [nx, ny, nz], x fastest) and returns the per-voxel mean of the
 * tiles' outputs. Sums are kept in float64, so a model that returns its input gives the input back exactly.
 */
export async function runTiled(
  volume: Float32Array,
  size: readonly [number, number, number],
  spec: TileSpec,
  run: TileRun,
  onTile?: (done: number, total: number) => void,
): Promise<Float32Array> {
  const [nx, ny, nz] = size;
  const nxy = nx * ny;
  if (volume.length !== nxy * nz) throw new Error(`volume has ${volume.length} voxels, size ${nx}×${ny}×${nz}`);
  const m = spec.multipleOf;
  const tz = axisTiles(nz, spec.patch[0], spec.overlap[0], m);
  const ty = axisTiles(ny, spec.patch[1], spec.overlap[1], m);
  const tx = axisTiles(nx, spec.patch[2], spec.overlap[2], m);
  const [pd, ph, pw] = [tz.padded, ty.padded, tx.padded];
  const [ld, lh, lw] = [tz.length, ty.length, tx.length];
  const sum = new Float64Array(nxy * nz);
  const tile = new Float32Array(pd * ph * pw);
  const pad = spec.padValue ?? 0;
  const total = tz.starts.length * ty.starts.length * tx.starts.length;
  let done = 0;
  for (const z0 of tz.starts)
    for (const y0 of ty.starts)
      for (const x0 of tx.starts) {
        tile.fill(pad);
        for (let z = 0; z < ld; z++)
          for (let y = 0; y < lh; y++) {
            const src = (z0 + z) * nxy + (y0 + y) * nx + x0;
            tile.set(volume.subarray(src, src + lw), (z * ph + y) * pw);
          }
        const out = await run(tile, [pd, ph, pw]);
        if (out.length !== tile.length) throw new Error(`the model returned ${out.length} values for a ${pd}×${ph}×${pw} tile`);
        for (let z = 0; z < ld; z++)
          for (let y = 0; y < lh; y++) {
            const dst = (z0 + z) * nxy + (y0 + y) * nx + x0;
            const o = (z * ph + y) * pw;
            for (let x = 0; x < lw; x++) sum[dst + x] = (sum[dst + x] as number) + (out[o + x] as number);
          }
        done++;
        onTile?.(done, total);
      }
  const cz = coverage(nz, tz);
  const cy = coverage(ny, ty);
  const cx = coverage(nx, tx);
  const result = new Float32Array(nxy * nz);
  for (let z = 0; z < nz; z++)
    for (let y = 0; y < ny; y++) {
      const czy = (cz[z] as number) * (cy[y] as number);
      const row = z * nxy + y * nx;
      for (let x = 0; x < nx; x++) result[row + x] = (sum[row + x] as number) / (czy * (cx[x] as number));
    }
  return result;
}
