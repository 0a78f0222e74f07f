import { DecodeError, decodeFrame, TRANSFER_SYNTAXES } from '../imaging/pixel-codecs.js';
import { allocateVolume, fillSlice, planVolume, type SliceMeta, SliceWriter, type VolumePlan } from '../imaging/slices.js';
import type { HuVolume } from '../imaging/volume.js';
import { type DicomWebClient, EXPLICIT_VR_BE } from './client.js';
import { num, str, TAG } from './dicom-json.js';
import { mapLimit, PacsError } from './errors.js';
import { sliceMetaFromJson } from './metadata.js';

export interface RetrievedSeries {
  volume: HuVolume;
  plan: VolumePlan;
  /** Slice metadata in volume z order (slices[k] is z index k): what maps results back to the source images. */
  slices: SliceMeta[];
  /** The compressed transfer syntaxes frames came in (decoded here), e.g. when the PACS could not transcode. */
  decodedSyntaxes: string[];
}

export interface RetrieveOptions {
  concurrency: number;
  onProgress?: (done: number, total: number) => void;
}

/**
 * Pulls one CT series into a HU volume: series metadata first (to order the slices and size the volume), then
 * every frame, its bytes copied from the network chunks straight into the slice's place and converted to HU
 * there. A frame the PACS sends compressed (it could not transcode, or the client asks for the stored syntax) is
 * gathered and decoded here (src/imaging/pixel-codecs.ts). Peak memory is the volume plus what `concurrency`
 * sockets have buffered.
 */
export async function retrieveVolume(client: DicomWebClient, studyUid: string, seriesUid: string, opts: RetrieveOptions): Promise<RetrievedSeries> {
  // Only what sliceMetaFromJson takes is kept, not the series' DICOM JSON: with that held through the transfer, V8
  // ran a full GC every ~10 MB of socket reads (15 per 300-slice series, ~10% of the CPU in bench/retrieve.ts).
  const json = await client.seriesMetadata(studyUid, seriesUid);
  const metas = json.map(sliceMetaFromJson);
  // Only the two fields a codec needs besides SliceMeta are kept, not the JSON (see above).
  const formats = new Map(
    json.map((ds, i) => [(metas[i] as SliceMeta).sopInstanceUid, { bitsStored: num(ds, TAG.BitsStored), photometric: str(ds, TAG.PhotometricInterpretation) }]),
  );
  const plan = planVolume(metas);
  const volume = allocateVolume(plan.geometry);
  const slices = plan.order.map((i) => metas[i] as SliceMeta);
  const decodedSyntaxes = new Set<string>();
  let done = 0;
  await mapLimit(slices, opts.concurrency, async (meta, k) => {
    // A short frame is a VolumeError from the writer's end(), passed on as it is (not retried).
    let encoded: { ts: string; chunks: Buffer[] } | undefined;
    await client.retrieveFrameInto(
      studyUid,
      seriesUid,
      meta.sopInstanceUid,
      (ts) => {
        encoded = undefined;
        if (!TRANSFER_SYNTAXES.get(ts)?.codec) return new SliceWriter(volume, k, meta, ts === EXPLICIT_VR_BE);
        const got = { ts, chunks: [] as Buffer[] };
        encoded = got;
        return { write: (bytes) => got.chunks.push(Buffer.from(bytes)), end: () => {} };
      },
      1,
      { compressed: true },
    );
    if (encoded) {
      const { ts, chunks } = encoded;
      decodedSyntaxes.add(ts);
      let stored: Uint8Array;
      try {
        stored = await decodeFrame(ts, Buffer.concat(chunks), pixelFormat(meta, formats.get(meta.sopInstanceUid)));
      } catch (e) {
        if (e instanceof DecodeError) throw new PacsError('unsupported-transfer-syntax', `WADO-RS frame of instance ${meta.sopInstanceUid}: ${e.message}`);
        throw e;
      }
      fillSlice(volume, k, stored, meta);
    }
    done++;
    opts.onProgress?.(done, slices.length);
  });
  return { volume, plan, slices, decodedSyntaxes: [...decodedSyntaxes] };
}

function pixelFormat(meta: SliceMeta, f: { bitsStored?: number; photometric?: string } | undefined) {
  return {
    rows: meta.rows,
    columns: meta.columns,
    bitsAllocated: meta.bitsAllocated,
    bitsStored: f?.bitsStored,
    pixelRepresentation: meta.pixelRepresentation,
    samplesPerPixel: meta.samplesPerPixel,
    photometricInterpretation: f?.photometric,
  };
}
