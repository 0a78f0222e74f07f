import { type AckCode, type AckError, ackPlan, buildAck } from '../hl7/ack.js';
import { type MshHeader, namespaceOf, readHeader } from '../hl7/header.js';
import { decodeMessageBytes } from '../hl7/text.js';
import type { ScreeningQueue } from '../jobs/queue.js';
import type { Logger } from '../observability/log.js';
import { METRICS } from '../observability/metric-names.js';
import type { MetricsSink } from '../observability/recorder.js';
import { type Answer, ackCodeOf, decideIntake, type IntakeDecision, ledgerQueryFor, type Outcome, rejectDecision } from './decision.js';
import { evaluateMessage } from './evaluate.js';
import type { OrderLedger } from './ledger.js';
import type { Mappings } from './mappings.js';
import { RedisOrderLedger } from './redis-ledger.js';
import type { OrderStore } from './store.js';

export type { Outcome } from './decision.js';

interface IntakeOptions {
  mappings: () => Mappings;
  log: Logger;
  appName: string;
  facilityName: string;
  now?: () => Date;
  /** Counts messages received and their ACK codes (in memory, added to Redis in the background). */
  metrics?: MetricsSink;
  /** NAK reasons quote the offending value (CTGATE_HL7_REASON_VALUES); by default they name only where it is. */
  quoteValues?: boolean;
  /**
   * Why an order cannot be stored durably now (Redis without AOF, or not yet verified), or null. While it says why,
   * orders are NAKed (AE/CE: the sender resends) instead of acknowledged on a store that would lose them.
   */
  notDurable?: () => string | null;
}

/** The ledger itself, or the store and queue the Redis ledger is made of. */
export type IntakeDeps = IntakeOptions & ({ ledger: OrderLedger } | { store: OrderStore; queue: ScreeningQueue });

export interface IntakeResult {
  ackCode: AckCode;
  /** The ACK to write back, or null when MSH-15 asked for none in this case. */
  ack: string | null;
  outcome: Outcome;
  jobIds: string[];
  reason: string;
}

export interface MessageMeta {
  remoteAddress: string;
  /** An operator's replay of a stored message: its outcome is recorded on that message, not stored anew. */
  replay?: boolean;
}

let ackCounter = 0;
function ackControlId(now: Date): string {
  ackCounter = (ackCounter + 1) % 36 ** 4;
  return `CG${now.getTime().toString(36).toUpperCase()}${ackCounter.toString(36).toUpperCase().padStart(4, '0')}`;
}

/**
 * The order intake: parse, read what the ledger knows, decide, record, and only then acknowledge. Every path
 * ends in an ACK; a ledger failure (Redis down) yields AE/CE so the sender resends, and nothing is half-recorded.
 */
export class Intake {
  private readonly ledger: OrderLedger;

  constructor(private readonly deps: IntakeDeps) {
    this.ledger = 'ledger' in deps ? deps.ledger : RedisOrderLedger.over(deps.store, deps.queue);
  }

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  async handle(raw: Buffer, meta: MessageMeta): Promise<IntakeResult> {
    const started = performance.now();
    const text = decodeMessageBytes(raw);
    const evaluation = evaluateMessage(text, this.deps.mappings(), { quoteValues: this.deps.quoteValues });
    const notDurable = evaluation.kind === 'orders' ? (this.deps.notDurable?.() ?? null) : null;
    const query = ledgerQueryFor(evaluation, notDurable);
    let result: IntakeResult;
    try {
      const known = query ? { query, facts: await this.ledger.read(query) } : null;
      const decision = decideIntake({ evaluation, text, remoteAddress: meta.remoteAddress, replay: meta.replay === true, notDurable, known, now: this.now() });
      result = await this.settle(decision);
    } catch (e) {
      result = this.storeDown(evaluation.header, e);
    }
    // evaluation.header is readHeader(text): the message is read once, for the answer and for the log line.
    return this.logResult(evaluation.header, result, started, meta);
  }

  /** A frame over the size limit: AR with the reason, and the head of it kept as dead letter. */
  async handleOversized(head: Buffer, size: number, limit: number, meta: MessageMeta): Promise<IntakeResult> {
    const started = performance.now();
    const text = decodeMessageBytes(head);
    const header = readHeader(text);
    const error: AckError = { kind: 'internalError', reason: `message of ${size} bytes exceeds the ${limit}-byte limit` };
    const ctx = { text, remoteAddress: meta.remoteAddress, replay: meta.replay === true, now: this.now() };
    let result: IntakeResult;
    try {
      result = await this.settle(rejectDecision(header, error, ctx, 'AR'));
    } catch (e) {
      result = this.storeDown(header, e);
    }
    return this.logResult(header, result, started, meta);
  }

  /** Records what the decision writes, then builds its answer: the ACK exists only once the write resolved. */
  private async settle(d: IntakeDecision): Promise<IntakeResult> {
    if (d.write) await this.ledger.record(d.write);
    switch (d.kind) {
      case 'reject':
        return this.respond(d.header, 'reject', 'rejected', d.error.reason, [], d.error);
      case 'unavailable':
        return this.respond(d.header, 'error', 'error', d.error.reason, [], d.error);
      case 'resend':
        return this.respond(d.header, d.answer, 'resend', d.reason);
      case 'accept':
        return this.respond(d.header, 'accept', d.outcome, d.reason, d.jobIds);
    }
  }

  private storeDown(header: MshHeader | null, e: unknown): IntakeResult {
    const error: AckError = { kind: 'internalError', reason: 'order store unavailable; message not stored, please resend' };
    this.deps.log.error('store.unavailable', { error: (e as Error).message });
    return this.respond(header, 'error', 'error', error.reason, [], error);
  }

  private respond(header: MshHeader | null, answer: Answer, outcome: Outcome, reason: string, jobIds: string[] = [], error?: AckError): IntakeResult {
    const code = ackCodeOf(header, answer);
    const now = this.now();
    const ack = ackPlan(header, answer === 'accept').send
      ? buildAck({ header, code, text: reason, error, appName: this.deps.appName, facilityName: this.deps.facilityName, controlId: ackControlId(now), now })
      : null;
    return { ackCode: code, ack, outcome, jobIds, reason };
  }

  private logResult(header: MshHeader | null, r: IntakeResult, started: number, meta: MessageMeta): IntakeResult {
    const m = this.deps.metrics;
    if (m && !meta.replay) {
      m.inc(METRICS.ordersReceived);
      m.inc(METRICS.ordersAcked, { code: r.ackCode });
      if (r.ackCode !== 'AA' && r.ackCode !== 'CA') m.inc(METRICS.ordersNak, { class: r.ackCode === 'AR' || r.ackCode === 'CR' ? 'reject' : 'error' });
    }
    const fields = {
      controlId: header?.controlId.slice(0, 40),
      sendingApplication: header ? namespaceOf(header.sendingApp, header.componentSep).slice(0, 40) : undefined,
      sendingFacility: header ? namespaceOf(header.sendingFacility, header.componentSep).slice(0, 40) : undefined,
      messageType: header ? `${header.messageType}^${header.triggerEvent}`.slice(0, 20) : undefined,
      ack: r.ackCode,
      outcome: r.outcome,
      jobIds: r.jobIds,
      reason: r.reason,
      remote: meta.remoteAddress,
      ms: Math.round((performance.now() - started) * 100) / 100,
    };
    if (r.outcome === 'error') this.deps.log.error('hl7.message', fields);
    else if (r.outcome === 'rejected') this.deps.log.warn('hl7.message', fields);
    else this.deps.log.info('hl7.message', fields);
    return r;
  }
}
