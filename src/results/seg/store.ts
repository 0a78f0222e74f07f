/**
 * Puts a job's SEG in the PACS (STOW-RS) and confirms it is there (QIDO-RS: a SEG series of that UID in the
 * study). Idempotent: the SEG's UIDs are fixed by the source series and the model version, so a retry sends the
 * same instance again; a PACS that already has it either overwrites it or reports it as a duplicate, and both
 * count as stored. Nothing is logged here: the caller records the outcome (it carries UIDs only).
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

export interface StoredSeg {
  studyInstanceUid: string;
  seriesInstanceUid: string;
  sopInstanceUid: string;
  /** 'already-stored': the PACS had this instance and said so (a retry); 'stored' otherwise. */
  outcome: 'stored' | 'already-stored';
  /** A warning the PACS gave with the stored instance (hex status), if any. */
  warning?: string;
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

/** STOW-RS of the SEG, then a QIDO-RS check that the study holds its series as Modality SEG. */
export async function storeSeg(
  client: DicomWebClient,
  seg: Pick<EncodedSeg, 'bytes' | 'studyInstanceUid' | 'seriesInstanceUid' | 'sopInstanceUid'>,
): Promise<StoredSeg> {
  const answer = await client.store([seg.bytes]);
  const mine = (item: DicomJson) => str(item, REFERENCED_SOP_INSTANCE_UID) === seg.sopInstanceUid;
  const failed = sopItems(answer, FAILED_SOP_SEQUENCE).find(mine);
  const stored = sopItems(answer, REFERENCED_SOP_SEQUENCE).find(mine);
  let outcome: StoredSeg['outcome'] = 'stored';
  let warning: string | undefined;
  if (failed) {
    const reason = status(failed, FAILURE_REASON);
    if (reason !== DUPLICATE_SOP_INSTANCE) {
      throw new PacsError(
        'client',
        `STOW-RS of SEG ${seg.sopInstanceUid}: the PACS refused it (failure reason ${reason === undefined ? 'not given' : hex(reason)})`,
      );
    }
    outcome = 'already-stored';
  } else if (stored) {
    const w = status(stored, WARNING_REASON);
    if (w !== undefined) warning = hex(w);
  }
  // Neither listed: some PACS answer with an empty body; the QIDO check below decides.

  const found = await client.searchSeries(seg.studyInstanceUid, { SeriesInstanceUID: seg.seriesInstanceUid, Modality: 'SEG' });
  const match = found.filter((s) => str(s, TAG.SeriesInstanceUID) === seg.seriesInstanceUid && str(s, TAG.Modality) === 'SEG');
  if (match.length !== 1) {
    throw new PacsError('bad-response', `SEG series ${seg.seriesInstanceUid} not found in its study after STOW-RS (${match.length} matches)`);
  }
  return { studyInstanceUid: seg.studyInstanceUid, seriesInstanceUid: seg.seriesInstanceUid, sopInstanceUid: seg.sopInstanceUid, outcome, warning };
}
