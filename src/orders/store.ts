import { createHash, randomUUID } from 'node:crypto';
import type { ChainableCommander, Redis } from 'ioredis';
import type { AckCode } from '../hl7/ack.js';
import type { IntakeChannel, KeyWrite, NewJob } from '../jobs/queue.js';
import { groupCommit } from '../jobs/redis.js';
import type { Order } from './order.js';

export type MessageKind = 'dead-letter' | 'ignored';

/** A message ctgate did not turn into a job, kept so an operator can see why and replay it. */
export interface StoredMessage {
  id: string;
  kind: MessageKind;
  receivedAt: string;
  reason: string;
  /** HL7 table 0357 code reported in ERR, when the message was rejected. */
  errorCode?: number;
  ackCode: AckCode | '';
  sendingApplication: string;
  sendingFacility: string;
  messageType: string;
  controlId: string;
  remoteAddress: string;
  /** The message as received (contains PHI: only in the detail view). */
  raw: string;
  replays: { at: string; ackCode: string; outcome: string }[];
}

export type StoredMessageSummary = Omit<StoredMessage, 'raw'>;

export type OrderStatus = 'queued' | 'cancelled' | 'cancel-requested';

export interface OrderRecord {
  jobId: string;
  status: OrderStatus;
  order: Order;
  createdAt: string;
  updatedAt: string;
  history: { at: string; control: string; controlId: string; note: string }[];
}

const DAY = 86_400;

type Seen = { code: AckCode; text: string };
type Lookup = { seen: Seen | null; orders: Map<string, OrderRecord> };
/** Commands one caller adds to a shared MULTI. */
type TxPart = (m: ChainableCommander) => void;

/** Redis records around the queue: resend detection, order records, dead-letter and ignored messages. */
export class OrderStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly ttl: { dedupeDays: number; retentionDays: number },
  ) {}

  private key(...parts: string[]): string {
    return [this.prefix, ...parts].join(':');
  }

  static messageKey(sendingApp: string, sendingFacility: string, controlId: string): string {
    return createHash('sha256').update(`${sendingApp}\u0000${sendingFacility}\u0000${controlId}`).digest('hex').slice(0, 40);
  }

  /**
   * The resend marker and the order records in one round trip (the intake's hot path), read with `read`: the
   * intake's channel, or this store's connection.
   */
  async lookup(messageKey: string, jobIds: string[], read: (keys: string[]) => Promise<(string | null)[]> = (keys) => this.redis.mget(keys)): Promise<Lookup> {
    const values = await read([this.key('seen', messageKey), ...jobIds.map((id) => this.key('order', id))]);
    const orders = new Map<string, OrderRecord>();
    jobIds.forEach((id, i) => {
      const v = values[i + 1];
      if (v) orders.set(id, JSON.parse(v) as OrderRecord);
    });
    return { seen: values[0] ? (JSON.parse(values[0]) as Seen) : null, orders };
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

  async getOrder(jobId: string): Promise<OrderRecord | null> {
    const v = await this.redis.get(this.key('order', jobId));
    return v ? (JSON.parse(v) as OrderRecord) : null;
  }

  async status(jobId: string): Promise<OrderStatus | null> {
    return (await this.getOrder(jobId))?.status ?? null;
  }

  /** A worker stopped the job for a cancel the intake recorded as requested. */
  async markCancelled(jobId: string, note: string): Promise<void> {
    const r = await this.getOrder(jobId);
    if (!r) return;
    const at = new Date().toISOString();
    const next: OrderRecord = { ...r, status: 'cancelled', updatedAt: at, history: [...r.history, { at, control: 'CA', controlId: '', note }] };
    await this.redis.set(this.key('order', jobId), JSON.stringify(next), 'KEEPTTL');
  }

  /**
   * Writes the order records and the resend marker (and, for a message recorded rather than acted on, that
   * message) in one MULTI, so a message is either fully recorded or not at all (the job itself is added first;
   * its id makes re-adding harmless). Commits made together share the MULTI.
   */
  commit(messageKey: string, ack: Seen, records: OrderRecord[], message?: Omit<StoredMessage, 'id' | 'replays'>): Promise<void> {
    return this.writeBatch((m) => {
      if (message) this.addMessage(m, randomUUID(), message);
      for (const r of records) m.set(this.key('order', r.jobId), JSON.stringify(r), 'EX', this.ttl.retentionDays * DAY);
      m.set(this.key('seen', messageKey), JSON.stringify(ack), 'EX', this.ttl.dedupeDays * DAY);
    });
  }

  /**
   * commit() for a message that queues new jobs: the jobs, the order records and the resend marker in one round
   * trip (see IntakeChannel.write), the records and marker written only if the jobs are in the queue.
   */
  commitWithJobs(write: IntakeChannel['write'], jobs: NewJob[], messageKey: string, ack: Seen, records: OrderRecord[]): Promise<void> {
    const writes: KeyWrite[] = records.map((r) => ({ key: this.key('order', r.jobId), value: JSON.stringify(r), ttlSeconds: this.ttl.retentionDays * DAY }));
    writes.push({ key: this.key('seen', messageKey), value: JSON.stringify(ack), ttlSeconds: this.ttl.dedupeDays * DAY });
    return write(jobs, writes);
  }

  async saveMessage(entry: Omit<StoredMessage, 'id' | 'replays'>): Promise<string> {
    const id = randomUUID();
    await this.writeBatch((m) => this.addMessage(m, id, entry));
    return id;
  }

  private addMessage(m: ChainableCommander, id: string, entry: Omit<StoredMessage, 'id' | 'replays'>): void {
    const full: StoredMessage = { ...entry, id, replays: [] };
    const score = Date.parse(entry.receivedAt);
    m.set(this.key('message', id), JSON.stringify(full), 'EX', this.ttl.retentionDays * DAY)
      .zadd(this.key('messages', entry.kind), score, id)
      .zremrangebyscore(this.key('messages', entry.kind), '-inf', score - this.ttl.retentionDays * DAY * 1000);
  }

  async getMessage(id: string): Promise<StoredMessage | null> {
    const v = await this.redis.get(this.key('message', id));
    return v ? (JSON.parse(v) as StoredMessage) : null;
  }

  /** Newest first, without the raw message. */
  async listMessages(kind: MessageKind, offset = 0, limit = 50): Promise<{ total: number; items: StoredMessageSummary[] }> {
    const zkey = this.key('messages', kind);
    const [total, ids] = await Promise.all([this.redis.zcard(zkey), this.redis.zrevrange(zkey, offset, offset + limit - 1)]);
    const values = ids.length ? await this.redis.mget(ids.map((id) => this.key('message', id))) : [];
    const items = values
      .filter((v): v is string => v !== null)
      .map((v) => {
        const { raw: _raw, ...summary } = JSON.parse(v) as StoredMessage;
        return summary;
      });
    return { total, items };
  }

  async recordReplay(id: string, replay: StoredMessage['replays'][number]): Promise<void> {
    const msg = await this.getMessage(id);
    if (!msg) return;
    msg.replays.push(replay);
    await this.redis.set(this.key('message', id), JSON.stringify(msg), 'KEEPTTL');
  }
}
