/**
 * CT series from DICOM Part 10 files: each file's header and pixels read with dcmjs (any transfer syntax of
 * src/imaging/pixel-codecs.ts), the slices of one series checked (transfer syntaxes, lossy compression, UIDs the
 * results can carry) and placed in a HU volume. Used by `ctgate analyze` (files and folders it is given) and by the
 * jobs that analyse a study received by C-STORE (the files of the chosen series).
 *
 * Messages name files, series and reasons, never a patient attribute.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import dcmjs, { type DenaturalizedDataset } from 'dcmjs';
import type { SourceStudy } from '../domain/study.js';
import { DecodeError, decodeFrame, describeSyntax, lossyWarning, type PixelFormat, supportedSyntaxes, TRANSFER_SYNTAXES } from '../imaging/pixel-codecs.js';
import { allocateVolume, fillSlice, planVolume, type SliceMeta, VolumeError, type VolumePlan } from '../imaging/slices.js';
import type { HuVolume } from '../imaging/volume.js';
import { definedOnly } from './defined.js';
import { sourceUidsProblem, standInSopInstanceUid } from './source-uids.js';

/** The input cannot be analysed (no slices, an unknown transfer syntax, UIDs that cannot be carried, no one volume). */
export class SeriesInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SeriesInputError';
  }
}

export interface Part10Slice {
  file: string;
  meta: SliceMeta;
  transferSyntax: string;
  /** The pixel description the codec needs (compressed syntaxes). */
  format: PixelFormat;
  /** LossyImageCompression 01 in the header. */
  lossyFlag: boolean;
  /** The file had no SOPInstanceUID: meta.sopInstanceUid is a stand-in. */
  standInSop: boolean;
  seriesDescription?: string;
  seriesNumber?: number;
  sopClassUid: string;
  study: SourceStudy;
  pixels: Uint8Array | null;
}

async function listFiles(paths: string[]): Promise<string[]> {
  const out: string[] = [];
  const walk = async (p: string): Promise<void> => {
    const s = await stat(p);
    if (s.isDirectory()) {
      const entries = (await readdir(p)).sort();
      for (const e of entries) await walk(join(p, e));
    } else if (s.isFile()) out.push(p);
  };
  for (const p of paths) {
    try {
      await walk(p);
    } catch (e) {
      throw new SeriesInputError(`cannot read ${p}: ${(e as Error).message}`);
    }
  }
  return out;
}

const num = (v: unknown): number | undefined => {
  const x = Array.isArray(v) ? v[0] : v;
  const n = typeof x === 'string' ? Number(x) : x;
  return typeof n === 'number' && Number.isFinite(n) ? n : undefined;
};
const nums = (v: unknown): number[] =>
  Array.isArray(v) ? v.map((x) => Number(x)).filter((x) => Number.isFinite(x)) : num(v) !== undefined ? [num(v) as number] : [];
const text = (v: unknown): string | undefined => {
  const x = Array.isArray(v) ? v[0] : v;
  return typeof x === 'string' && x.trim() !== '' ? x.trim() : undefined;
};
/** dcmjs gives PN as { Alphabetic } objects (or a plain string from older writers). */
const personName = (v: unknown): string | undefined => {
  const x = Array.isArray(v) ? v[0] : v;
  if (typeof x === 'string') return text(x);
  return text((x as { Alphabetic?: unknown } | undefined)?.Alphabetic);
};

/**
 * A UI element as the file has it, byte for byte but for its padding: dcmjs's naturalized value drops every
 * character that is not a digit or a dot (a UUID-string StudyInstanceUID would become a different UID).
 */
function rawUid(dict: DenaturalizedDataset, tag: string): string | undefined {
  const el = dict[tag] as (DenaturalizedDataset[string] & { _rawValue?: unknown }) | undefined;
  const raw = Array.isArray(el?._rawValue) ? el._rawValue[0] : el?._rawValue;
  const v = typeof raw === 'string' ? raw : el?.Value?.[0];
  if (typeof v !== 'string') return undefined;
  const unpadded = v.replace(/[\0 ]+$/, '');
  return unpadded === '' ? undefined : unpadded;
}

