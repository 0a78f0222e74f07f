/**
 * `ctgate synth`: writes a synthetic chest-CT study with its ground truth.
 *
 *   ctgate synth --out DIR --seed N --kind covid|lobar-pneumonia|nodule|old-lesion|healthy
 *                [--size 128,128,64] [--spacing 2.8,2.8,5] [--accession ACC1] [--patient-id ID]
 *                [--noise 15] [--signed]
 *
 * DIR/dicom/0001.dcm …   the CT series (one file per slice, instance k+1 = slice k, inferior → superior)
 * DIR/lung-mask.npy      uint8 (nz, ny, nx), 1 = lung (lesions inside the lungs included)
 * DIR/lesion-mask.npy    uint8 (nz, ny, nx), 1 = lesion of any kind
 * DIR/masks.json         geometry of the masks (LPS mm)
 * DIR/truth.json         kind, positive (COVID-19-like), lesions, lung and lesion volumes (mL) per lung, UIDs
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeCtSeries, writeSeriesToDir } from './dicom-writer.js';
import { writeMasks } from './masks.js';
import { generateChestCt, maskVolumesMl, PHANTOM_KINDS, type PhantomKind, type Vec3 } from './phantom.js';

export const SYNTH_USAGE = `usage:
  ctgate synth --out DIR --seed N --kind KIND [--size NX,NY,NZ] [--spacing SX,SY,SZ] [--accession ACC]
               [--patient-id ID] [--noise SIGMA_HU] [--signed]
      KIND: ${PHANTOM_KINDS.join(' | ')}
      defaults: --size 128,128,64 --spacing 2.8,2.8,5 (mm) --noise 15; pixels unsigned with intercept -1024
      writes DIR/dicom/NNNN.dcm, DIR/lung-mask.npy, DIR/lesion-mask.npy, DIR/masks.json, DIR/truth.json`;

class UsageError extends Error {}

function triple(text: string, name: string, integer: boolean): Vec3 {
  const parts = text.split(',').map((s) => Number(s.trim()));
  if (parts.length !== 3 || parts.some((v) => !Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v)))) {
    throw new UsageError(`--${name}: expected three positive ${integer ? 'integers' : 'numbers'} separated by commas, got "${text}"`);
  }
  return parts as Vec3;
}

export interface SynthTruth {
  generator: string;
  kind: PhantomKind;
  /** COVID-19-like: what the classifier should call positive. */
  positive: boolean;
  seed: number;
  geometry: unknown;
  studyInstanceUid: string;
  seriesInstanceUid: string;
  accessionNumber: string;
  patientId: string;
  lungVolumeMl: { right: number; left: number; total: number };
  lesionVolumeMl: { right: number; left: number; total: number };
  /** Lesion volume as a percentage of lung volume, per lung and in all. */
  lesionPercent: { right: number; left: number; total: number };
  lesions: unknown[];
  files: { dicom: string; instances: number; lungMask: string; lesionMask: string; masks: string };
}

export interface SynthIo {
  out: { write(text: string): unknown };
  err: { write(text: string): unknown };
}

