/**
 * DICOM Segmentation (SOP class 1.2.840.10008.5.1.4.1.1.66.4, BINARY) of a job's lesion mask, as a pure function
 * of the ResultContext: the same context always gives the same bytes. The SEG sits in the CT's study and frame of
 * reference, its frames are the CT slices that hold lesion (empty slices are left out), and every frame names
 * the CT instance it was made from (viewers such as OHIF refuse SEGs without those references).
 *
 * UIDs are derived from the source series and the lesion model (name and version): a retry of the same job writes
 * the same SeriesInstanceUID and SOPInstanceUID, so storing it again cannot add a second SEG, while a new model
 * version makes a new series beside the old one.
 *
 * dcmjs writes the dataset (its derivations.Segmentation is not used: it makes random UIDs and dates and re-sorts
 * the source slices); the bit packing and the Pixel Data element are ctgate's own.
 */

import type { NaturalizedDataset } from 'dcmjs';
import { type Code, codeItem } from '../../dicom/code.js';
import { formatDs } from '../../dicom/ds.js';
import { writePart10 } from '../../dicom/part10.js';
import { SOP_CLASS } from '../../dicom/sop-classes.js';
import { deterministicUid } from '../../dicom/uid.js';
import { type ModelRef, type ResultContext, sourceSeriesKey } from '../context.js';
import { type DerivedObjectOptions, derivedHeader, MANUFACTURER, softwareVersions } from '../derived-header.js';
import { countBits, packFrames } from './bits.js';
import { CODES } from './codes.js';
import { dicomDateTime } from './datetime.js';

export const SEGMENTATION_STORAGE = SOP_CLASS.segmentation;
export const SEG_SERIES_DESCRIPTION = 'AI lesion segmentation (NOT FOR CLINICAL USE)';
/** Orange: sRGB (255, 160, 0) in DICOM's scaled CIELab (PS3.3 C.10.7.1.1). */
const LESION_CIELAB = [48368, 39717, 53000];

/** Series number default: SEG 9001, key images 9002, SR 9003. */
export interface SegOptions extends DerivedObjectOptions {
  /** DeviceSerialNumber (Enhanced General Equipment, required): which ctgate installation made it. Default 'ctgate'. */
  deviceSerialNumber?: string;
}

export interface SegmentSummary {
  number: number;
  label: string;
  /** Frames (non-empty slices) of this segment. */
  frames: number;
  voxels: number;
}

export interface EncodedSeg {
  bytes: Uint8Array;
  studyInstanceUid: string;
  seriesInstanceUid: string;
  sopInstanceUid: string;
  frames: number;
  segments: SegmentSummary[];
}

/** Why a job has no SEG: nothing to show (no lesion) or no analysis to show it from. Callers record it. */
export class NoSegError extends Error {
  constructor(
    readonly reason: 'no-lesion' | 'not-assessable',
    message: string,
  ) {
    super(message);
    this.name = 'NoSegError';
  }
}

interface SegmentSpec {
  label: string;
  description: string;
  category: Code;
  type: Code;
  region: Code;
  algorithm: ModelRef;
  cielab: number[];
  mask: Uint8Array;
}

/** The lesion model the SEG is made from: by name, or the second model in pipeline order. */
export function lesionModel(ctx: ResultContext, name?: string): ModelRef {
  const models = ctx.analysis.models;
  const m = name === undefined ? models[1] : models.find((x) => x.name === name);
  if (!m)
    throw new Error(name === undefined ? 'analysis.models has no lesion model (expected lung, lesion, classifier)' : `no model "${name}" in analysis.models`);
  return m;
}

/** SeriesInstanceUID and SOPInstanceUID of the SEG of a source series (its sourceSeriesKey: UID and content) made by a lesion model version. */
export function segUids(sourceKey: string, model: ModelRef): { seriesInstanceUid: string; sopInstanceUid: string; dimensionOrganizationUid: string } {
  const key = `seg|source-series=${sourceKey}|model=${model.name}@${model.version}`;
  return {
    seriesInstanceUid: deterministicUid(`${key}|series`),
    sopInstanceUid: deterministicUid(`${key}|instance`),
    dimensionOrganizationUid: deterministicUid(`${key}|dimension-organization`),
  };
}

function checkGrid(ctx: ResultContext, mask: Uint8Array): void {
  const { slices, geometry } = ctx.series;
  const [nx, ny, nz] = geometry.size;
  if (mask.length !== nx * ny * nz) throw new Error(`lesion mask has ${mask.length} voxels, the series grid ${nx}×${ny}×${nz}`);
  if (slices.length !== nz) throw new Error(`the series has ${slices.length} slices, its grid ${nz}`);
  const sops = new Set<string>();
  for (const s of slices) {
    if (s.rows !== ny || s.columns !== nx) throw new Error(`slice ${s.sopInstanceUid} is ${s.columns}×${s.rows}, the grid ${nx}×${ny}`);
    // A multi-frame source (Enhanced CT) would need ReferencedFrameNumber per frame; SliceMeta has none.
    if (sops.has(s.sopInstanceUid)) throw new Error(`SOP instance ${s.sopInstanceUid} holds more than one slice (multi-frame source)`);
    sops.add(s.sopInstanceUid);
  }
}

