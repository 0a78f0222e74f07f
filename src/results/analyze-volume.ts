/**
 * One analysis for the worker's analyze stage and `ctgate analyze`: a series volume through the screening models,
 * then what every result needs from it (the analysis, the source series and the key images with their overlay).
 * Where the volume came from (PACS, received files, files on disk) and where the results go is the caller's.
 */
import type { SliceMeta } from '../imaging/slices.js';
import type { HuVolume } from '../imaging/volume.js';
import { keyImagePng } from '../inference/key-images.js';
import type { Manifest } from '../inference/manifest.js';
import { type PipelineModels, type PipelineResult, type Progress, runPipeline } from '../inference/pipeline.js';
import { type Analysis, analysisOf, type KeyImage, type SourceSeries } from './context.js';

export interface VolumeToAnalyse {
  volume: HuVolume;
  /** Slices in volume z order. */
  slices: SliceMeta[];
  seriesInstanceUid: string;
  seriesNumber?: number;
  seriesDescription?: string;
  /** SOP Class UID of the CT images the results reference. */
  sopClassUid: string;
}

export interface AnalyseOptions {
  keySliceCount?: number;
  onProgress?: (p: Progress) => void;
}

export interface VolumeAnalysis {
  result: PipelineResult;
  analysis: Analysis;
  series: SourceSeries;
  keyImages: KeyImage[];
  /** Time in the models (runPipeline) and in rendering the key images. */
  modelMs: number;
  keyImagesMs: number;
}

/** The key slices as PNGs with the lesion overlay; none without findings or a lesion mask. */
function keyImagesOf(input: VolumeToAnalyse, result: PipelineResult): KeyImage[] {
  const mask = result.lesionMask;
  if (!mask || !result.findings) return [];
  return result.findings.keySlices.map((k) => ({
    sliceIndex: k.index,
    sopInstanceUid: input.slices[k.index]?.sopInstanceUid ?? '',
    lesionAreaMm2: k.lesionAreaMm2,
    png: keyImagePng(input.volume, k.index, mask),
  }));
}

export async function analyzeVolume(
  input: VolumeToAnalyse,
  models: PipelineModels,
  manifest: Pick<Manifest, 'lung' | 'lesion' | 'classifier'>,
  opts: AnalyseOptions = {},
): Promise<VolumeAnalysis> {
  const t0 = performance.now();
  const result = await runPipeline(input.volume, models, opts);
  const modelMs = performance.now() - t0;
  const keyImages = keyImagesOf(input, result);
  const series: SourceSeries = {
    seriesInstanceUid: input.seriesInstanceUid,
    seriesNumber: input.seriesNumber,
    seriesDescription: input.seriesDescription,
    frameOfReferenceUid: input.slices[0]?.frameOfReferenceUid ?? '',
    sopClassUid: input.sopClassUid,
    slices: input.slices,
    geometry: input.volume.geometry,
  };
  return { result, analysis: analysisOf(result, manifest), series, keyImages, modelMs, keyImagesMs: performance.now() - t0 - modelMs };
}