/** Runs `ctgate synth ARGS`; returns the process exit code (0 written, 1 usage error). Progress goes to io.out. */
export async function synthCommand(args: string[], io: SynthIo = { out: process.stdout, err: process.stderr }): Promise<number> {
  const { out, err } = io;
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        out: { type: 'string' },
        seed: { type: 'string' },
        kind: { type: 'string' },
        size: { type: 'string' },
        spacing: { type: 'string' },
        accession: { type: 'string' },
        'patient-id': { type: 'string' },
        noise: { type: 'string' },
        signed: { type: 'boolean' },
      },
      allowPositionals: false,
    }));
  } catch (e) {
    err.write(`ctgate synth: ${(e as Error).message}\n${SYNTH_USAGE}\n`);
    return 1;
  }
  try {
    const dir = values.out;
    if (typeof dir !== 'string' || dir === '') throw new UsageError('--out DIR is required');
    const seedText = values.seed;
    if (typeof seedText !== 'string') throw new UsageError('--seed N is required');
    const seed = Number(seedText);
    if (!Number.isSafeInteger(seed) || seed < 0) throw new UsageError(`--seed: expected a non-negative integer, got "${seedText}"`);
    const kind = values.kind as PhantomKind | undefined;
    if (kind === undefined || !PHANTOM_KINDS.includes(kind)) throw new UsageError(`--kind: expected one of ${PHANTOM_KINDS.join(', ')}, got "${String(kind)}"`);
    const size = triple(typeof values.size === 'string' ? values.size : '128,128,64', 'size', true);
    const spacing = triple(typeof values.spacing === 'string' ? values.spacing : '2.8,2.8,5', 'spacing', false);
    const noise = typeof values.noise === 'string' ? Number(values.noise) : 15;
    if (!Number.isFinite(noise) || noise < 0) throw new UsageError(`--noise: expected a number ≥ 0, got "${String(values.noise)}"`);
    const accession = typeof values.accession === 'string' ? values.accession : `SYN${seed}`;
    const patientId = typeof values['patient-id'] === 'string' ? values['patient-id'] : `SYN-${seed}`;
    if (accession.length > 16) throw new UsageError('--accession: at most 16 characters (DICOM SH)');
    if (patientId.length > 64) throw new UsageError('--patient-id: at most 64 characters (DICOM LO)');

    const say = (line: string) => out.write(`${line}\n`);
    let t = performance.now();
    const lap = () => {
      const now = performance.now();
      const ms = Math.round(now - t);
      t = now;
      return `${ms} ms`;
    };
    say(`synth: ${kind} phantom ${size.join('×')} voxels at ${spacing.join('×')} mm, seed ${seed}`);
    const phantom = generateChestCt({ seed, kind, size, spacing, noiseSigma: noise });
    say(`synth: generated, ${phantom.lesions.length} lesion(s) (${lap()})`);
    const series = writeCtSeries(phantom.volume, { seed, accessionNumber: accession, patientId, pixelRepresentation: values.signed ? 1 : 0 });
    say(`synth: encoded ${series.files.length} DICOM instances (${lap()})`);
    await mkdir(dir, { recursive: true });
    await writeSeriesToDir(join(dir, 'dicom'), series);
    say(`synth: wrote ${join(dir, 'dicom')}/0001.dcm … ${String(series.files.length).padStart(4, '0')}.dcm (${lap()})`);
    await writeMasks(dir, { geometry: phantom.volume.geometry, lungMask: phantom.lungMask, lesionMask: phantom.lesionMask });
    const g = phantom.volume.geometry;
    const lung = maskVolumesMl(phantom.lungMask, g);
    const lesion = maskVolumesMl(phantom.lesionMask, g);
    const pct = (a: number, b: number) => (b > 0 ? Math.round((1000 * a) / b) / 10 : 0);
    const truth: SynthTruth = {
      generator: 'ctgate-synthetic phantom 1',
      kind,
      positive: kind === 'covid',
      seed,
      geometry: g,
      studyInstanceUid: series.studyInstanceUid,
      seriesInstanceUid: series.seriesInstanceUid,
      accessionNumber: accession,
      patientId,
      lungVolumeMl: lung,
      lesionVolumeMl: lesion,
      lesionPercent: { right: pct(lesion.right, lung.right), left: pct(lesion.left, lung.left), total: pct(lesion.total, lung.total) },
      lesions: phantom.lesions,
      files: { dicom: 'dicom', instances: series.files.length, lungMask: 'lung-mask.npy', lesionMask: 'lesion-mask.npy', masks: 'masks.json' },
    };
    await writeFile(join(dir, 'truth.json'), `${JSON.stringify(truth, null, 2)}\n`);
    say(`synth: wrote masks and truth.json (${lap()}): lungs ${lung.total} mL, lesions ${lesion.total} mL (right ${lesion.right}, left ${lesion.left})`);
    say(`synth: study ${series.studyInstanceUid} accession ${accession}`);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      err.write(`ctgate synth: ${e.message}\n${SYNTH_USAGE}\n`);
      return 1;
    }
    throw e;
  }
}