/** Whether mask[start … start + length) has any non-zero value; a word at a time where aligned (most slices are empty). */
function anySet(mask: Uint8Array, start: number, length: number): boolean {
  const end = start + length;
  let p = start;
  for (; p < end && (mask.byteOffset + p) % 4 !== 0; p++) if (mask[p]) return true;
  const words = new Uint32Array(mask.buffer, mask.byteOffset + p, (end - p) >>> 2);
  for (let i = 0; i < words.length; i++) if (words[i]) return true;
  for (p += words.length * 4; p < end; p++) if (mask[p]) return true;
  return false;
}

/** z indices of the slices where the mask has any voxel. */
function nonEmptySlices(mask: Uint8Array, sliceLength: number): number[] {
  const slices: number[] = [];
  for (let z = 0; z * sliceLength < mask.length; z++) if (anySet(mask, z * sliceLength, sliceLength)) slices.push(z);
  return slices;
}

/** The SEG of the job's lesion mask; throws NoSegError when there is none to make. */
export function encodeSeg(ctx: ResultContext, opts: SegOptions = {}): EncodedSeg {
  const { analysis, study, series } = ctx;
  if (!analysis.lesionMask) throw new NoSegError('not-assessable', `no SEG: the study was not assessable${analysis.reason ? ` (${analysis.reason})` : ''}`);
  const mask = analysis.lesionMask;
  checkGrid(ctx, mask);
  const model = lesionModel(ctx, opts.lesionModelName);
  const specs: SegmentSpec[] = [
    {
      label: 'Lesion',
      description: 'Lesion of any kind in the lung, e.g. ground-glass opacity',
      category: CODES.morphologicallyAbnormalStructure,
      type: CODES.lesion,
      region: CODES.lung,
      algorithm: model,
      cielab: LESION_CIELAB,
      mask,
    },
  ];

  const [nx, ny] = series.geometry.size;
  const frameLength = nx * ny;
  // Segments without any voxel are left out; the others are numbered 1, 2, … as the standard requires.
  const segments: (SegmentSummary & { slices: number[]; spec: SegmentSpec })[] = [];
  for (const spec of specs) {
    const slices = nonEmptySlices(spec.mask, frameLength);
    if (slices.length > 0) segments.push({ number: segments.length + 1, label: spec.label, frames: slices.length, voxels: 0, slices, spec });
  }
  if (segments.length === 0) throw new NoSegError('no-lesion', 'no lesion: no SEG');

  // Frames: segment by segment, each in volume z order. The position dimension index is the rank of the slice
  // among the slices that have a frame (1-based, along the slice normal).
  const usedZ = [...new Set(segments.flatMap((s) => s.slices))].sort((a, b) => a - b);
  const positionIndex = new Map(usedZ.map((z, i) => [z, i + 1]));
  const uids = segUids(sourceSeriesKey(series), model);
  const when = dicomDateTime(analysis.completedAt, opts.timeZone);
  const first = series.slices[0];
  if (!first) throw new Error('the series has no slices');
  const sourceRef = (z: number) => {
    const s = series.slices[z];
    if (!s) throw new Error(`no slice at z index ${z}`);
    return s;
  };

  const perFrame: NaturalizedDataset[] = [];
  const framePixels: Uint8Array[] = [];
  for (const seg of segments) {
    const segMask = seg.spec.mask;
    for (const z of seg.slices) {
      const s = sourceRef(z);
      framePixels.push(segMask.subarray(z * frameLength, (z + 1) * frameLength));
      perFrame.push({
        DerivationImageSequence: [
          {
            DerivationCodeSequence: [codeItem(CODES.segmentation)],
            SourceImageSequence: [
              {
                ReferencedSOPClassUID: series.sopClassUid,
                ReferencedSOPInstanceUID: s.sopInstanceUid,
                PurposeOfReferenceCodeSequence: [codeItem(CODES.sourceImageForProcessing)],
                SpatialLocationsPreserved: 'YES',
              },
            ],
          },
        ],
        FrameContentSequence: [{ DimensionIndexValues: [seg.number, positionIndex.get(z) as number] }],
        PlanePositionSequence: [{ ImagePositionPatient: s.position.map(formatDs) }],
        SegmentIdentificationSequence: [{ ReferencedSegmentNumber: seg.number }],
      });
    }
  }
  const frames = perFrame.length;
  const pixelData = packFrames(framePixels, frameLength);
  let firstFrame = 0;
  for (const seg of segments) {
    seg.voxels = countBits(pixelData, firstFrame * frameLength, (firstFrame + seg.frames) * frameLength);
    firstFrame += seg.frames;
  }

  const models = ctx.analysis.models;
  const upToLesion = models.slice(0, models.indexOf(model) + 1);
  const software = softwareVersions([model], opts.softwareVersion);
  const dataset: NaturalizedDataset = {
    ...derivedHeader(ctx, {
      sopClassUid: SEGMENTATION_STORAGE,
      sopInstanceUid: uids.sopInstanceUid,
      seriesInstanceUid: uids.seriesInstanceUid,
      seriesNumber: opts.seriesNumber ?? 9001,
      seriesDescription: SEG_SERIES_DESCRIPTION,
      modality: 'SEG',
      instanceNumber: 1,
      when,
      software,
      institutionName: opts.institutionName,
    }),
    ImageType: ['DERIVED', 'PRIMARY'],
    ReferencedSeriesSequence: [
      {
        SeriesInstanceUID: series.seriesInstanceUid,
        ReferencedInstanceSequence: series.slices.map((s) => ({ ReferencedSOPClassUID: series.sopClassUid, ReferencedSOPInstanceUID: s.sopInstanceUid })),
      },
    ],
    DeviceSerialNumber: opts.deviceSerialNumber ?? 'ctgate',
    FrameOfReferenceUID: series.frameOfReferenceUid,
    PositionReferenceIndicator: '',
    DimensionOrganizationSequence: [{ DimensionOrganizationUID: uids.dimensionOrganizationUid }],
    DimensionIndexSequence: [
      {
        DimensionOrganizationUID: uids.dimensionOrganizationUid,
        DimensionIndexPointer: 0x0062000b,
        FunctionalGroupPointer: 0x0062000a,
        DimensionDescriptionLabel: 'ReferencedSegmentNumber',
      },
      {
        DimensionOrganizationUID: uids.dimensionOrganizationUid,
        DimensionIndexPointer: 0x00200032,
        FunctionalGroupPointer: 0x00209113,
        DimensionDescriptionLabel: 'ImagePositionPatient',
      },
    ],
    SamplesPerPixel: 1,
    PhotometricInterpretation: 'MONOCHROME2',
    NumberOfFrames: String(frames),
    Rows: ny,
    Columns: nx,
    BitsAllocated: 1,
    BitsStored: 1,
    HighBit: 0,
    PixelRepresentation: 0,
    LossyImageCompression: '00',
    SegmentationType: 'BINARY',
    SegmentSequence: segments.map(({ number, spec }) => ({
      SegmentNumber: number,
      SegmentLabel: spec.label,
      SegmentDescription: spec.description,
      SegmentAlgorithmType: 'AUTOMATIC',
      SegmentAlgorithmName: `${spec.algorithm.name}@${spec.algorithm.version}`,
      SegmentedPropertyCategoryCodeSequence: [codeItem(spec.category)],
      SegmentedPropertyTypeCodeSequence: [codeItem(spec.type)],
      AnatomicRegionSequence: [codeItem(spec.region)],
      RecommendedDisplayCIELabValue: spec.cielab,
    })),
    ContentLabel: 'AI_LESION',
    ContentDescription: 'AI lesion segmentation, NOT FOR CLINICAL USE',
    ContentCreatorName: 'ctgate^AI',
    ContributingEquipmentSequence: upToLesion.map((m) => ({
      Manufacturer: MANUFACTURER,
      ManufacturerModelName: m.name,
      SoftwareVersions: m.version,
      PurposeOfReferenceCodeSequence: [codeItem(CODES.processingEquipment)],
      ContributionDescription: m === model ? 'lesion segmentation model' : 'pipeline step before lesion segmentation',
    })),
    SharedFunctionalGroupsSequence: [
      {
        PlaneOrientationSequence: [{ ImageOrientationPatient: first.orientation.map(formatDs) }],
        PixelMeasuresSequence: [
          {
            PixelSpacing: first.pixelSpacing.map(formatDs),
            // No SpacingBetweenSlices: the frames are only the slices with lesion, not a contiguous stack.
            SliceThickness: formatDs(first.sliceThickness ?? series.geometry.spacing[2]),
          },
        ],
      },
    ],
    PerFrameFunctionalGroupsSequence: perFrame,
  };

  const bytes = writePart10(dataset, pixelData, 'CTGATE_SEG_1');
  return {
    bytes,
    studyInstanceUid: study.studyInstanceUid,
    seriesInstanceUid: uids.seriesInstanceUid,
    sopInstanceUid: uids.sopInstanceUid,
    frames,
    segments: segments.map(({ number, label, frames, voxels }) => ({ number, label, frames, voxels })),
  };
}
