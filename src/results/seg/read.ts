/**
 * Reads a DICOM Segmentation (Part 10, any native transfer syntax dcmjs reads): its segments, and per frame the
 * segment, the source image it was made from, its position and its pixels. For checking what ctgate wrote and
 * for SEGs made by other tools (dcmqi, highdicom); values a frame does not carry itself are taken from the shared
 * functional groups, as the standard allows.
 */
import dcmjs from 'dcmjs';
import type { Code } from '../../dicom/code.js';
import { unpackFrame } from './bits.js';
import { SEGMENTATION_STORAGE } from './encode.js';

type Item = Record<string, unknown>;

export interface ReadSegment {
  number: number;
  label: string;
  algorithmType: string;
  algorithmName?: string;
  category?: Code;
  type?: Code;
  anatomicRegion?: Code;
}

export interface ReadFrame {
  /** 1-based frame number. */
  number: number;
  segmentNumber: number;
  sourceSopClassUid?: string;
  sourceSopInstanceUid?: string;
  imagePosition?: [number, number, number];
  dimensionIndexValues?: number[];
  /** rows × columns, row by row: 0/1 for BINARY, the stored value (0…MaximumFractionalValue) for FRACTIONAL. */
  pixels: Uint8Array;
}

export interface ReadSeg {
  sopInstanceUid: string;
  studyInstanceUid: string;
  seriesInstanceUid: string;
  frameOfReferenceUid?: string;
  segmentationType: 'BINARY' | 'FRACTIONAL';
  fractionalType?: string;
  maximumFractionalValue?: number;
  rows: number;
  columns: number;
  orientation?: number[];
  /** [between rows, between columns] (mm). */
  pixelSpacing?: number[];
  sliceThickness?: number;
  seriesDescription?: string;
  /** DA and TM as stored. */
  contentDate?: string;
  contentTime?: string;
  segments: ReadSegment[];
  referencedSeries: { seriesInstanceUid: string; instances: { sopClassUid: string; sopInstanceUid: string }[] }[];
  frames: ReadFrame[];
}

export class SegReadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SegReadError';
  }
}

/** A sequence as a list of items (dcmjs gives arrays; tolerate a lone item). */
function items(v: unknown): Item[] {
  if (Array.isArray(v)) return v.filter((x): x is Item => typeof x === 'object' && x !== null);
  return typeof v === 'object' && v !== null && !(v instanceof ArrayBuffer) ? [v as Item] : [];
}

function first(v: unknown): unknown {
  return Array.isArray(v) ? v[0] : v;
}

function str(v: unknown): string | undefined {
  const x = first(v);
  if (x === undefined || x === null) return undefined;
  if (typeof x === 'object' && 'Alphabetic' in x) return String((x as { Alphabetic: unknown }).Alphabetic);
  return String(x).trim();
}

function num(v: unknown): number | undefined {
  const x = Number(first(v));
  return first(v) === undefined || first(v) === '' || !Number.isFinite(x) ? undefined : x;
}

function nums(v: unknown): number[] | undefined {
  if (v === undefined || v === null) return undefined;
  const list = (Array.isArray(v) ? v : [v]).map(Number);
  return list.every(Number.isFinite) ? list : undefined;
}

function code(v: unknown): Code | undefined {
  const c = items(v)[0];
  if (!c) return undefined;
  return { value: str(c.CodeValue) ?? '', scheme: str(c.CodingSchemeDesignator) ?? '', meaning: str(c.CodeMeaning) ?? '' };
}

/** The first item of a functional group sequence, from the frame's own groups or else the shared ones. */
function group(frame: Item, shared: Item, name: string): Item | undefined {
  return items(frame[name])[0] ?? items(shared[name])[0];
}

function pixelBytes(px: unknown): Uint8Array {
  const parts = Array.isArray(px) ? px : [px];
  const buffers = parts.map((p) => {
    if (p instanceof ArrayBuffer) return new Uint8Array(p);
    if (ArrayBuffer.isView(p)) return new Uint8Array(p.buffer, p.byteOffset, p.byteLength);
    throw new SegReadError('Pixel Data is missing or not native (encapsulated SEGs are not supported)');
  });
  if (buffers.length === 1) return buffers[0] as Uint8Array;
  throw new SegReadError('Pixel Data is encapsulated (compressed); only native transfer syntaxes are supported');
}

