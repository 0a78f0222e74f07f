import { squaredDistanceTo } from '../imaging/distance.js';
import type { Geometry } from '../imaging/volume.js';

/**
 * Exact Euclidean distance (mm) from every voxel where mask ≠ 0 to the centre of the nearest voxel where
 * mask = 0 (0 for background voxels), with anisotropic spacing (Felzenszwalb & Huttenlocher's separable
 * lower-envelope algorithm, O(n)). Outside the grid counts as nothing: a mask touching the border is not
 * "closer" to the border. A mask without background gives +Infinity everywhere.
 */
export function distanceToBackgroundMm(mask: Uint8Array, geometry: Geometry): Float32Array {
  const n = geometry.size[0] * geometry.size[1] * geometry.size[2];
  if (mask.length !== n) throw new Error(`mask has ${mask.length} voxels, geometry ${n}`);
  const background = new Uint8Array(n);
  for (let i = 0; i < n; i++) background[i] = mask[i] === 0 ? 1 : 0;
  const d2 = squaredDistanceTo(background, geometry.size, geometry.spacing);
  const res = new Float32Array(n);
  for (let i = 0; i < n; i++) res[i] = Math.sqrt(d2[i] as number);
  return res;
}
