import type { ScreeningJobData } from '../../src/domain/job.js';
import type { LedgerEntry, LedgerFacts, LedgerQuery, MessageEntry, OrderLedger, QueueState, ResendMarker } from '../../src/orders/ledger.js';
import type { OrderRecord } from '../../src/orders/store.js';

interface LedgerState {
  seen: Map<string, ResendMarker>;
  records: Map<string, OrderRecord>;
  jobs: Map<string, { data: ScreeningJobData; state: QueueState }>;
  messages: MessageEntry[];
}

const copy = (s: LedgerState): LedgerState => ({
  seen: new Map(s.seen),
  records: new Map(s.records),
  jobs: new Map(s.jobs),
  messages: [...s.messages],
});

/**
 * An OrderLedger in memory, for tests of the intake without Redis. An entry is applied to a copy and the copy
 * swapped in, so a failing record leaves nothing behind. `hold()` keeps record() pending until released;
 * `failNext` makes the next read or record reject.
 */
export class MemoryLedger implements OrderLedger {
  state: LedgerState = { seen: new Map(), records: new Map(), jobs: new Map(), messages: [] };
  /** Every entry record() was called with, including ones that failed. */
  readonly attempts: LedgerEntry[] = [];
  reads = 0;
  failNext: { read?: Error; record?: Error } = {};
  private gate: Promise<void> | null = null;

  hold(): () => void {
    let release = () => {};
    this.gate = new Promise((resolve) => {
      release = () => {
        this.gate = null;
        resolve();
      };
    });
    return release;
  }

  async read(query: LedgerQuery): Promise<LedgerFacts> {
    this.reads++;
    await Promise.resolve();
    const failure = this.failNext.read;
    this.failNext.read = undefined;
    if (failure) throw failure;
    const seen = this.state.seen.get(query.messageKey) ?? null;
    const records = new Map<string, OrderRecord>();
    const queueStates = new Map<string, QueueState>();
    for (const { jobId, jobState } of query.orders) {
      const r = this.state.records.get(jobId);
      if (!r) continue;
      records.set(jobId, r);
      if (jobState && !seen) queueStates.set(jobId, this.state.jobs.get(jobId)?.state ?? 'missing');
    }
    return { seen, records, queueStates };
  }

  async record(entry: LedgerEntry): Promise<void> {
    this.attempts.push(entry);
    if (this.gate) await this.gate;
    const next = copy(this.state);
    if (entry.kind === 'dead-letter') next.messages.push(entry.message);
    else {
      for (const c of entry.jobChanges) {
        const job = next.jobs.get(c.jobId);
        if (!job) continue;
        if (c.kind === 'remove') next.jobs.delete(c.jobId);
        else next.jobs.set(c.jobId, { ...job, data: c.data });
      }
      for (const j of entry.newJobs) if (!next.jobs.has(j.jobId)) next.jobs.set(j.jobId, { data: j.data, state: 'waiting' });
      for (const r of entry.records) next.records.set(r.jobId, r);
      next.seen.set(entry.messageKey, entry.marker);
      if (entry.ignored) next.messages.push(entry.ignored);
    }
    const failure = this.failNext.record;
    this.failNext.record = undefined;
    if (failure) throw failure;
    this.state = next;
  }
}
