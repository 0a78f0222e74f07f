/**
 * Key images for viewers without DICOM SEG support: each key slice (the slices with the largest lesion area) as
 * a Secondary Capture Image (SOP class 1.2.840.10008.5.1.4.1.1.7), RGB, with the lesion overlay burned in and a
 * "NOT FOR CLINICAL USE" label, in the CT's study as a new series. A pure function of the ResultContext: the same
 * context always gives the same bytes.
 *
 * Why single-frame SC, one instance per key slice, and not Multi-frame True Color SC: SC Image Storage is the one
 * image SOP class every PACS and viewer takes and shows (the audience here is exactly the systems that lack
 * newer objects such as SEG), and each instance names its own CT slice in Source/Referenced Image Sequence, where
 * a multi-frame SC has no per-frame references (its frames would map to source slices only by order).
 *
 * The pixels are the key-image PNGs the analysis kept (ResultContext.keyImages, rendered by
 * src/inference/key-images.ts: lung window, lesion in red). PNG is lossless, so they are decoded back rather than
 * rendered again: the write stage has the analysis checkpoint but no CT volume.
 *
 * UIDs are derived from the source series, the lesion model (name and version) and the source slice, as for the
 * SEG but with their own prefix: a retry writes the same instances again, a new model version a new series.
 */

import type { NaturalizedDataset } from 'dcmjs';
import { codeItem } from '../../dicom/code.js';
import { formatDs } from '../../dicom/ds.js';
import { writePart10 } from '../../dicom/part10.js';
import { SOP_CLASS } from '../../dicom/sop-classes.js';
import { deterministicUid } from '../../dicom/uid.js';
import { decodePng } from '../../imaging/png.js';
import { type ModelRef, type ResultContext, sourceSeriesKey } from '../context.js';
import { type DerivedObjectOptions, derivedHeader, MANUFACTURER, softwareVersions } from '../derived-header.js';
import { CODES } from '../seg/codes.js';
import { dicomDateTime } from '../seg/datetime.js';
import { lesionModel } from '../seg/encode.js';
import { drawLabel, placeLabel } from './label.js';

export const SECONDARY_CAPTURE_IMAGE_STORAGE = SOP_CLASS.secondaryCapture;
export const KEY_IMAGE_SERIES_DESCRIPTION = 'AI key images (NOT FOR CLINICAL USE)';
/** Modality of the key-image series: OT (other), as secondary captures of a workstation carry. */
export const KEY_IMAGE_MODALITY = 'OT';

/** Series number default: SEG 9001, key images 9002, SR 9003. */
export interface KeyImageScOptions extends DerivedObjectOptions {
  /** Burn the "AI LESION OVERLAY / NOT FOR CLINICAL USE" label into a free corner; default true. */
  burnInLabel?: boolean;
}

export interface EncodedKeyImage {
  bytes: Uint8Array;
  sopInstanceUid: string;
  /** 1 = the key slice with the largest lesion area (ResultContext.keyImages order). */
  instanceNumber: number;
  sliceIndex: number;
  sourceSopInstanceUid: string;
  /** Whether the warning label fitted and was burned in. */
  labelled: boolean;
}

export interface EncodedKeyImages {
  studyInstanceUid: string;
  seriesInstanceUid: string;
  modality: string;
  instances: EncodedKeyImage[];
}

/** Why a job has no key images: no key slices (no lesion) or no analysis to show. Callers record it. */
export class NoKeyImagesError extends Error {
  constructor(
    readonly reason: 'no-key-slices' | 'not-assessable',
    message: string,
  ) {
    super(message);
    this.name = 'NoKeyImagesError';
  }
}

/** SeriesInstanceUID of the key images of a source series made with a lesion model version, and each image's UID. */
export function keyImageUids(sourceKey: string, model: ModelRef): { seriesInstanceUid: string; sopInstanceUid: (sourceSopInstanceUid: string) => string } {
  const key = `key-image-sc|source-series=${sourceKey}|model=${model.name}@${model.version}`;
  return {
    seriesInstanceUid: deterministicUid(`${key}|series`),
    sopInstanceUid: (source) => deterministicUid(`${key}|instance|source-instance=${source}`),
  };
}

