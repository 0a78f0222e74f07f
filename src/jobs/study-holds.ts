/**
 * Whether an unfinished job uses a received study, for the C-STORE receiver's retention (src/dimse-receive): a
 * study is kept while any job that is not completed or failed found it in wait-for-study, names it by
 * StudyInstanceUID in its order, or waits for a study with its AccessionNumber.
 *
 * The unfinished jobs are listed once for a burst of questions (a retention sweep asks about each expired study):
 * the answer is reused for `cacheMs`.
 */
import type { JobStateStore } from './job-state.js';
import type { ScreeningQueue } from './queue.js';

/** BullMQ states of a job that has not finished (completed and failed are finished). */
const UNFINISHED = ['active', 'waiting', 'delayed', 'prioritized', 'waiting-children'] as const;

interface Held {
  studyUids: Set<string>;
  accessions: Set<string>;
}

export function studyHolds(
  queue: Pick<ScreeningQueue, 'getJobs'>,
  states: Pick<JobStateStore, 'getMany'>,
  opts: { cacheMs?: number; now?: () => number } = {},
): (studyInstanceUid: string, study: { accessionNumber?: string }) => Promise<boolean> {
  const cacheMs = opts.cacheMs ?? 5000;
  const now = opts.now ?? Date.now;
  let cached: { at: number; held: Promise<Held> } | undefined;
  const load = async (): Promise<Held> => {
    const jobs = (await queue.getJobs([...UNFINISHED], 0, -1)).filter((j) => j?.id);
    const ids = jobs.map((j) => j.id as string);
    const checkpoints = ids.length > 0 ? await states.getMany(ids) : [];
    const held: Held = { studyUids: new Set(), accessions: new Set() };
    jobs.forEach((j, i) => {
      const st = checkpoints[i];
      if (st && (st.stage === 'done' || st.stage === 'cancelled')) return;
      const found = st?.outputs['wait-for-study']?.studyInstanceUid;
      if (found) {
        held.studyUids.add(found);
        return;
      }
      const order = j.data?.order;
      const uid = order?.studyInstanceUid?.trim();
      if (uid) held.studyUids.add(uid);
      else if (order?.accessionNumber?.trim()) held.accessions.add(order.accessionNumber.trim());
    });
    return held;
  };
  return async (studyInstanceUid, study) => {
    if (!cached || now() - cached.at > cacheMs) {
      const held = load();
      cached = { at: now(), held };
      // A failed listing is not cached: the next question asks Redis again (and this one counts as held upstream).
      held.catch(() => {
        if (cached?.held === held) cached = undefined;
      });
    }
    const h = await cached.held;
    const acc = study.accessionNumber?.trim();
    return h.studyUids.has(studyInstanceUid) || (acc !== undefined && acc !== '' && h.accessions.has(acc));
  };
}