export function studyOf(ds: Record<string, unknown>, dict: DenaturalizedDataset): SourceStudy {
  return definedOnly<SourceStudy>({
    studyInstanceUid: rawUid(dict, '0020000D') ?? '',
    accessionNumber: text(ds.AccessionNumber),
    studyId: text(ds.StudyID),
    studyDate: text(ds.StudyDate),
    studyTime: text(ds.StudyTime),
    studyDescription: text(ds.StudyDescription),
    referringPhysicianName: personName(ds.ReferringPhysicianName),
    patientName: personName(ds.PatientName),
    patientId: text(ds.PatientID),
    issuerOfPatientId: text(ds.IssuerOfPatientID),
    patientBirthDate: text(ds.PatientBirthDate),
    patientSex: text(ds.PatientSex),
  });
}

/** Reads one Part 10 file; null when it is not DICOM or not an image slice ctgate can place (with why). */
export function readInstance(file: string, bytes: Uint8Array): { instance: Part10Slice } | { skip: string } {
  let dict: ReturnType<typeof dcmjs.data.DicomMessage.readFile>;
  try {
    const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
    dict = dcmjs.data.DicomMessage.readFile(buffer);
  } catch (e) {
    return { skip: `not DICOM Part 10 (${(e as Error).message.split('\n')[0]})` };
  }
  const meta = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.meta);
  const ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.dict);
  const transferSyntax = text(meta.TransferSyntaxUID) ?? '1.2.840.10008.1.2';
  const position = nums(ds.ImagePositionPatient);
  const orientation = nums(ds.ImageOrientationPatient);
  const spacing = nums(ds.PixelSpacing);
  const rows = num(ds.Rows);
  const columns = num(ds.Columns);
  const series = rawUid(dict.dict, '0020000E');
  if (position.length < 3 || orientation.length < 6 || spacing.length < 2 || !rows || !columns || !series || ds.PixelData === undefined) {
    return { skip: `not an image slice (${text(ds.Modality) ?? 'no modality'}, ${text(ds.SOPClassUID) ?? 'no SOP class'}: no image plane or pixel data)` };
  }
  if ((num(ds.NumberOfFrames) ?? 1) > 1) return { skip: `multi-frame image (${num(ds.NumberOfFrames)} frames) is not supported` };
  const modality = text(ds.Modality);
  if (modality !== undefined && modality !== 'CT') return { skip: `modality ${modality}, not CT` };
  const pd = ds.PixelData;
  // dcmjs gives one ArrayBuffer per frame; for an encapsulated single frame, its fragments joined.
  const first = Array.isArray(pd) ? pd[0] : pd;
  const pixels =
    first instanceof ArrayBuffer ? new Uint8Array(first) : ArrayBuffer.isView(first) ? new Uint8Array(first.buffer, first.byteOffset, first.byteLength) : null;
  const sop = rawUid(dict.dict, '00080018');
  const bitsAllocated = num(ds.BitsAllocated) ?? 16;
  const pixelRepresentation = num(ds.PixelRepresentation) ?? 0;
  const samplesPerPixel = num(ds.SamplesPerPixel) ?? 1;
  const codec = TRANSFER_SYNTAXES.get(transferSyntax)?.codec;
  return {
    instance: {
      file,
      transferSyntax,
      format: {
        rows,
        columns,
        bitsAllocated,
        bitsStored: num(ds.BitsStored),
        pixelRepresentation,
        samplesPerPixel,
        photometricInterpretation: text(ds.PhotometricInterpretation),
      },
      lossyFlag: text(ds.LossyImageCompression) === '01',
      standInSop: sop === undefined,
      seriesDescription: text(ds.SeriesDescription),
      seriesNumber: num(ds.SeriesNumber),
      sopClassUid: text(ds.SOPClassUID) ?? '1.2.840.10008.5.1.4.1.1.2',
      study: studyOf(ds, dict.dict),
      pixels,
      meta: {
        sopInstanceUid: sop ?? standInSopInstanceUid(series, bytes),
        seriesInstanceUid: series,
        instanceNumber: num(ds.InstanceNumber),
        position: position.slice(0, 3) as SliceMeta['position'],
        orientation: orientation.slice(0, 6) as SliceMeta['orientation'],
        pixelSpacing: spacing.slice(0, 2) as SliceMeta['pixelSpacing'],
        rows,
        columns,
        // An 8-bit compressed frame (JPEG baseline) is widened to 16 bits when decoded.
        bitsAllocated: codec && bitsAllocated === 8 ? 16 : bitsAllocated,
        pixelRepresentation,
        samplesPerPixel,
        rescaleSlope: num(ds.RescaleSlope) ?? 1,
        rescaleIntercept: num(ds.RescaleIntercept) ?? 0,
        sliceThickness: num(ds.SliceThickness),
        frameOfReferenceUid: rawUid(dict.dict, '00200052'),
        gantryTilt: num(ds.GantryDetectorTilt),
      },
    },
  };
}

