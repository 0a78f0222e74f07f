/**
 * C-FIND (Study Root, -S) through DCMTK's `findscu`, run as a supervised child process like echoscu and storescu
 * (dcmtk.ts): ctgate never speaks DIMSE itself. Each query is one association; findscu writes every answer to a file
 * (-X, rsp0001.dcm… in a private temporary folder, removed afterwards), which dcmjs reads. Outcomes: the answers, or a
 * DimseError (association rejected, C-FIND failure status, network failure) whose message names the peer, the cause
 * and status words only — never a host, a path or a patient attribute.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import dcmjs from 'dcmjs';
import type { SourceStudy } from '../domain/study.js';
import type { SeriesCandidate } from '../imaging/series-selection.js';
import { numberValue, textValue } from './dataset-values.js';
import { associationFailure, commonArgs, DIMSE_PEER, DimseError, type DimsePeer, runTool, scrub } from './dcmtk.js';
import { definedOnly } from './defined.js';

/** A study as a STUDY-level C-FIND answers it. */
export interface FoundStudy {
  studyInstanceUid: string;
  accessionNumber?: string;
  patientId?: string;
  issuerOfPatientId?: string;
  /** The Alphabetic component group of the PN. */
  patientName?: string;
  patientBirthDate?: string;
  numberOfStudyRelatedInstances?: number;
}

/** A series as a SERIES-level C-FIND answers it; instance attributes only when the PACS returned them. */
export interface FoundSeries {
  seriesInstanceUid: string;
  modality?: string;
  seriesNumber?: number;
  seriesDescription?: string;
  numberOfSeriesRelatedInstances?: number;
  imageType: string[];
  sliceThickness?: number;
  orientation?: number[];
  kernel?: string;
}

type Answer = Record<string, unknown>;

/** Characters that C-FIND matching reads as wildcards or value separators: refused in a match value. */
export function matchValueProblem(v: string): string | undefined {
  if (v.trim() === '') return 'a non-empty value';
  if (/[*?\\]/.test(v)) return 'a value without *, ? or backslash (C-FIND would read them as wildcards)';
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
  if (/[\u0000-\u001f]/.test(v)) return 'a value without control characters';
  return undefined;
}

/**
 * One C-FIND at `level` with `keys` (DICOM dictionary keyword → match value; '' asks for the attribute back).
 * Returns the answers as dcmjs naturalized data sets. Throws DimseError.
 */
