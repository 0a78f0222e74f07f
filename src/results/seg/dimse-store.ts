/**
 * Puts a job's derived DICOM series in a DICOM destination over DIMSE (C-STORE with DCMTK's storescu): the
 * transport for PACS without STOW-RS. Each instance is written to a temporary Part 10 file (removed afterwards) and
 * the series goes in one association. Idempotent like STOW-RS: the UIDs are fixed, so a retry sends the same
 * instances again, and a PACS that has them already overwrites or ignores them (Orthanc answers Success and keeps
 * one copy). A Success or Warning status is the confirmation: a DIMSE-only PACS may have no query interface ctgate
 * could check with. Nothing is logged here.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type DimsePeer, storeFiles } from '../../dicom/dcmtk.js';
import type { SeriesToStore, StoredInstance, StoredSeries } from './store.js';

/** C-STORE of the series' instances in one association. `what` names the objects in errors (e.g. "SEG"). */
export async function storeSeriesDimse(peer: DimsePeer, series: SeriesToStore, what: string = series.modality): Promise<StoredSeries> {
  if (series.instances.length === 0) throw new Error(`no ${what} instances to store`);
  const dir = mkdtempSync(join(tmpdir(), 'ctgate-cstore-'));
  try {
    // Numbered names, never UIDs or patient data: storescu prints them.
    const files = series.instances.map((inst, i) => {
      const path = join(dir, `${i + 1}.dcm`);
      writeFileSync(path, inst.bytes, { mode: 0o600 });
      return path;
    });
    const statuses = await storeFiles(peer, files, what);
    const instances = series.instances.map(({ sopInstanceUid }, i): StoredInstance => {
      const s = statuses.find((x) => x.index === i)?.status ?? 'Success';
      return /^Warning/i.test(s) ? { sopInstanceUid, outcome: 'stored', warning: s } : { sopInstanceUid, outcome: 'stored' };
    });
    return { studyInstanceUid: series.studyInstanceUid, seriesInstanceUid: series.seriesInstanceUid, instances };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
