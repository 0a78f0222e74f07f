/**
 * Puts a job's derived DICOM series (the SEG; the key-image secondary captures) in the PACS (STOW-RS) and confirms
 * it is there (QIDO-RS: a series of that UID and modality in the study). Idempotent: the UIDs are fixed by the
 * source series and the model version, so a retry sends the same instances again; a PACS that already has them
 * either overwrites them or reports them as duplicates, and both count as stored. Nothing is logged here: the
 * caller records the outcome (it carries UIDs only).
 */
import type { DicomWebClient } from '../../dicomweb/client.js';
import { type DicomJson, str, TAG } from '../../dicomweb/dicom-json.js';
import { PacsError } from '../../dicomweb/errors.js';
import type { EncodedSeg } from './encode.js';

const REFERENCED_SOP_SEQUENCE = '00081199';
const FAILED_SOP_SEQUENCE = '00081198';
const FAILURE_REASON = '00081197';
const WARNING_REASON = '00081196';
const REFERENCED_SOP_INSTANCE_UID = '00081155';
/** PS3.4 C.4.2.1.4 / PS3.18 table 10.5.3-1: "Duplicate SOP Instance" (0x0111). */
const DUPLICATE_SOP_INSTANCE = 0x0111;

export interface StoredInstance {
  sopInstanceUid: string;
  /** 'already-stored': the PACS had this instance and said so (a retry); 'stored' otherwise. */
  outcome: 'stored' | 'already-stored';
  /** A warning the PACS gave with the stored instance (hex status), if any. */
  warning?: string;
}

export interface StoredSeg extends StoredInstance {
  studyInstanceUid: string;
  seriesInstanceUid: string;
}

/** One series of instances ctgate made, all in one study. */
export interface SeriesToStore {
  studyInstanceUid: string;
  seriesInstanceUid: string;
  /** The Modality the instances carry; the QIDO check looks for the series with it. */
  modality: string;
  instances: { bytes: Uint8Array; sopInstanceUid: string }[];
}

export interface StoredSeries {
  studyInstanceUid: string;
  seriesInstanceUid: string;
  instances: StoredInstance[];
}

function sopItems(answer: DicomJson, tag: string): DicomJson[] {
  return (answer[tag]?.Value ?? []).filter((v): v is DicomJson => typeof v === 'object' && v !== null);
}

function status(item: DicomJson, tag: string): number | undefined {
  const v = item[tag]?.Value?.[0];
  const n = typeof v === 'number' ? v : Number(v);
  return Number.isFinite(n) ? n : undefined;
}

const hex = (n: number) => `0x${n.toString(16).padStart(4, '0')}`;

/**
 * STOW-RS of the series' instances in one request, then a QIDO-RS check that the study holds the series with its
 * modality. `what` names the object in errors (e.g. "SEG").
 */
export async function storeSeries(client: DicomWebClient, series: SeriesToStore, what: string = series.modality): Promise<StoredSeries> {
  if (series.instances.length === 0) throw new Error(`no ${what} instances to store`);
  const answer = await client.store(series.instances.map((i) => i.bytes));
  const failedItems = sopItems(answer, FAILED_SOP_SEQUENCE);
  const storedItems = sopItems(answer, REFERENCED_SOP_SEQUENCE);
  const instances = series.instances.map(({ sopInstanceUid }): StoredInstance => {
    const mine = (item: DicomJson) => str(item, REFERENCED_SOP_INSTANCE_UID) === sopInstanceUid;
    const failed = failedItems.find(mine);
    if (failed) {
      const reason = status(failed, FAILURE_REASON);
      if (reason !== DUPLICATE_SOP_INSTANCE) {
        throw new PacsError(
          'client',
          `STOW-RS of ${what} ${sopInstanceUid}: the PACS refused it (failure reason ${reason === undefined ? 'not given' : hex(reason)})`,
        );
      }
      return { sopInstanceUid, outcome: 'already-stored' };
    }
    const stored = storedItems.find(mine);
    const w = stored ? status(stored, WARNING_REASON) : undefined;
    // Neither listed: some PACS answer with an empty body; the QIDO check below decides.
    return w === undefined ? { sopInstanceUid, outcome: 'stored' } : { sopInstanceUid, outcome: 'stored', warning: hex(w) };
  });

  const { seriesInstanceUid, modality } = series;
  const found = await client.searchSeries(series.studyInstanceUid, { SeriesInstanceUID: seriesInstanceUid, Modality: modality });
  const match = found.filter((s) => str(s, TAG.SeriesInstanceUID) === seriesInstanceUid && str(s, TAG.Modality) === modality);
  if (match.length !== 1) {
    throw new PacsError('bad-response', `${what} series ${seriesInstanceUid} not found in its study after STOW-RS (${match.length} matches)`);
  }
  return { studyInstanceUid: series.studyInstanceUid, seriesInstanceUid, instances };
}

/** STOW-RS of the SEG, then a QIDO-RS check that the study holds its series as Modality SEG. */
export async function storeSeg(
  client: DicomWebClient,
  seg: Pick<EncodedSeg, 'bytes' | 'studyInstanceUid' | 'seriesInstanceUid' | 'sopInstanceUid'>,
): Promise<StoredSeg> {
  const r = await storeSeries(
    client,
    { studyInstanceUid: seg.studyInstanceUid, seriesInstanceUid: seg.seriesInstanceUid, modality: 'SEG', instances: [seg] },
    'SEG',
  );
  const [instance] = r.instances as [StoredInstance];
  return { studyInstanceUid: seg.studyInstanceUid, seriesInstanceUid: seg.seriesInstanceUid, ...instance };
}
