import type { Redis } from 'ioredis';
import type { Order, OrderStatus } from '../domain/order.js';
import type { AckCode } from '../hl7/ack.js';
import { type OrderKeys, orderKeys } from './keys.js';

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

export interface OrderRecord {
  jobId: string;
  status: OrderStatus;
  order: Order;
  createdAt: string;
  updatedAt: string;
  history: { at: string; control: string; controlId: string; note: string }[];
}

/**
 * The intake's records as the HTTP API and the workers read them: order records, dead-letter and ignored
 * messages. The intake itself writes through the ledger (RedisOrderLedger), under the same keys.
 */
export class OrderStore {
  private readonly keys: OrderKeys;

  constructor(
    readonly redis: Redis,
    readonly prefix: string,
    readonly ttl: { dedupeDays: number; retentionDays: number },
  ) {
    this.keys = orderKeys(prefix);
  }

  async getOrder(jobId: string): Promise<OrderRecord | null> {
    const v = await this.redis.get(this.keys.order(jobId));
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
    await this.redis.set(this.keys.order(jobId), JSON.stringify(next), 'KEEPTTL');
  }

  async getMessage(id: string): Promise<StoredMessage | null> {
    const v = await this.redis.get(this.keys.message(id));
    return v ? (JSON.parse(v) as StoredMessage) : null;
  }

  /** Newest first, without the raw message. */
  async listMessages(kind: MessageKind, offset = 0, limit = 50): Promise<{ total: number; items: StoredMessageSummary[] }> {
    const zkey = this.keys.messages(kind);
    const [total, ids] = await Promise.all([this.redis.zcard(zkey), this.redis.zrevrange(zkey, offset, offset + limit - 1)]);
    const values = ids.length ? await this.redis.mget(ids.map((id) => this.keys.message(id))) : [];
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
    await this.redis.set(this.keys.message(id), JSON.stringify(msg), 'KEEPTTL');
  }
}
