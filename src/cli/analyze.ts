/**
 * `ctgate analyze PATH… --out DIR`: runs the screening pipeline on a CT series from disk (DICOM Part 10 files, in
 * any transfer syntax of src/imaging/pixel-codecs.ts: native, deflated, big endian, RLE, JPEG, JPEG-LS, JPEG 2000) and writes DIR/findings.json plus key images (PNG, lung window, lesions in red).
 *
 * Exit codes: 0 the analysis ran (whatever the verdict, "not-assessable" included); 2 the input is unusable
 * (no DICOM image series, an unknown transfer syntax, source UIDs that cannot be carried, slices that do not form one volume); 78 the model manifest is
 * missing or invalid (EX_CONFIG); 1 usage or unexpected errors.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type Config, ConfigError, loadConfig } from '../config/index.js';
import { type LoadedSeries, loadSeriesFromFiles, SeriesInputError } from '../dicom/part10-series.js';
import type { Order } from '../domain/order.js';
import type { SliceMeta } from '../imaging/slices.js';
import { loadManifest, ManifestError } from '../inference/manifest.js';
import type { PipelineResult, Progress, Step } from '../inference/pipeline.js';
import { createOnnxModels, type ExecutionProvider, parseExecutionProviders } from '../inference/session.js';
import { loadMappings } from '../orders/mappings.js';
import { analyzeVolume, type VolumeAnalysis } from '../results/analyze-volume.js';
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

/** The file reading lives in src/dicom/part10-series.ts (the jobs read received studies with it too). */
export { type LoadedSeries, loadSeriesFromFiles };

/** The model pipeline's steps as the progress lines name them. */
const STEP_NAMES: Record<Step, string> = {
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
      const label = STEP_NAMES[p.stage];
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
    if (e instanceof SeriesInputError) {
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
  let analysed: VolumeAnalysis;
  try {
    analysed = await analyzeVolume(series, models, manifest, { onProgress: progress.onProgress });
  } catch (e) {
    progress.end();
    io.err(`ctgate analyze: the analysis failed: ${(e as Error).message}\n`);
    return EXIT_USAGE;
  }
  progress.end();
  const { result, keyImages } = analysed;
  Object.assign(timingsMs, result.timingsMs);

  t = performance.now();
  const keySlices: FindingsJson['keySlices'] = [];
  const f = result.findings;
  for (const [i, k] of keyImages.entries()) {
    const image = keyImageFileName(i + 1, k.sliceIndex, 'png');
    await writeFile(join(outDir, image), k.png);
    const { instanceNumber } = series.slices[k.sliceIndex] as SliceMeta;
    keySlices.push({ sliceIndex: k.sliceIndex, instanceNumber, sopInstanceUid: k.sopInstanceUid, lesionAreaMm2: k.lesionAreaMm2, image });
  }
  timingsMs.keyImages = Math.round(analysed.keyImagesMs + performance.now() - t);

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
      series: analysed.series,
      analysis: analysed.analysis,
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
