/**
 * `ctgate analyze PATH… --out DIR`: runs the screening pipeline on a CT series from disk (DICOM Part 10 files, in
 * any transfer syntax of src/imaging/pixel-codecs.ts: native, deflated, big endian, RLE, JPEG, JPEG-LS, JPEG 2000) and writes DIR/findings.json plus key images (PNG, lung window, lesions in red).
 *
 * Exit codes: 0 the analysis ran (whatever the verdict, "not-assessable" included); 2 the input is unusable
 * (no DICOM image series, an unknown transfer syntax, source UIDs that cannot be carried, slices that do not form one volume); 78 the model manifest is
 * missing or invalid (EX_CONFIG); 1 usage or unexpected errors.
 */
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import dcmjs, { type DenaturalizedDataset } from 'dcmjs';
import { type Config, ConfigError, loadConfig } from '../config/index.js';
import { DecodeError, decodeFrame, describeSyntax, lossyWarning, type PixelFormat, supportedSyntaxes, TRANSFER_SYNTAXES } from '../imaging/pixel-codecs.js';
import { allocateVolume, fillSlice, planVolume, type SliceMeta, VolumeError } from '../imaging/slices.js';
import type { HuVolume } from '../imaging/volume.js';
import { keyImagePng } from '../inference/key-images.js';
import { loadManifest, ManifestError } from '../inference/manifest.js';
import { type PipelineResult, type Progress, runPipeline, type Stage } from '../inference/pipeline.js';
import { createOnnxModels, type ExecutionProvider, parseExecutionProviders } from '../inference/session.js';
import { loadMappings } from '../orders/mappings.js';
import type { Order } from '../orders/order.js';
import { analysisOf, type KeyImage, type SourceStudy } from '../results/context.js';
import { sourceUidsProblem, standInSopInstanceUid } from '../results/source-uids.js';
import { analyzeJobId, keyImageFileName, OrderFileError, orderFromFile, orderFromStudy, orderIdentity, writeResultFiles } from './analyze-results.js';

export const ANALYZE_USAGE = `usage:
  ctgate analyze PATH... --out DIR [--order ORM.hl7] [--manifest models/manifest.json] [--threads N] [--providers cuda,cpu]
      screen a chest CT series read from DICOM files (folders are searched recursively; with several series the
      one with the most slices is analysed) and write DIR/findings.json, key images (PNG), and what the service
      would send: DIR/seg.dcm, the key images as DICOM (key-*.dcm) and DIR/key-objects.dcm (when there is a
      lesion), DIR/report-sr.dcm (measurements, DICOM SR), DIR/bundle.json (FHIR) and DIR/oru.hl7 — for the order
      in --order, or one made from the DICOM header
      (exit 0: analysed, any verdict; 2: unusable input; 78: bad model manifest; 1: usage error)`;

export const EXIT_OK = 0;
export const EXIT_USAGE = 1;
export const EXIT_UNUSABLE_INPUT = 2;
export const EXIT_BAD_MANIFEST = 78;

export interface AnalyzeIo {
  out: (text: string) => void;
  err: (text: string) => void;
  /** Redraw the progress line in place (a terminal) instead of printing one line per step. */
  tty?: boolean;
}

const processIo: AnalyzeIo = { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t), tty: process.stderr.isTTY === true };

class InputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InputError';
  }
}