export async function cFind(peer: DimsePeer, level: 'STUDY' | 'SERIES' | 'IMAGE', keys: Record<string, string>): Promise<Answer[]> {
  const dir = mkdtempSync(join(tmpdir(), 'ctgate-findscu-'));
  try {
    const t = String(peer.timeoutS);
    const keyArgs = [`QueryRetrieveLevel=${level}`, ...Object.entries(keys).map(([k, v]) => (v === '' ? k : `${k}=${v}`))].flatMap((k) => ['-k', k]);
    const args = [...commonArgs(peer), '-td', t, '-S', '-X', '-od', dir, ...keyArgs, peer.host, String(peer.port)];
    const r = await runTool('findscu', args, (peer.timeoutS * 4 + 10) * 1000);
    if (r.spawnError) throw new DimseError('usage', `findscu could not run (install dcmtk): ${r.spawnError.code}`, false);
    const name = peer.label ?? DIMSE_PEER;
    const what = `C-FIND (${level})`;
    const assoc = associationFailure(r.out, what, name);
    if (assoc) throw assoc;
    if (r.signal) throw new DimseError('network', `${name} did not answer in time (${what} killed)`, true);
    if (/No Acceptable Presentation Contexts|No presentation context/i.test(r.out))
      throw new DimseError('refused', `${name} accepts no presentation context for Study Root C-FIND`, false);
    const final = /Received Final Find Response[^(\n]*\(([^)\n]*)\)/.exec(r.out)?.[1]?.trim();
    if (final !== undefined && !/^Success/i.test(final)) throw new DimseError('refused', `${name} refused the ${what}: ${final}`, false);
    if (r.code !== 0 || final === undefined) {
      const err = r.out.split('\n').find((l) => /^[EF]:/.test(l)) ?? `exit ${r.code}`;
      throw new DimseError('network', `${what} at ${name} failed: ${scrub(err)}`, true);
    }
    const files = readdirSync(dir)
      .filter((f) => /^rsp\d+\.dcm$/.test(f))
      .sort();
    return files.map((f) => {
      const bytes = readFileSync(join(dir, f));
      const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
      return dcmjs.data.DicomMetaDictionary.naturalizeDataset(dcmjs.data.DicomMessage.readFile(ab).dict) as Answer;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function values(a: Answer, key: string): string[] {
  const v = a[key];
  const list = Array.isArray(v) ? v : v === undefined || v === null ? [] : [v];
  return list.map((x) => String(x).trim()).filter((x) => x !== '');
}

/** Studies matching a StudyInstanceUID or an AccessionNumber (exactly one), with their patient attributes. */
export async function findStudies(peer: DimsePeer, match: { studyInstanceUid?: string; accessionNumber?: string }): Promise<FoundStudy[]> {
  const answers = await cFind(peer, 'STUDY', {
    StudyInstanceUID: match.studyInstanceUid ?? '',
    AccessionNumber: match.accessionNumber ?? '',
    PatientID: '',
    IssuerOfPatientID: '',
    PatientName: '',
    PatientBirthDate: '',
    NumberOfStudyRelatedInstances: '',
  });
  return answers
    .map((a) =>
      definedOnly<FoundStudy>({
        studyInstanceUid: textValue(a, 'StudyInstanceUID') ?? '',
        accessionNumber: textValue(a, 'AccessionNumber'),
        patientId: textValue(a, 'PatientID'),
        issuerOfPatientId: textValue(a, 'IssuerOfPatientID'),
        patientName: textValue(a, 'PatientName'),
        patientBirthDate: textValue(a, 'PatientBirthDate'),
        numberOfStudyRelatedInstances: numberValue(a, 'NumberOfStudyRelatedInstances'),
      }),
    )
    .filter((s) => s.studyInstanceUid !== '');
}

/**
 * The series of a study. Besides the series attributes every PACS returns, it asks for ImageType, SliceThickness,
 * ImageOrientationPatient and ConvolutionKernel, which are instance attributes: a PACS may return them at series
 * level (Orthanc reads them from one instance) or leave them empty; empty ones stay unknown.
 */
export async function findSeries(peer: DimsePeer, studyInstanceUid: string): Promise<FoundSeries[]> {
  const answers = await cFind(peer, 'SERIES', {
    StudyInstanceUID: studyInstanceUid,
    SeriesInstanceUID: '',
    Modality: '',
    SeriesNumber: '',
    SeriesDescription: '',
    NumberOfSeriesRelatedInstances: '',
    ImageType: '',
    SliceThickness: '',
    ImageOrientationPatient: '',
    ConvolutionKernel: '',
  });
  return answers
    .map((a) => {
      const orientation = values(a, 'ImageOrientationPatient').map(Number);
      return definedOnly<FoundSeries>({
        seriesInstanceUid: textValue(a, 'SeriesInstanceUID') ?? '',
        imageType: values(a, 'ImageType').map((v) => v.toUpperCase()),
        modality: textValue(a, 'Modality'),
        seriesNumber: numberValue(a, 'SeriesNumber'),
        seriesDescription: textValue(a, 'SeriesDescription'),
        numberOfSeriesRelatedInstances: numberValue(a, 'NumberOfSeriesRelatedInstances'),
        sliceThickness: numberValue(a, 'SliceThickness'),
        orientation: orientation.length >= 6 && orientation.every(Number.isFinite) ? orientation.slice(0, 6) : undefined,
        kernel: textValue(a, 'ConvolutionKernel'),
      });
    })
    .filter((s) => s.seriesInstanceUid !== '');
}

/** A C-FIND series answer as a selection candidate; what the PACS did not return stays unknown. */
export function candidateFromFoundSeries(s: FoundSeries): SeriesCandidate {
  return {
    seriesInstanceUid: s.seriesInstanceUid,
    seriesNumber: s.seriesNumber,
    modality: s.modality?.toUpperCase(),
    description: s.seriesDescription,
    imageType: s.imageType,
    sliceThickness: s.sliceThickness,
    orientation: s.orientation,
    numberOfInstances: s.numberOfSeriesRelatedInstances ?? 0,
    kernel: s.kernel,
  };
}

/** The study's attributes for the results (SEG, SR, KOS repeat them; absent ones left out); null when the PACS does not list it. */
export async function findSourceStudy(peer: DimsePeer, studyInstanceUid: string): Promise<SourceStudy | null> {
  const keys = {
    StudyInstanceUID: studyInstanceUid,
    AccessionNumber: '',
    StudyID: '',
    StudyDate: '',
    StudyTime: '',
    StudyDescription: '',
    ReferringPhysicianName: '',
    PatientName: '',
    PatientID: '',
    IssuerOfPatientID: '',
    PatientBirthDate: '',
    PatientSex: '',
  };
  const a = (await cFind(peer, 'STUDY', keys)).find((x) => textValue(x, 'StudyInstanceUID') === studyInstanceUid);
  if (!a) return null;
  return definedOnly<SourceStudy>({
    studyInstanceUid,
    accessionNumber: textValue(a, 'AccessionNumber'),
    studyId: textValue(a, 'StudyID'),
    studyDate: textValue(a, 'StudyDate'),
    studyTime: textValue(a, 'StudyTime'),
    studyDescription: textValue(a, 'StudyDescription'),
    referringPhysicianName: textValue(a, 'ReferringPhysicianName'),
    patientName: textValue(a, 'PatientName'),
    patientId: textValue(a, 'PatientID'),
    issuerOfPatientId: textValue(a, 'IssuerOfPatientID'),
    patientBirthDate: textValue(a, 'PatientBirthDate'),
    patientSex: textValue(a, 'PatientSex'),
  });
}

/** The SOP Instance UIDs of one series (IMAGE-level C-FIND). */
export async function findInstanceUids(peer: DimsePeer, studyInstanceUid: string, seriesInstanceUid: string): Promise<string[]> {
  const answers = await cFind(peer, 'IMAGE', { StudyInstanceUID: studyInstanceUid, SeriesInstanceUID: seriesInstanceUid, SOPInstanceUID: '' });
  return answers.map((a) => textValue(a, 'SOPInstanceUID') ?? '').filter((u) => u !== '');
}