const LPS_LETTERS = [
  ['L', 'R'],
  ['P', 'A'],
  ['H', 'F'],
] as const;

/** Patient Orientation (PS3.3 C.7.6.1.1.1) of a direction cosine: its axes' letters, the largest component first. */
export function orientationLetters(cosines: readonly number[]): string {
  return [0, 1, 2]
    .filter((i) => Math.abs(cosines[i] as number) > 1e-3)
    .sort((a, b) => Math.abs(cosines[b] as number) - Math.abs(cosines[a] as number))
    .map((i) => (LPS_LETTERS[i] as readonly [string, string])[(cosines[i] as number) > 0 ? 0 : 1])
    .join('');
}

const mm2 = (v: number) => (Math.round(v * 10) / 10).toFixed(1);

/** The job's key images as Secondary Capture instances; throws NoKeyImagesError when there are none to make. */
export function encodeKeyImages(ctx: ResultContext, opts: KeyImageScOptions = {}): EncodedKeyImages {
  const { analysis, study, series } = ctx;
  const mask = analysis.lesionMask;
  if (!mask) throw new NoKeyImagesError('not-assessable', `no key images: the study was not assessable${analysis.reason ? ` (${analysis.reason})` : ''}`);
  if (ctx.keyImages.length === 0) throw new NoKeyImagesError('no-key-slices', 'no key slices (no lesion): no key images');
  const model = lesionModel(ctx, opts.lesionModelName);
  const uids = keyImageUids(sourceSeriesKey(series), model);
  const when = dicomDateTime(analysis.completedAt, opts.timeZone);
  const [nx, ny, nz] = series.geometry.size;
  if (mask.length !== nx * ny * nz) throw new Error(`lesion mask has ${mask.length} voxels, the series grid ${nx}×${ny}×${nz}`);
  const software = softwareVersions([model], opts.softwareVersion);
  const total = ctx.keyImages.length;

  const instances = ctx.keyImages.map((key, i): EncodedKeyImage => {
    const z = key.sliceIndex;
    const slice = series.slices[z];
    if (!slice) throw new Error(`key image ${i + 1}: no slice at z index ${z}`);
    if (slice.sopInstanceUid !== key.sopInstanceUid)
      throw new Error(`key image ${i + 1}: slice ${z} is SOP instance ${slice.sopInstanceUid}, the key image names ${key.sopInstanceUid}`);
    const png = decodePng(key.png);
    if (png.channels !== 3 || png.width !== nx || png.height !== ny)
      throw new Error(`key image ${i + 1}: its PNG is ${png.width}×${png.height} with ${png.channels} channel(s), the series grid ${nx}×${ny} RGB`);
    if (slice.columns !== nx || slice.rows !== ny) throw new Error(`slice ${slice.sopInstanceUid} is ${slice.columns}×${slice.rows}, the grid ${nx}×${ny}`);

    const rgb = Uint8Array.from(png.pixels);
    const base = z * nx * ny;
    const free = (b: { x: number; y: number; width: number; height: number }) => {
      for (let y = b.y; y < b.y + b.height; y++) for (let x = b.x; x < b.x + b.width; x++) if (mask[base + y * nx + x]) return false;
      return true;
    };
    const box = opts.burnInLabel === false ? null : placeLabel(nx, ny, free);
    if (box) drawLabel(rgb, nx, box);
    // Pixel Data must have an even length: one pad byte after an odd count (PS3.5 8.1.1).
    const pixelData = rgb.length % 2 === 0 ? rgb : Uint8Array.from([...rgb, 0]);

    const instanceNumber = i + 1;
    const sopInstanceUid = uids.sopInstanceUid(slice.sopInstanceUid);
    const sliceText = `CT series ${series.seriesNumber ?? '?'} slice ${z + 1} of ${nz}${slice.instanceNumber !== undefined ? ` (instance ${slice.instanceNumber})` : ''}`;
    const dataset: NaturalizedDataset = {
      ...derivedHeader(ctx, {
        sopClassUid: SECONDARY_CAPTURE_IMAGE_STORAGE,
        sopInstanceUid,
        seriesInstanceUid: uids.seriesInstanceUid,
        seriesNumber: opts.seriesNumber ?? 9002,
        seriesDescription: KEY_IMAGE_SERIES_DESCRIPTION,
        modality: KEY_IMAGE_MODALITY,
        instanceNumber,
        when,
        software,
        institutionName: opts.institutionName,
      }),
      ImageType: ['DERIVED', 'SECONDARY'],
      ConversionType: 'WSD',
      ReferencedImageSequence: [{ ReferencedSOPClassUID: series.sopClassUid, ReferencedSOPInstanceUID: slice.sopInstanceUid }],
      DerivationDescription:
        `${sliceText} in a lung window, with the lesion segmentation of ${model.name} ${model.version} overlaid in red and burned in` +
        `${box ? ', and a NOT FOR CLINICAL USE label' : ''}. Derived image, NOT FOR CLINICAL USE`,
      SourceImageSequence: [
        {
          ReferencedSOPClassUID: series.sopClassUid,
          ReferencedSOPInstanceUID: slice.sopInstanceUid,
          PurposeOfReferenceCodeSequence: [codeItem(CODES.sourceImageForProcessing)],
          SpatialLocationsPreserved: 'YES',
        },
      ],
      SecondaryCaptureDeviceManufacturer: MANUFACTURER,
      SecondaryCaptureDeviceManufacturerModelName: MANUFACTURER,
      SecondaryCaptureDeviceSoftwareVersions: software,
      DateOfSecondaryCapture: when.date,
      TimeOfSecondaryCapture: when.time,
      // The slice shows both lungs (PS3.3 C.7.6.1: B = both left and right).
      ImageLaterality: 'B',
      PatientOrientation: [orientationLetters(slice.orientation.slice(0, 3)), orientationLetters(slice.orientation.slice(3, 6))],
      ImageComments:
        `Derived image: key image ${instanceNumber} of ${total}, ${sliceText}, AI lesion overlay (red) burned in, ` +
        `lesion area ${mm2(key.lesionAreaMm2)} mm2. NOT FOR CLINICAL USE`,
      // PS3.3 C.7.6.1.1.3: YES means enough burned-in text to identify the patient; the burned-in label and overlay
      // carry none, so NO (de-identification tools need not quarantine these images).
      BurnedInAnnotation: 'NO',
      LossyImageCompression: '00',
      SamplesPerPixel: 3,
      PhotometricInterpretation: 'RGB',
      PlanarConfiguration: 0,
      Rows: ny,
      Columns: nx,
      // The pixels are the CT slice's own grid (Source Image Sequence: spatial locations preserved).
      PixelSpacing: slice.pixelSpacing.map(formatDs),
      BitsAllocated: 8,
      BitsStored: 8,
      HighBit: 7,
      PixelRepresentation: 0,
      ReferencedSeriesSequence: [
        {
          SeriesInstanceUID: series.seriesInstanceUid,
          ReferencedInstanceSequence: [{ ReferencedSOPClassUID: series.sopClassUid, ReferencedSOPInstanceUID: slice.sopInstanceUid }],
        },
      ],
    };
    return {
      bytes: writePart10(dataset, pixelData, 'CTGATE_KEY_1'),
      sopInstanceUid,
      instanceNumber,
      sliceIndex: z,
      sourceSopInstanceUid: slice.sopInstanceUid,
      labelled: box !== null,
    };
  });
  return { studyInstanceUid: study.studyInstanceUid, seriesInstanceUid: uids.seriesInstanceUid, modality: KEY_IMAGE_MODALITY, instances };
}