export interface LoadedSeries {
  volume: HuVolume;
  /** How the slices form the volume (their order and the geometry). */
  plan: VolumePlan;
  study: SourceStudy;
  seriesNumber?: number;
  sopClassUid: string;
  /** Slices in volume z order. */
  slices: SliceMeta[];
  seriesInstanceUid: string;
  seriesDescription?: string;
  /** The transfer syntaxes the slice files came in. */
  transferSyntaxes: string[];
  notes: string[];
  files: number;
}

/** Reads the files and groups the image slices by series; what was skipped, counted by why. */
async function readSlices(files: string[]): Promise<{ bySeries: Map<string, Part10Slice[]>; notes: string[] }> {
  const bySeries = new Map<string, Part10Slice[]>();
  const skipped = new Map<string, number>();
  for (const file of files) {
    const r = readInstance(file, await readFile(file));
    if ('skip' in r) {
      skipped.set(r.skip, (skipped.get(r.skip) ?? 0) + 1);
      continue;
    }
    const list = bySeries.get(r.instance.meta.seriesInstanceUid) ?? [];
    list.push(r.instance);
    bySeries.set(r.instance.meta.seriesInstanceUid, list);
  }
  const notes: string[] = [];
  for (const [why, n] of skipped) notes.push(`skipped ${n} file${n === 1 ? '' : 's'}: ${why}`);
  return { bySeries, notes };
}

/** Reads DICOM files (and folders), picks the series with the most slices and builds its HU volume. */
export async function loadSeriesFromFiles(paths: string[], note: (line: string) => void = () => {}): Promise<LoadedSeries> {
  const files = await listFiles(paths);
  if (files.length === 0) throw new SeriesInputError(`no files found in ${paths.join(', ')}`);
  const { bySeries, notes } = await readSlices(files);
  if (bySeries.size === 0)
    throw new SeriesInputError(
      `no CT image slices among ${files.length} file${files.length === 1 ? '' : 's'}${notes.length > 0 ? ` (${notes.join('; ')})` : ''}`,
    );
  const ranked = [...bySeries.entries()].sort((a, b) => b[1].length - a[1].length || a[0].localeCompare(b[0]));
  const [uid, instances] = ranked[0] as [string, Part10Slice[]];
  const description = instances[0]?.seriesDescription;
  if (ranked.length > 1) {
    notes.push(
      `${ranked.length} series found; analysing ${uid}${description ? ` ("${description}")` : ''} with the most slices (${instances.length}); not analysed: ${ranked
        .slice(1)
        .map(([u, l]) => `${u} (${l.length})`)
        .join(', ')}`,
    );
  }
  for (const n of notes) note(n);
  return seriesVolume(uid, instances, notes, note, files.length);
}

/**
 * The given files of one series (a series the caller chose, e.g. from a study received by C-STORE) as a HU volume;
 * files of other series are left out. Throws SeriesInputError when none of them is an image slice of that series,
 * or when they do not form one volume. Messages name the series and the reason, never a patient attribute.
 */
export async function loadSeriesFiles(files: string[], seriesInstanceUid: string, note: (line: string) => void = () => {}): Promise<LoadedSeries> {
  const { bySeries, notes } = await readSlices(files);
  const instances = bySeries.get(seriesInstanceUid);
  if (!instances || instances.length === 0)
    throw new SeriesInputError(
      `no CT image slice of series ${seriesInstanceUid} among ${files.length} file${files.length === 1 ? '' : 's'}${notes.length > 0 ? ` (${notes.join('; ')})` : ''}`,
    );
  for (const n of notes) note(n);
  return seriesVolume(seriesInstanceUid, instances, notes, note, files.length);
}

