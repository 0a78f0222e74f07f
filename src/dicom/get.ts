/**
 * C-GET (Study Root, -S) of one series through DCMTK's `getscu`, and C-MOVE through `movescu` (below), run as
 * supervised child processes like findscu (find.ts): ctgate never speaks DIMSE itself. With C-GET the PACS sends the
 * series' instances back over the same association (C-STORE sub-operations), and getscu writes each to the folder
 * given (the caller's private temporary folder); with C-MOVE it sends them to ctgate's own C-STORE receiver.
 *
 * Outcomes: the files received (C-GET) or the sub-operation counts (C-MOVE), or a DimseError: the association
 * rejected or aborted (Orthanc aborts a request from a calling AE it does not allow), a failure status, no answer in
 * time, or a retrieval that moved nothing. Messages name the peer, the cause and status words only — never a host, a
 * path or a patient attribute.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { associationFailure, commonArgs, DIMSE_PEER, DimseError, type DimsePeer, runTool, scrub } from './dcmtk.js';

export interface GetResult {
  /** The files getscu wrote, sorted by name. */
  files: string[];
  completed: number;
  failed: number;
  warning: number;
}

function count(out: string, what: string): number {
  const n = new RegExp(`Number of ${what} Suboperations\\s*:\\s*(\\d+)`).exec(out)?.[1];
  return n === undefined ? 0 : Number(n);
}

/** Retrieves one series into `dir` (which must exist and be empty). Throws DimseError. */
export async function cGetSeries(peer: DimsePeer, studyInstanceUid: string, seriesInstanceUid: string, dir: string): Promise<GetResult> {
  const t = String(peer.timeoutS);
  const keys = ['QueryRetrieveLevel=SERIES', `StudyInstanceUID=${studyInstanceUid}`, `SeriesInstanceUID=${seriesInstanceUid}`].flatMap((k) => ['-k', k]);
  const args = [...commonArgs(peer), '-td', t, '-S', '-od', dir, ...keys, peer.host, String(peer.port)];
  // A series of hundreds of instances: the DIMSE timeout bounds each message, the kill the whole retrieval.
  const r = await runTool('getscu', args, (peer.timeoutS * 20 + 60) * 1000);
  if (r.spawnError) throw new DimseError('usage', `getscu could not run (install dcmtk): ${r.spawnError.code}`, false);
  const name = peer.label ?? DIMSE_PEER;
  const what = 'C-GET (SERIES)';
  const assoc = associationFailure(r.out, what, name);
  if (assoc) {
    // Orthanc aborts a C-GET from a calling AE that is not among its DicomModalities: a refusal, not a network fault.
    if (/aborted/.test(assoc.message) && /Sending C-GET Request/.test(r.out) && !/Received C-GET Response/.test(r.out))
      throw new DimseError('refused', `${name} aborted the ${what} at once (it may not allow ctgate's calling AE title to retrieve)`, false);
    throw assoc;
  }
  if (r.signal) throw new DimseError('network', `${name} did not answer in time (${what} killed)`, true);
  if (/No Acceptable Presentation Contexts|No presentation context/i.test(r.out))
    throw new DimseError('refused', `${name} accepts no presentation context for Study Root C-GET`, false);
  const statuses = [...r.out.matchAll(/Received C-GET Response \(([^)\n]*)\)/g)].map((m) => (m[1] ?? '').trim());
  const final = statuses.filter((s) => !/^Pending/i.test(s)).pop();
  const files = readdirSync(dir)
    .filter((f) => !f.startsWith('.'))
    .sort()
    .map((f) => join(dir, f));
  const result = { files, completed: count(r.out, 'Completed'), failed: count(r.out, 'Failed'), warning: count(r.out, 'Warning') };
  if (final !== undefined && !/^(Success|Warning)/i.test(final)) {
    throw new DimseError('refused', `${name} refused the ${what}: ${final}${result.failed ? ` (${result.failed} sub-operation(s) failed)` : ''}`, false);
  }
  if (r.code !== 0 || final === undefined) {
    const err = r.out.split('\n').find((l) => /^[EF]:/.test(l)) ?? `exit ${r.code}`;
    throw new DimseError('network', `${what} at ${name} failed: ${scrub(err)}`, true);
  }
  if (files.length === 0) throw new DimseError('refused', `${name} answered the ${what} but sent no instance`, false);
  return result;
}

export interface MoveResult {
  /** DCMTK's words for the final C-MOVE response status (Success, or a Warning). */
  status: string;
}

/**
 * C-MOVE (Study Root, -S) of one series to the AE title `destinationAe` (ctgate's own C-STORE receiver) through
 * DCMTK's `movescu`, which does not receive anything itself (no port): the PACS opens its own association to the
 * destination, which it must know by that AE title. Throws DimseError for a rejected or aborted association, a
 * failure status (e.g. Move Destination Unknown, or sub-operations that failed), or no answer in time. movescu's
 * verbose output does not give the sub-operation counts: the caller checks what arrived at the destination.
 */
export async function cMoveSeries(peer: DimsePeer, studyInstanceUid: string, seriesInstanceUid: string, destinationAe: string): Promise<MoveResult> {
  const t = String(peer.timeoutS);
  const keys = ['QueryRetrieveLevel=SERIES', `StudyInstanceUID=${studyInstanceUid}`, `SeriesInstanceUID=${seriesInstanceUid}`].flatMap((k) => ['-k', k]);
  const args = [...commonArgs(peer), '-td', t, '-S', '-aem', destinationAe, ...keys, peer.host, String(peer.port)];
  const r = await runTool('movescu', args, (peer.timeoutS * 20 + 60) * 1000);
  if (r.spawnError) throw new DimseError('usage', `movescu could not run (install dcmtk): ${r.spawnError.code}`, false);
  const name = peer.label ?? DIMSE_PEER;
  const what = 'C-MOVE (SERIES)';
  const assoc = associationFailure(r.out, what, name);
  if (assoc) {
    if (/aborted/.test(assoc.message) && /Sending Move Request/i.test(r.out) && !/Received (Final )?Move Response/i.test(r.out))
      throw new DimseError('refused', `${name} aborted the ${what} at once (it may not allow ctgate's AE title to retrieve)`, false);
    throw assoc;
  }
  if (r.signal) throw new DimseError('network', `${name} did not answer in time (${what} killed)`, true);
  if (/No Acceptable Presentation Contexts|No presentation context/i.test(r.out))
    throw new DimseError('refused', `${name} accepts no presentation context for Study Root C-MOVE`, false);
  const statuses = [...r.out.matchAll(/Received (?:Final )?Move Response[^(\n]*\(([^)\n]*)\)/gi)].map((m) => (m[1] ?? '').trim());
  const final = statuses.filter((s) => !/^Pending/i.test(s)).pop();
  if (final !== undefined && !/^(Success|Warning)/i.test(final)) throw new DimseError('refused', `${name} refused the ${what}: ${final}`, false);
  if (r.code !== 0 || final === undefined) {
    const err = r.out.split('\n').find((l) => /^[EF]:/.test(l)) ?? `exit ${r.code}`;
    throw new DimseError('network', `${what} at ${name} failed: ${scrub(err)}`, true);
  }
  return { status: final };
}
