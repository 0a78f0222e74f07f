import { createHash, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { AckCode } from '../hl7/ack.js';
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

  /** The resend marker and the order records in one round trip (the intake's hot path). */
  async lookup(messageKey: string, jobIds: string[]): Promise<{ seen: { code: AckCode; text: string } | null; orders: Map<string, OrderRecord> }> {
    const values = await this.redis.mget(this.key('seen', messageKey), ...jobIds.map((id) => this.key('order', id)));
    const orders = new Map<string, OrderRecord>();
    jobIds.forEach((id, i) => {
      const v = values[i + 1];
      if (v) orders.set(id, JSON.parse(v) as OrderRecord);
    });
    return { seen: values[0] ? (JSON.parse(values[0]) as { code: AckCode; text: string }) : null, orders };
  }

  async getOrder(jobId: string): Promise<OrderRecord | null> {
    const v = await this.redis.get(this.key('order', jobId));
    return v ? (JSON.parse(v) as OrderRecord) : null;
  }

  /**
   * Writes the order record and the resend marker in one MULTI, so a message is either fully recorded or
   * not at all (the job itself is added first; its id makes re-adding harmless).
   */
  async commit(messageKey: string, ack: { code: AckCode; text: string }, records: OrderRecord[]): Promise<void> {
    const m = this.redis.multi();
    for (const r of records) m.set(this.key('order', r.jobId), JSON.stringify(r), 'EX', this.ttl.retentionDays * DAY);
    m.set(this.key('seen', messageKey), JSON.stringify(ack), 'EX', this.ttl.dedupeDays * DAY);
    const res = await m.exec();
    const failed = res?.find(([err]) => err);
    if (!res || failed) throw failed?.[0] ?? new Error('Redis transaction aborted');
  }

  async saveMessage(entry: Omit<StoredMessage, 'id' | 'replays'>): Promise<string> {
    const id = randomUUID();
    const full: StoredMessage = { ...entry, id, replays: [] };
    const score = Date.parse(entry.receivedAt);
    const res = await this.redis
      .multi()
      .set(this.key('message', id), JSON.stringify(full), 'EX', this.ttl.retentionDays * DAY)
      .zadd(this.key('messages', entry.kind), score, id)
      .zremrangebyscore(this.key('messages', entry.kind), '-inf', score - this.ttl.retentionDays * DAY * 1000)
      .exec();
    const failed = res?.find(([err]) => err);
    if (!res || failed) throw failed?.[0] ?? new Error('Redis transaction aborted');
    return id;
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