interface Instance {
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
      throw new InputError(`cannot read ${p}: ${(e as Error).message}`);
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

function studyOf(ds: Record<string, unknown>, dict: DenaturalizedDataset): SourceStudy {
  const out: SourceStudy = { studyInstanceUid: rawUid(dict, '0020000D') ?? '' };
  const set = <K extends keyof SourceStudy>(k: K, v: SourceStudy[K] | undefined) => {
    if (v !== undefined) out[k] = v;
  };
  set('accessionNumber', text(ds.AccessionNumber));
  set('studyId', text(ds.StudyID));
  set('studyDate', text(ds.StudyDate));
  set('studyTime', text(ds.StudyTime));
  set('studyDescription', text(ds.StudyDescription));
  set('referringPhysicianName', personName(ds.ReferringPhysicianName));
  set('patientName', personName(ds.PatientName));
  set('patientId', text(ds.PatientID));
  set('issuerOfPatientId', text(ds.IssuerOfPatientID));
  set('patientBirthDate', text(ds.PatientBirthDate));
  set('patientSex', text(ds.PatientSex));
  return out;
}

/** Reads one Part 10 file; null when it is not DICOM or not an image slice ctgate can place (with why). */
function readInstance(file: string, bytes: Uint8Array): { instance: Instance } | { skip: string } {
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
  study: SourceStudy;
  seriesNumber?: number;
  sopClassUid: string;
  /** Slices in volume z order. */
  slices: SliceMeta[];
  seriesInstanceUid: string;
  seriesDescription?: string;
  notes: string[];
  files: number;
}

/** Reads DICOM files (and folders), picks the series with the most slices and builds its HU volume. */
export async function loadSeriesFromFiles(paths: string[], note: (line: string) => void = () => {}): Promise<LoadedSeries> {
  const files = await listFiles(paths);
  if (files.length === 0) throw new InputError(`no files found in ${paths.join(', ')}`);
  const bySeries = new Map<string, Instance[]>();
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
  if (bySeries.size === 0)
    throw new InputError(`no CT image slices among ${files.length} file${files.length === 1 ? '' : 's'}${notes.length > 0 ? ` (${notes.join('; ')})` : ''}`);
  const ranked = [...bySeries.entries()].sort((a, b) => b[1].length - a[1].length || a[0].localeCompare(b[0]));
  const [uid, instances] = ranked[0] as [string, Instance[]];
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
  const syntaxes = new Set(instances.map((i) => i.transferSyntax));
  for (const ts of syntaxes) {
    if (TRANSFER_SYNTAXES.has(ts)) continue;
    throw new InputError(
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
  const first0 = instances[0] as Instance;
  const uidProblem = sourceUidsProblem({
    studyInstanceUid: first0.study.studyInstanceUid,
    seriesInstanceUid: uid,
    frameOfReferenceUid: first0.meta.frameOfReferenceUid,
    sopInstanceUids: instances.filter((i) => !i.standInSop).map((i) => i.meta.sopInstanceUid),
  });
  if (uidProblem) throw new InputError(`series ${uid}: ${uidProblem}`);
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
    if (e instanceof VolumeError) throw new InputError(`series ${uid} does not form one volume: ${e.message}`);
    throw e;
  }
  for (const w of plan.warnings) note(w);
  const volume = allocateVolume(plan.geometry);
  const ordered = plan.order.map((i) => instances[i] as Instance);
  for (const [k, inst] of ordered.entries()) {
    if (!inst.pixels) throw new InputError(`${inst.file}: no pixel data`);
    const info = TRANSFER_SYNTAXES.get(inst.transferSyntax);
    try {
      const stored = info?.codec ? await decodeFrame(inst.transferSyntax, inst.pixels, inst.format) : inst.pixels;
      fillSlice(volume, k, stored, inst.meta, info?.bigEndian === true);
    } catch (e) {
      if (e instanceof VolumeError) throw new InputError(e.message);
      if (e instanceof DecodeError) throw new InputError(`${inst.file}: ${e.message}`);
      throw e;
    }
    inst.pixels = null;
  }
  const first = ordered[0] as Instance;
  return {
    volume,
    study: first.study,
    seriesNumber: first.seriesNumber,
    sopClassUid: first.sopClassUid,
    slices: ordered.map((i) => i.meta),
    seriesInstanceUid: uid,
    seriesDescription: description,
    notes: [...notes, ...plan.warnings],
    files: files.length,
  };
}

const STAGE_NAMES: Record<Stage, string> = {
  check: 'checking the study',
  resample: 'resampling to the model grid',
  lungs: 'segmenting the lungs',
  lesions: 'lesion model',
  classify: 'classifier',
  findings: 'findings',
};

function progressPrinter(io: AnalyzeIo): { onProgress: (p: Progress) => void; end: () => void } {
  let lastLine = '';
  let lastQuarter = -1;
  let open = false;
  return {
    onProgress: (p) => {
      const label = STAGE_NAMES[p.stage];
      if (p.stage === 'lesions') {
        const line = `analyze: ${label}: tile ${p.done}/${p.total}`;
        if (io.tty) {
          io.err(`\r${line}`);
          open = p.done < p.total;
          if (!open) io.err('\n');
        } else {
          const q = p.total > 0 ? Math.floor((4 * p.done) / p.total) : 4;
          if (q !== lastQuarter) io.err(`${line}\n`);
          lastQuarter = q;
        }
        return;
      }
      if (p.done !== 0) return;
      const line = `analyze: ${label}…`;
      if (line !== lastLine) io.err(`${line}\n`);
      lastLine = line;
    },
    end: () => {
      if (open) io.err('\n');
    },
  };
}

export interface FindingsJson {
  verdict: PipelineResult['verdict'];
  /** covid-19-like / other-opacity / no-significant-opacity / not-assessable (src/inference/findings.ts). */
  category: PipelineResult['category'];
  /** The lesion volume (mL) under which the category is no-significant-opacity. */
  minOpacityMl: number;
  reason?: string;
  probability: number | null;
  threshold: number;
  lesionVolumeMl: number | null;
  lungVolumeMl: { left: number; right: number; total: number } | null;
  lungInvolvementPercent: { left: number; right: number; total: number } | null;
  lesionCount: number | null;
  bilateral: boolean | null;
  peripheralShare: number | null;
  keySlices: { sliceIndex: number; instanceNumber?: number; sopInstanceUid: string; lesionAreaMm2: number; image: string }[];
  models: string[];
  executionProvider: string;
  timingsMs: Record<string, number>;
  series: { seriesInstanceUid: string; seriesDescription?: string; slices: number; size: [number, number, number]; spacingMm: [number, number, number] };
  /** The result files written beside findings.json (seg.dcm, key images, key-objects.dcm, report-sr.dcm, bundle.json, oru.hl7). */
  results: string[];
  warnings: string[];
}

/** `ctgate analyze`. */
export async function analyzeCommand(args: string[], io: AnalyzeIo = processIo): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args,
      options: {
        out: { type: 'string' },
        manifest: { type: 'string', default: 'models/manifest.json' },
        threads: { type: 'string' },
        providers: { type: 'string' },
        order: { type: 'string' },
      },
      allowPositionals: true,
    }));
  } catch (e) {
    io.err(`ctgate analyze: ${(e as Error).message}\n${ANALYZE_USAGE}\n`);
    return EXIT_USAGE;
  }
  const usage = (why: string) => {
    io.err(`ctgate analyze: ${why}\n${ANALYZE_USAGE}\n`);
    return EXIT_USAGE;
  };
  if (positionals.length === 0) return usage('give the DICOM files or folders to analyse');
  const outDir = values.out as string | undefined;
  if (!outDir) return usage('--out DIR is required');
  let threads: number | undefined;
  if (values.threads !== undefined) {
    threads = Number(values.threads);
    if (!Number.isInteger(threads) || threads < 1 || threads > 256) return usage(`--threads must be a whole number 1..256, got ${String(values.threads)}`);
  }
  let providers: ExecutionProvider[] | undefined;
  if (values.providers !== undefined) {
    try {
      providers = parseExecutionProviders(String(values.providers));
    } catch (e) {
      return usage((e as Error).message);
    }
  }
  const timingsMs: Record<string, number> = {};
  const t0 = performance.now();
  const log = (line: string) => io.err(`analyze: ${line}\n`);

  // The manifest first: a deployment problem, reported before any patient data is read.
  let t = performance.now();
  let manifest: Awaited<ReturnType<typeof loadManifest>>;
  try {
    manifest = await loadManifest(values.manifest as string);
  } catch (e) {
    io.err(`ctgate analyze: ${(e as Error).message}\n`);
    return e instanceof ManifestError ? EXIT_BAD_MANIFEST : EXIT_USAGE;
  }
  timingsMs.manifest = Math.round(performance.now() - t);
  for (const w of manifest.warnings) log(`warning: ${w}`);

  let config: Config;
  try {
    config = loadConfig();
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    io.err(`ctgate analyze: configuration error: ${e.message}\n`);
    return EXIT_BAD_MANIFEST;
  }
  let orderFromArgs: Order | undefined;
  // One read of the mappings for the order and its sender's patient identity rule.
  const mappings = values.order !== undefined ? loadMappings(config.mappingsFile) : undefined;
  if (values.order !== undefined && mappings) {
    try {
      orderFromArgs = await orderFromFile(String(values.order), mappings);
    } catch (e) {
      if (!(e instanceof OrderFileError)) throw e;
      io.err(`ctgate analyze: unusable input: ${e.message}\n`);
      return EXIT_UNUSABLE_INPUT;
    }
  }

  t = performance.now();
  let series: LoadedSeries;
  try {
    series = await loadSeriesFromFiles(positionals, log);
  } catch (e) {
    if (e instanceof InputError) {
      io.err(`ctgate analyze: unusable input: ${e.message}\n`);
      return EXIT_UNUSABLE_INPUT;
    }
    throw e;
  }
  timingsMs.read = Math.round(performance.now() - t);
  // As the worker does: an order is analysed only against its own patient's images.
  const identity = orderFromArgs && mappings ? orderIdentity(orderFromArgs, series.study, mappings) : undefined;
  if (identity?.action === 'fail') {
    io.err(`ctgate analyze: unusable input: the order is not for the patient of these images: ${identity.message}\n`);
    return EXIT_UNUSABLE_INPUT;
  }
  const g = series.volume.geometry;
  log(`series ${series.seriesInstanceUid}: ${g.size[2]} slices of ${g.size[0]}×${g.size[1]}, spacing ${g.spacing.map((s) => s.toFixed(3)).join(' × ')} mm`);

  t = performance.now();
  let models: Awaited<ReturnType<typeof createOnnxModels>>;
  try {
    models = await createOnnxModels(manifest, { executionProviders: providers, intraOpNumThreads: threads });
  } catch (e) {
    io.err(`ctgate analyze: cannot open the models of ${manifest.file}: ${(e as Error).message}\n`);
    return EXIT_BAD_MANIFEST;
  }
  timingsMs.sessions = Math.round(performance.now() - t);
  const fallbacks = [...new Set(models.fallbackReasons)].map((r) => `execution provider fell back to CPU: ${r}`);
  for (const f of fallbacks) log(f);

  try {
    await mkdir(outDir, { recursive: true });
  } catch (e) {
    io.err(`ctgate analyze: cannot create ${outDir}: ${(e as Error).message}\n`);
    return EXIT_USAGE;
  }

  const progress = progressPrinter(io);
  let result: PipelineResult;
  try {
    result = await runPipeline(series.volume, models, { onProgress: progress.onProgress });
  } catch (e) {
    progress.end();
    io.err(`ctgate analyze: the analysis failed: ${(e as Error).message}\n`);
    return EXIT_USAGE;
  }
  progress.end();
  Object.assign(timingsMs, result.timingsMs);

  t = performance.now();
  const keySlices: FindingsJson['keySlices'] = [];
  const keyImages: KeyImage[] = [];
  const f = result.findings;
  if (f && result.lesionMask) {
    let rank = 0;
    for (const ks of f.keySlices) {
      rank++;
      const meta = series.slices[ks.index] as SliceMeta;
      const image = keyImageFileName(rank, ks.index, 'png');
      const png = keyImagePng(series.volume, ks.index, result.lesionMask);
      await writeFile(join(outDir, image), png);
      keyImages.push({ sliceIndex: ks.index, sopInstanceUid: meta.sopInstanceUid, lesionAreaMm2: ks.lesionAreaMm2, png });
      keySlices.push({
        sliceIndex: ks.index,
        instanceNumber: meta.instanceNumber,
        sopInstanceUid: meta.sopInstanceUid,
        lesionAreaMm2: ks.lesionAreaMm2,
        image,
      });
    }
  }
  timingsMs.keyImages = Math.round(performance.now() - t);

  // What the service would send for this result: the worker's result set (results/result-set.ts), as files.
  t = performance.now();
  const order = orderFromArgs ?? orderFromStudy(series.study);
  const resultNotes = orderFromArgs
    ? identity?.action === 'warn' && identity.message
      ? [identity.message]
      : []
    : ['no --order given: bundle.json and oru.hl7 answer an order made from the DICOM header (placer number = accession number)'];
  const warning = identity?.action === 'warn' && identity.comparison ? identity.comparison : undefined;
  const written = await writeResultFiles(
    {
      jobId: analyzeJobId(order),
      order,
      study: series.study,
      series: {
        seriesInstanceUid: series.seriesInstanceUid,
        seriesNumber: series.seriesNumber,
        seriesDescription: series.seriesDescription,
        frameOfReferenceUid: series.slices[0]?.frameOfReferenceUid ?? '',
        sopClassUid: series.sopClassUid,
        slices: series.slices,
        geometry: g,
      },
      analysis: analysisOf(result, manifest),
      keyImages,
      links: { dicomWebBaseUrl: `${config.publicUrl}/dicom-web` },
      ...(warning ? { patientIdentityWarning: { differ: warning.differ, notComparable: warning.notComparable.map((p) => p.field) } } : {}),
    },
    config,
    outDir,
  );
  timingsMs.results = Math.round(performance.now() - t);
  timingsMs.total = Math.round(performance.now() - t0);

  const json: FindingsJson = {
    verdict: result.verdict,
    category: result.category,
    minOpacityMl: result.minOpacityMl,
    ...(result.reason ? { reason: result.reason } : {}),
    probability: result.probability,
    threshold: result.threshold,
    lesionVolumeMl: f?.lesionVolumeMl ?? null,
    lungVolumeMl: f?.lungVolumeMl ?? null,
    lungInvolvementPercent: f?.lungInvolvementPercent ?? null,
    lesionCount: f?.lesionCount ?? null,
    bilateral: f?.bilateral ?? null,
    peripheralShare: f?.peripheralShare ?? null,
    keySlices,
    models: result.models,
    executionProvider: result.executionProvider,
    timingsMs,
    series: {
      seriesInstanceUid: series.seriesInstanceUid,
      ...(series.seriesDescription ? { seriesDescription: series.seriesDescription } : {}),
      slices: g.size[2],
      size: [...g.size],
      spacingMm: [...g.spacing],
    },
    results: written.files,
    warnings: [...manifest.warnings, ...series.notes, ...fallbacks, ...result.warnings, ...resultNotes, ...written.notes],
  };
  await writeFile(join(outDir, 'findings.json'), `${JSON.stringify(json, null, 2)}\n`);
  const summary =
    result.verdict === 'not-assessable'
      ? `not assessable: ${result.reason}`
      : `${result.verdict}, ${result.category} (p = ${(result.probability as number).toFixed(3)}, threshold ${result.threshold}); lesion ${f?.lesionVolumeMl.toFixed(1)} mL in ${f?.lesionCount} region(s), ${f?.lungInvolvementPercent.total.toFixed(1)} % of the lungs`;
  io.out(
    `${summary}\nwrote ${join(outDir, 'findings.json')}${keySlices.length > 0 ? `, ${keySlices.length} key image(s)` : ''} and ${written.files.join(', ')} in ${timingsMs.total} ms\n`,
  );
  return EXIT_OK;
}
