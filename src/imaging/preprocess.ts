import { resample, resampledGeometry } from './resample.js';
import type { Geometry, HuVolume } from './volume.js';

/** Preprocessing a model expects, as its manifest states it (DESIGN.md: 1×1×2.5 mm, HU windows, [0, 1]). */
export interface PreprocessSpec {
  /** Target voxel spacing in mm, x y z. */
  spacing: [number, number, number];
  /** HU window [min, max], mapped to [0, 1] with clipping. */
  window: [number, number];
}

export interface ModelInput {
  geometry: Geometry;
  /** Windowed and scaled to [0, 1], x fastest. */
  data: Float32Array;
}

/** Clips HU to the window and scales it to [0, 1], in place. */
export function applyWindow(hu: Float32Array, window: [number, number]): Float32Array {
  const [lo, hi] = window;
  if (!(hi > lo)) throw new Error(`window [${lo}, ${hi}] is empty`);
  const scale = 1 / (hi - lo);
  for (let i = 0; i < hu.length; i++) {
    const v = hu[i] as number;
    hu[i] = v <= lo ? 0 : v >= hi ? 1 : (v - lo) * scale;
  }
  return hu;
}

/** Resamples a HU volume to the spec's spacing (trilinear) and windows it: the model's input grid. */
export function preprocess(volume: HuVolume, spec: PreprocessSpec): ModelInput {
  const geometry = resampledGeometry(volume.geometry, spec.spacing);
  const data = applyWindow(resample(volume.data, volume.geometry, geometry, 'linear'), spec.window);
  return { geometry, data };
}

/**
 * Maps a model-grid map (probabilities or labels) back onto the original slices' grid — the inverse of
 * preprocess's resampling, used to place a lesion mask on the source images for the SEG.
 */
export function toOriginalGrid(
  values: Float32Array | Uint8Array,
  modelGrid: Geometry,
  original: Geometry,
  mode: 'linear' | 'nearest' = 'linear',
): Float32Array {
  return resample(values, modelGrid, original, mode);
}