/** Checks the slices of one series (transfer syntaxes, lossy compression, UIDs) and fills their HU volume. */
async function seriesVolume(uid: string, instances: Part10Slice[], notes: string[], note: (line: string) => void, files: number): Promise<LoadedSeries> {
  const description = instances[0]?.seriesDescription;
  const syntaxes = new Set(instances.map((i) => i.transferSyntax));
  for (const ts of syntaxes) {
    if (TRANSFER_SYNTAXES.has(ts)) continue;
    throw new SeriesInputError(
      `series ${uid} uses transfer syntax ${describeSyntax(ts)}, which ctgate does not read (it reads ${supportedSyntaxes()}). ` +
        'Convert it (e.g. gdcmconv --raw), or retrieve it from the PACS with transfer-syntax=1.2.840.10008.1.2.1.',
    );
  }
  const lossy = [...syntaxes].find((ts) => TRANSFER_SYNTAXES.get(ts)?.lossy);
  const lossyFlagged = instances.find((i) => i.lossyFlag);
  const lossyNote = lossy
    ? lossyWarning(lossy, uid)
    : lossyFlagged && lossyWarning(lossyFlagged.transferSyntax, uid).replace('is lossy compressed', 'was lossy compressed (LossyImageCompression 01)');
  if (lossyNote) {
    notes.push(lossyNote);
    note(`warning: ${lossyNote}`);
  }
  const first0 = instances[0] as Part10Slice;
  const uidProblem = sourceUidsProblem({
    studyInstanceUid: first0.study.studyInstanceUid,
    seriesInstanceUid: uid,
    frameOfReferenceUid: first0.meta.frameOfReferenceUid,
    sopInstanceUids: instances.filter((i) => !i.standInSop).map((i) => i.meta.sopInstanceUid),
  });
  if (uidProblem) throw new SeriesInputError(`series ${uid}: ${uidProblem}`);
  const standIns = instances.filter((i) => i.standInSop).length;
  if (standIns > 0) {
    const standInNote = `${standIns} of ${instances.length} slice file(s) have no SOPInstanceUID: the results reference them by stand-in UIDs (2.25…, from the series UID and the file's bytes), which no PACS holds`;
    notes.push(standInNote);
    note(`warning: ${standInNote}`);
  }
  let plan: ReturnType<typeof planVolume>;
  try {
    plan = planVolume(instances.map((i) => i.meta));
  } catch (e) {
    if (e instanceof VolumeError) throw new SeriesInputError(`series ${uid} does not form one volume: ${e.message}`);
    throw e;
  }
  for (const w of plan.warnings) note(w);
  const volume = allocateVolume(plan.geometry);
  const ordered = plan.order.map((i) => instances[i] as Part10Slice);
  for (const [k, inst] of ordered.entries()) {
    if (!inst.pixels) throw new SeriesInputError(`${inst.file}: no pixel data`);
    const info = TRANSFER_SYNTAXES.get(inst.transferSyntax);
    try {
      const stored = info?.codec ? await decodeFrame(inst.transferSyntax, inst.pixels, inst.format) : inst.pixels;
      fillSlice(volume, k, stored, inst.meta, info?.bigEndian === true);
    } catch (e) {
      if (e instanceof VolumeError) throw new SeriesInputError(e.message);
      if (e instanceof DecodeError) throw new SeriesInputError(`${inst.file}: ${e.message}`);
      throw e;
    }
    inst.pixels = null;
  }
  const first = ordered[0] as Part10Slice;
  return {
    volume,
    study: first.study,
    seriesNumber: first.seriesNumber,
    sopClassUid: first.sopClassUid,
    slices: ordered.map((i) => i.meta),
    seriesInstanceUid: uid,
    seriesDescription: description,
    transferSyntaxes: [...syntaxes],
    plan,
    notes: [...notes, ...plan.warnings],
    files,
  };
}
