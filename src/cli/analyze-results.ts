/**
 * The result objects `ctgate analyze` writes beside findings.json — DIR/seg.dcm, the key images as secondary
 * captures (DIR/key-<rank>-slice-<z>.dcm, beside the PNG of the same name), the key object selection that flags
 * them and their CT slices (DIR/key-objects.dcm, TID 2000), the measurement report (DIR/report-sr.dcm, TID 1500),
 * DIR/bundle.json, DIR/oru.hl7 —
 * the worker's result set (results/result-set.ts: same objects, UIDs and software version), so an integration
 * engineer sees exactly what would be sent.
 * The order comes from `--order FILE` (the ORM the result answers); without one it is made from the DICOM header
 * (accession number as the placer number) and findings.json says so.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config/index.js';
import { jobIdFor } from '../domain/job.js';
import type { Order } from '../domain/order.js';
import { decideIdentity, type IdentityDecision } from '../domain/patient-identity.js';
import type { SourceStudy } from '../domain/study.js';
import { normalizeSegments } from '../hl7/text.js';
import { evaluateMessage } from '../orders/evaluate.js';
import type { Mappings } from '../orders/mappings.js';
import type { ResultContext } from '../results/context.js';
import { loadFhirMappings } from '../results/fhir/mappings.js';
import { oruParties, resultSet } from '../results/result-set.js';

export class OrderFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OrderFileError';
  }
}

/** The first chest-CT order of an ORM/OMI file (CR or LF line ends). */
export async function orderFromFile(file: string, mappings: Mappings): Promise<Order> {
  let text: string;
  try {
    text = normalizeSegments((await readFile(file, 'utf8')).trim());
  } catch (e) {
    throw new OrderFileError(`cannot read ${file}: ${(e as Error).message}`);
  }
  // The user's own file, the reason to their terminal: it may quote the offending value.
  const ev = evaluateMessage(text, mappings, { quoteValues: true });
  if (ev.kind === 'reject') throw new OrderFileError(`${file} is not a usable order: ${ev.error.reason}`);
  const chest = ev.orders.find((o) => o.chestCt.chestCt) ?? ev.orders[0];
  if (!chest) throw new OrderFileError(`${file} holds no order`);
  return chest.order;
}

/**
 * The worker's patient identity check for `--order`: the order's patient against the files' DICOM patient, under
 * the sender's rule in the mappings. The decision's message names fields, never values.
 */
export function orderIdentity(order: Order, study: SourceStudy, mappings: Mappings): IdentityDecision {
  const rule = mappings.patientIdentity(order.sender.facility);
  const sender = order.sender.facility || order.sender.application || 'unknown';
  return decideIdentity(order.patient, study, rule, sender);
}

const isoDate = (da?: string) => (da && /^\d{8}$/.test(da) ? `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6, 8)}` : undefined);
const SEX: Record<string, Order['patient']['sex']> = { M: 'male', F: 'female', O: 'other' };

/** An order made from the study's DICOM header, for analysing files that came without one. */
export function orderFromStudy(study: SourceStudy): Order {
  const [family = '', ...given] = (study.patientName ?? '').split('^');
  const placer = study.accessionNumber ?? `STUDY-${study.studyInstanceUid.slice(-16)}`;
  return {
    sender: { application: 'CTGATE-ANALYZE', facility: 'LOCAL' },
    message: { type: 'ORM^O01', controlId: placer, version: '2.5.1', processingId: 'P' },
    orderControl: 'NW',
    placerOrderNumber: placer,
    accessionNumber: study.accessionNumber,
    studyInstanceUid: study.studyInstanceUid,
    procedure: { code: '24627-2', text: 'CT Chest', system: 'LN' },
    patient: {
      identifiers: study.patientId ? [{ value: study.patientId, authority: study.issuerOfPatientId ?? 'LOCAL', type: 'MR' }] : [],
      name: { family, given: given.filter((g) => g !== '') },
      birthDate: isoDate(study.patientBirthDate),
      sex: SEX[study.patientSex ?? ''] ?? 'unknown',
    },
  };
}

export function analyzeJobId(order: Order): string {
  return jobIdFor(order.sender, order.placerOrderNumber);
}

export interface WrittenResults {
  files: string[];
  notes: string[];
}

/** The file name of a key image: its PNG (analyze.ts) and its secondary capture share the name. */
export const keyImageFileName = (rank: number, sliceIndex: number, ext: 'png' | 'dcm') => `key-${rank}-slice-${sliceIndex}.${ext}`;

/**
 * Writes the result set (results/result-set.ts, the worker's objects): seg.dcm, the key images' .dcm and
 * key-objects.dcm (when there is a lesion), report-sr.dcm, bundle.json and oru.hl7.
 */
export async function writeResultFiles(ctx: ResultContext, config: Config, outDir: string): Promise<WrittenResults> {
  const set = resultSet(ctx, { fhirMappings: loadFhirMappings(config.resultMappingsFile), oru: oruParties(config) });
  const files: string[] = [];
  const write = async (name: string, bytes: Uint8Array | string) => {
    await writeFile(join(outDir, name), bytes);
    files.push(name);
  };
  const { seg, keyImages, kos, sr, absent } = set.dicom;
  if (seg) await write('seg.dcm', seg.bytes);
  for (const k of keyImages?.instances ?? []) await write(keyImageFileName(k.instanceNumber, k.sliceIndex, 'dcm'), k.bytes);
  if (kos) await write('key-objects.dcm', kos.bytes);
  // Always: without a SEG it reports no lesion, or why the study was not assessable.
  await write('report-sr.dcm', sr.bytes);
  await write('bundle.json', `${JSON.stringify(set.bundle, null, 2)}\n`);
  // One segment per line on disk, as integration engineers read them; MLLP sends CR.
  await write('oru.hl7', `${set.oru.replace(/\r/g, '\n')}\n`);
  const notes = [
    ...(absent.seg ? [`no seg.dcm, key-image .dcm or key-objects.dcm: ${absent.seg}`] : []),
    ...(absent.keyImages ? [`no key-image .dcm: ${absent.keyImages}`] : []),
    ...(absent.kos ? [`no key-objects.dcm: ${absent.kos}`] : []),
  ];
  return { files, notes };
}
