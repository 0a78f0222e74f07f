import { createHash } from 'node:crypto';
import type { ScreeningJobData } from '../domain/job.js';
import type { AckCode } from '../hl7/ack.js';
import type { OrderRecord, StoredMessage } from './store.js';

/** The answer given to a message, kept under its sender + MSH-10 so that a resend gets the same answer. */
export interface ResendMarker {
  code: AckCode;
  text: string;
}

/** A job's queue state as BullMQ names it ('waiting', 'active', 'completed', …), or 'missing' when it has none. */
export type QueueState = string;

/** What the intake asks the ledger before it decides about a message. */
export interface LedgerQuery {
  messageKey: string;
  /** One per order of the message; `jobState`: the job's queue state is needed too (cancel, update) when it has a record. */
  orders: { jobId: string; jobState: boolean }[];
}

/** What the ledger knows about a message and its orders. */
export interface LedgerFacts {
  /** The answer already given to this sender + MSH-10, if any. When set, nothing else is read. */
  seen: ResendMarker | null;
  records: Map<string, OrderRecord>;
  /** For the orders asked with `jobState` that have a record: their job's queue state. */
  queueStates: Map<string, QueueState>;
}

export const NO_FACTS: LedgerFacts = { seen: null, records: new Map(), queueStates: new Map() };

/** A job to add: its id is deterministic, so adding it again is a no-op. */
export interface NewJob {
  jobId: string;
  data: ScreeningJobData;
}

/** A change to a job already in the queue; each is harmless to repeat. */
export type JobChange = { kind: 'remove'; jobId: string } | { kind: 'update-data'; jobId: string; data: ScreeningJobData };

export type MessageEntry = Omit<StoredMessage, 'id' | 'replays'>;

/** Everything one message writes. */
export type LedgerEntry =
  | { kind: 'dead-letter'; message: MessageEntry }
  | {
      kind: 'orders';
      messageKey: string;
      marker: ResendMarker;
      /** Stored together with the records and the marker: neither exists without the other. */
      newJobs: NewJob[];
      /** Made before the records and the marker are written. */
      jobChanges: JobChange[];
      records: OrderRecord[];
      /** A message recorded rather than acted on, stored with its marker. */
      ignored?: MessageEntry;
    };

/**
 * Where the intake keeps orders, their jobs and the answers given. `record` resolves only once the entry is
 * durably stored, and when it rejects a resend of the message finds nothing recorded (so it is processed anew).
 */
export interface OrderLedger {
  read(query: LedgerQuery): Promise<LedgerFacts>;
  record(entry: LedgerEntry): Promise<void>;
}

/** The resend key of a message: sender + MSH-10, hashed (no PHI, bounded length). */
export function messageKeyFor(sendingApp: string, sendingFacility: string, controlId: string): string {
  return createHash('sha256').update(`${sendingApp}\u0000${sendingFacility}\u0000${controlId}`).digest('hex').slice(0, 40);
}