export function readSeg(bytes: Uint8Array): ReadSeg {
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  let ds: Item;
  try {
    ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dcmjs.data.DicomMessage.readFile(buffer).dict) as Item;
  } catch (e) {
    throw new SegReadError(`not a readable DICOM file: ${(e as Error).message}`);
  }
  if (str(ds.SOPClassUID) !== SEGMENTATION_STORAGE) throw new SegReadError(`not a Segmentation (SOP class ${str(ds.SOPClassUID) ?? 'missing'})`);
  const type = str(ds.SegmentationType);
  if (type !== 'BINARY' && type !== 'FRACTIONAL') throw new SegReadError(`unknown SegmentationType "${type ?? ''}"`);
  const rows = num(ds.Rows);
  const columns = num(ds.Columns);
  const count = num(ds.NumberOfFrames) ?? 1;
  const bitsAllocated = num(ds.BitsAllocated);
  if (!rows || !columns) throw new SegReadError('Rows/Columns missing');
  if (bitsAllocated !== (type === 'BINARY' ? 1 : 8)) throw new SegReadError(`BitsAllocated ${bitsAllocated} does not fit SegmentationType ${type}`);
  const frameLength = rows * columns;
  const pixels = pixelBytes(ds.PixelData);
  const needed = type === 'BINARY' ? Math.ceil((count * frameLength) / 8) : count * frameLength;
  if (pixels.length < needed) throw new SegReadError(`Pixel Data has ${pixels.length} bytes, ${count} frames need ${needed}`);

  const shared = items(ds.SharedFunctionalGroupsSequence)[0] ?? {};
  const perFrame = items(ds.PerFrameFunctionalGroupsSequence);
  const frames: ReadFrame[] = [];
  for (let f = 0; f < count; f++) {
    const fg = perFrame[f] ?? {};
    const segmentNumber = num(group(fg, shared, 'SegmentIdentificationSequence')?.ReferencedSegmentNumber);
    if (segmentNumber === undefined) throw new SegReadError(`frame ${f + 1} names no segment`);
    const source = items(group(fg, shared, 'DerivationImageSequence')?.SourceImageSequence)[0];
    const position = nums(group(fg, shared, 'PlanePositionSequence')?.ImagePositionPatient);
    frames.push({
      number: f + 1,
      segmentNumber,
      sourceSopClassUid: str(source?.ReferencedSOPClassUID),
      sourceSopInstanceUid: str(source?.ReferencedSOPInstanceUID),
      imagePosition: position?.length === 3 ? (position as [number, number, number]) : undefined,
      dimensionIndexValues: nums(group(fg, shared, 'FrameContentSequence')?.DimensionIndexValues),
      pixels: type === 'BINARY' ? unpackFrame(pixels, frameLength, f) : pixels.slice(f * frameLength, (f + 1) * frameLength),
    });
  }

  const measures = items(shared.PixelMeasuresSequence)[0];
  return {
    sopInstanceUid: str(ds.SOPInstanceUID) ?? '',
    studyInstanceUid: str(ds.StudyInstanceUID) ?? '',
    seriesInstanceUid: str(ds.SeriesInstanceUID) ?? '',
    frameOfReferenceUid: str(ds.FrameOfReferenceUID),
    segmentationType: type,
    fractionalType: str(ds.SegmentationFractionalType),
    maximumFractionalValue: num(ds.MaximumFractionalValue),
    rows,
    columns,
    orientation: nums(items(shared.PlaneOrientationSequence)[0]?.ImageOrientationPatient),
    pixelSpacing: nums(measures?.PixelSpacing),
    sliceThickness: num(measures?.SliceThickness),
    seriesDescription: str(ds.SeriesDescription),
    contentDate: str(ds.ContentDate),
    contentTime: str(ds.ContentTime),
    segments: items(ds.SegmentSequence).map((s) => ({
      number: num(s.SegmentNumber) ?? 0,
      label: str(s.SegmentLabel) ?? '',
      algorithmType: str(s.SegmentAlgorithmType) ?? '',
      algorithmName: str(s.SegmentAlgorithmName),
      category: code(s.SegmentedPropertyCategoryCodeSequence),
      type: code(s.SegmentedPropertyTypeCodeSequence),
      anatomicRegion: code(s.AnatomicRegionSequence),
    })),
    referencedSeries: items(ds.ReferencedSeriesSequence).map((s) => ({
      seriesInstanceUid: str(s.SeriesInstanceUID) ?? '',
      instances: items(s.ReferencedInstanceSequence).map((i) => ({
        sopClassUid: str(i.ReferencedSOPClassUID) ?? '',
        sopInstanceUid: str(i.ReferencedSOPInstanceUID) ?? '',
      })),
    })),
    frames,
  };
}
