import { randomUUID } from 'node:crypto';
import type { ChainableCommander, Redis } from 'ioredis';
import type { ScreeningQueue } from '../jobs/queue.js';
import { groupCommit } from '../redis/group-commit.js';
import { DAY, type OrderKeys, orderKeys } from './keys.js';
import type { JobChange, LedgerEntry, LedgerFacts, LedgerQuery, MessageEntry, OrderLedger, ResendMarker } from './ledger.js';
import { type IntakeChannel, intakeChannel, type KeyWrite } from './redis-ledger-channel.js';
import type { OrderRecord, OrderStore } from './store.js';

/** Commands one caller adds to a shared MULTI. */
type TxPart = (m: ChainableCommander) => void;

export interface RetentionDays {
  dedupeDays: number;
  retentionDays: number;
}

/**
 * The order ledger on Redis and BullMQ: every write the intake makes (jobs, order records, resend markers, stored
 * messages) and the reads it decides on. Key names and JSON are those OrderStore reads.
 */
export class RedisOrderLedger implements OrderLedger {
  private readonly keys: OrderKeys;
  /** The hot path's reads and writes, in round trips shared by the messages handled together. */
  private readonly channel: IntakeChannel;

  constructor(
    private readonly redis: Redis,
    private readonly queue: ScreeningQueue,
    prefix: string,
    private readonly ttl: RetentionDays,
  ) {
    this.keys = orderKeys(prefix);
    this.channel = intakeChannel(queue);
  }

  /** The ledger over the store's connection, prefix and retention. */
  static over(store: OrderStore, queue: ScreeningQueue): RedisOrderLedger {
    return new RedisOrderLedger(store.redis, queue, store.prefix, store.ttl);
  }

  /** The resend marker and the order records in one round trip; queue states only for a message not seen before. */
  async read(query: LedgerQuery): Promise<LedgerFacts> {
    const ids = query.orders.map((o) => o.jobId);
    const values = await this.channel.read([this.keys.seen(query.messageKey), ...ids.map((id) => this.keys.order(id))]);
    const records = new Map<string, OrderRecord>();
    ids.forEach((id, i) => {
      const v = values[i + 1];
      if (v) records.set(id, JSON.parse(v) as OrderRecord);
    });
    const seen = values[0] ? (JSON.parse(values[0]) as ResendMarker) : null;
    const queueStates = new Map<string, string>();
    if (!seen) {
      const asked = query.orders.filter((o) => o.jobState && records.has(o.jobId));
      const states = await Promise.all(asked.map(async (o) => [o.jobId, (await (await this.queue.getJob(o.jobId))?.getState()) ?? 'missing'] as const));
      for (const [jobId, state] of states) queueStates.set(jobId, state);
    }
    return { seen, records, queueStates };
  }

  async record(entry: LedgerEntry): Promise<void> {
    if (entry.kind === 'dead-letter') {
      const id = randomUUID();
      return this.writeBatch((m) => this.addMessage(m, id, entry.message));
    }
    for (const change of entry.jobChanges) await this.applyJobChange(change);
    if (entry.newJobs.length > 0) {
      // The jobs go in first (their ids are deterministic, so a retry after a failed commit re-adds nothing), and
      // the records and the marker only if they are in the queue, in the same round trip.
      return this.channel.write(entry.newJobs, this.recordWrites(entry.records, entry.messageKey, entry.marker));
    }
    return this.commit(entry.messageKey, entry.marker, entry.records, entry.ignored);
  }

  private async applyJobChange(change: JobChange): Promise<void> {
    const job = await this.queue.getJob(change.jobId);
    if (change.kind === 'remove') await job?.remove();
    else await job?.updateData(change.data);
  }

  private recordWrites(records: OrderRecord[], messageKey: string, marker: ResendMarker): KeyWrite[] {
    const writes: KeyWrite[] = records.map((r) => ({ key: this.keys.order(r.jobId), value: JSON.stringify(r), ttlSeconds: this.ttl.retentionDays * DAY }));
    writes.push({ key: this.keys.seen(messageKey), value: JSON.stringify(marker), ttlSeconds: this.ttl.dedupeDays * DAY });
    return writes;
  }

  /**
   * One MULTI/EXEC for everything written together (group commit, see groupCommit). Either all of it is
   * confirmed, or every caller gets the error and NAKs. A command failing inside EXEC does not undo the others,
   * as with a MULTI per caller: what did get written is at most a caller's complete resend marker, which its
   * resend finds (and is accepted by), or a stored message a resend stores again.
   */
  private readonly writeBatch = groupCommit(async (parts: TxPart[]): Promise<undefined[]> => {
    const m = this.redis.multi();
    for (const add of parts) add(m);
    const res = await m.exec();
    const failed = res?.find(([err]) => err);
    if (!res || failed) throw failed?.[0] ?? new Error('Redis transaction aborted');
    return [];
  });

  /**
   * The order records and the resend marker (and, for a message recorded rather than acted on, that message) in
   * one MULTI, so a message is either fully recorded or not at all. Commits made together share the MULTI.
   */
  private commit(messageKey: string, marker: ResendMarker, records: OrderRecord[], message?: MessageEntry): Promise<void> {
    return this.writeBatch((m) => {
      if (message) this.addMessage(m, randomUUID(), message);
      for (const r of records) m.set(this.keys.order(r.jobId), JSON.stringify(r), 'EX', this.ttl.retentionDays * DAY);
      m.set(this.keys.seen(messageKey), JSON.stringify(marker), 'EX', this.ttl.dedupeDays * DAY);
    });
  }

  private addMessage(m: ChainableCommander, id: string, entry: MessageEntry): void {
    const full = { ...entry, id, replays: [] };
    const score = Date.parse(entry.receivedAt);
    m.set(this.keys.message(id), JSON.stringify(full), 'EX', this.ttl.retentionDays * DAY)
      .zadd(this.keys.messages(entry.kind), score, id)
      .zremrangebyscore(this.keys.messages(entry.kind), '-inf', score - this.ttl.retentionDays * DAY * 1000);
  }
}
