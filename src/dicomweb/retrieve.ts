import { allocateVolume, fillSlice, planVolume, type SliceMeta, type VolumePlan } from '../imaging/slices.js';
import type { HuVolume } from '../imaging/volume.js';
import { type DicomWebClient, EXPLICIT_VR_BE } from './client.js';
import { mapLimit } from './errors.js';
import { sliceMetaFromJson } from './metadata.js';

export interface RetrievedSeries {
  volume: HuVolume;
  plan: VolumePlan;
  /** Slice metadata in volume z order (slices[k] is z index k): what maps results back to the source images. */
  slices: SliceMeta[];
}

export interface RetrieveOptions {
  concurrency: number;
  onProgress?: (done: number, total: number) => void;
}

/**
 * Pulls one CT series into a HU volume: series metadata first (to order the slices and size the volume), then
 * every frame uncompressed, written straight into place. Peak memory is the volume plus `concurrency` frames.
 */
export async function retrieveVolume(client: DicomWebClient, studyUid: string, seriesUid: string, opts: RetrieveOptions): Promise<RetrievedSeries> {
  const metadata = await client.seriesMetadata(studyUid, seriesUid);
  const metas = metadata.map(sliceMetaFromJson);
  const plan = planVolume(metas);
  const volume = allocateVolume(plan.geometry);
  const slices = plan.order.map((i) => metas[i] as SliceMeta);
  let done = 0;
  await mapLimit(slices, opts.concurrency, async (meta, k) => {
    const frame = await client.retrieveFrame(studyUid, seriesUid, meta.sopInstanceUid);
    fillSlice(volume, k, frame.bytes, meta, frame.transferSyntax === EXPLICIT_VR_BE);
    done++;
    opts.onProgress?.(done, slices.length);
  });
  return { volume, plan, slices };
}
