import { type AckCode, type AckError, ackCodeFor, ackPlan, buildAck, HL7_ERROR } from '../hl7/ack.js';
import { type MshHeader, namespaceOf, readHeader } from '../hl7/header.js';
import { decodeMessageBytes } from '../hl7/text.js';
import { type IntakeChannel, intakeChannel, jobIdFor, type NewJob, NOT_STARTED, type ScreeningQueue } from '../jobs/queue.js';
import type { Logger } from '../observability/log.js';
import { METRICS, type MetricsSink } from '../observability/metrics.js';
import { type EvaluatedOrder, type Evaluation, evaluateMessage } from './evaluate.js';
import type { Mappings } from './mappings.js';
import { type OrderRecord, OrderStore } from './store.js';

export interface IntakeDeps {
  store: OrderStore;
  queue: ScreeningQueue;
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

export type Outcome = 'queued' | 'duplicate' | 'resend' | 'cancelled' | 'cancel-requested' | 'updated' | 'ignored' | 'rejected' | 'error';

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

/** An order's effect, decided from the current records before anything is written. */
type Plan =
  | { kind: 'ignore'; note: string }
  | { kind: 'create'; jobId: string; record: OrderRecord }
  | { kind: 'duplicate'; jobId: string }
  | { kind: 'cancel'; jobId: string; record: OrderRecord; removeJob: boolean; outcome: 'cancelled' | 'cancel-requested' | 'duplicate'; note: string }
  | { kind: 'update'; jobId: string; record: OrderRecord; applyToJob: boolean; note: string };

class Rejection extends Error {
  constructor(readonly ackError: AckError) {
    super(ackError.reason);
  }
}

let ackCounter = 0;
function ackControlId(now: Date): string {
  ackCounter = (ackCounter + 1) % 36 ** 4;
  return `CG${now.getTime().toString(36).toUpperCase()}${ackCounter.toString(36).toUpperCase().padStart(4, '0')}`;
}

/**
 * The order intake: parse, decide, persist, and only then acknowledge. Every path ends in an ACK decision;
 * an I/O failure (Redis down) yields AE/CE so the sender resends, and nothing is half-recorded.
 */
export class Intake {
  /** The hot path's reads and writes, in round trips shared by the messages handled together. */
  private readonly channel: IntakeChannel;

  constructor(private readonly deps: IntakeDeps) {
    this.channel = intakeChannel(deps.queue);
  }

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  private respond(
    header: MshHeader | null,
    cls: 'accept' | 'error' | 'reject',
    outcome: Outcome,
    reason: string,
    jobIds: string[] = [],
    error?: AckError,
  ): IntakeResult {
    const plan = ackPlan(header, cls === 'accept');
    const code = ackCodeFor(cls, plan.enhanced);
    const now = this.now();
    const ack = plan.send
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

  /** A frame over the size limit: AR with the reason, and the head of it kept as dead letter. */
  async handleOversized(head: Buffer, size: number, limit: number, meta: MessageMeta): Promise<IntakeResult> {
    const started = performance.now();
    const text = decodeMessageBytes(head);
    const header = readHeader(text);
    const error: AckError = { kind: 'internalError', reason: `message of ${size} bytes exceeds the ${limit}-byte limit` };
    try {
      await this.deadLetter(text, header, error, meta, 'AR');
      return this.logResult(header, this.respond(header, 'reject', 'rejected', error.reason, [], error), started, meta);
    } catch (e) {
      return this.logResult(header, this.storeDown(header, e), started, meta);
    }
  }

  async handle(raw: Buffer, meta: MessageMeta): Promise<IntakeResult> {
    const started = performance.now();
    const text = decodeMessageBytes(raw);
    const ev = evaluateMessage(text, this.deps.mappings(), { quoteValues: this.deps.quoteValues });
    // ev.header is readHeader(text): the message is read once, for the answer and for the log line.
    return this.logResult(ev.header, await this.handleEvaluated(ev, text, meta), started, meta);
  }

  private storeDown(header: MshHeader | null, e: unknown): IntakeResult {
    const error: AckError = { kind: 'internalError', reason: 'order store unavailable; message not stored, please resend' };
    this.deps.log.error('store.unavailable', { error: (e as Error).message });
    return this.respond(header, 'error', 'error', error.reason, [], error);
  }

  private async deadLetter(text: string, header: MshHeader | null, error: AckError, meta: MessageMeta, ackCode: AckCode): Promise<void> {
    if (meta.replay) return;
    await this.deps.store.saveMessage({
      kind: 'dead-letter',
      receivedAt: this.now().toISOString(),
      reason: error.reason,
      errorCode: HL7_ERROR[error.kind].code,
      ackCode,
      ...this.headerSummary(header),
      remoteAddress: meta.remoteAddress,
      raw: text,
    });
  }

  private headerSummary(header: MshHeader | null) {
    return {
      sendingApplication: header ? namespaceOf(header.sendingApp, header.componentSep).slice(0, 64) : '',
      sendingFacility: header ? namespaceOf(header.sendingFacility, header.componentSep).slice(0, 64) : '',
      messageType: header ? `${header.messageType}^${header.triggerEvent}`.slice(0, 20) : '',
      controlId: header?.controlId.slice(0, 64) ?? '',
    };
  }

  private async handleEvaluated(ev: Evaluation, text: string, meta: MessageMeta): Promise<IntakeResult> {
    const header = ev.header;
    const rejectCode = ackCodeFor('reject', ackPlan(header, false).enhanced);
    try {
      if (ev.kind === 'reject') {
        await this.deadLetter(text, header, ev.error, meta, rejectCode);
        return this.respond(header, 'reject', 'rejected', ev.error.reason, [], ev.error);
      }
      const h = ev.header;
      const notDurable = this.deps.notDurable?.();
      if (notDurable) {
        const error: AckError = { kind: 'internalError', reason: notDurable };
        return this.respond(h, 'error', 'error', notDurable, [], error);
      }
      const messageKey = OrderStore.messageKey(h.sendingApp, h.sendingFacility, h.controlId);
      const jobIds = ev.orders.map((o) => jobIdFor(o.order.sender, o.order.placerOrderNumber));
      const { seen, orders: records } = await this.deps.store.lookup(messageKey, jobIds, this.channel.read);
      if (seen) {
        const cls = seen.code === 'AA' || seen.code === 'CA' ? 'accept' : 'error';
        return this.respond(h, cls, 'resend', `resend of an already processed message: ${seen.text}`.slice(0, 200));
      }
      let plans: Plan[];
      try {
        plans = await Promise.all(
          ev.orders.map((o, i) => {
            const jobId = jobIds[i] as string;
            return this.plan(o, h, jobId, records.get(jobId) ?? null);
          }),
        );
      } catch (e) {
        if (!(e instanceof Rejection)) throw e;
        await this.deadLetter(text, h, e.ackError, meta, rejectCode);
        return this.respond(h, 'reject', 'rejected', e.ackError.reason, [], e.ackError);
      }
      return await this.apply(plans, h, text, messageKey, meta);
    } catch (e) {
      return this.storeDown(header, e);
    }
  }

  /** `jobId` is jobIdFor(order.sender, order.placerOrderNumber). */
  private async plan(ev: EvaluatedOrder, h: MshHeader, jobId: string, record: OrderRecord | null): Promise<Plan> {
    const { order } = ev;
    if (!ev.chestCt.chestCt) return { kind: 'ignore', note: `not a chest CT (${ev.chestCt.because})` };
    if (ev.action === 'none') return { kind: 'ignore', note: `order control ${order.orderControl} is recorded, not acted on` };
    const at = this.now().toISOString();
    const event = (note: string) => ({ at, control: order.orderControl, controlId: h.controlId, note });
    if (ev.action === 'create') {
      if (record) return { kind: 'duplicate', jobId };
      return { kind: 'create', jobId, record: { jobId, status: 'queued', order, createdAt: at, updatedAt: at, history: [event('created')] } };
    }
    if (!record) {
      throw new Rejection({ kind: 'unknownKey', reason: `no order with this placer number (ORC-2) from this sender`, segment: 'ORC', field: 2 });
    }
    const state = (await (await this.deps.queue.getJob(jobId))?.getState()) ?? 'missing';
    if (ev.action === 'cancel') {
      if (record.status === 'cancelled') return { kind: 'cancel', jobId, record, removeJob: false, outcome: 'duplicate', note: 'already cancelled' };
      const next = (status: OrderRecord['status'], note: string): OrderRecord => ({
        ...record,
        status,
        updatedAt: at,
        history: [...record.history, event(note)],
      });
      if (NOT_STARTED.has(state) || state === 'missing') {
        return {
          kind: 'cancel',
          jobId,
          record: next('cancelled', 'cancelled before start'),
          removeJob: state !== 'missing',
          outcome: 'cancelled',
          note: 'cancelled',
        };
      }
      if (state === 'active') {
        return {
          kind: 'cancel',
          jobId,
          record: next('cancel-requested', 'cancel requested while running'),
          removeJob: false,
          outcome: 'cancel-requested',
          note: 'job is running; cancel requested',
        };
      }
      return {
        kind: 'cancel',
        jobId,
        record: { ...record, updatedAt: at, history: [...record.history, event(`cancel after job ${state}; result stands`)] },
        removeJob: false,
        outcome: 'duplicate',
        note: `job already ${state}`,
      };
    }
    if (record.status !== 'queued') {
      throw new Rejection({
        kind: 'internalError',
        reason: `the order is ${record.status}; it cannot be changed`,
        segment: 'ORC',
        field: 1,
      });
    }
    const applyToJob = NOT_STARTED.has(state);
    const note = applyToJob ? 'order updated' : `update recorded; job already ${state}`;
    return {
      kind: 'update',
      jobId,
      record: { ...record, order: applyToJob ? order : record.order, updatedAt: at, history: [...record.history, event(note)] },
      applyToJob,
      note,
    };
  }

  private async apply(plans: Plan[], h: MshHeader, text: string, messageKey: string, meta: MessageMeta): Promise<IntakeResult> {
    const records: OrderRecord[] = [];
    const jobIds: string[] = [];
    const notes: string[] = [];
    const outcomes = new Set<Outcome>();
    const receivedAt = this.now().toISOString();
    const newJobs: NewJob[] = [];
    for (const p of plans) {
      switch (p.kind) {
        case 'ignore':
          notes.push(p.note);
          break;
        case 'duplicate':
          jobIds.push(p.jobId);
          outcomes.add('duplicate');
          notes.push('order already received');
          break;
        case 'create':
          newJobs.push({ jobId: p.jobId, data: { order: p.record.order, receivedAt, messageControlId: h.controlId } });
          records.push(p.record);
          jobIds.push(p.jobId);
          outcomes.add('queued');
          notes.push('order queued');
          break;
        case 'cancel':
          if (p.removeJob) await (await this.deps.queue.getJob(p.jobId))?.remove();
          records.push(p.record);
          jobIds.push(p.jobId);
          outcomes.add(p.outcome);
          notes.push(p.note);
          break;
        case 'update':
          if (p.applyToJob) await (await this.deps.queue.getJob(p.jobId))?.updateData({ order: p.record.order, receivedAt, messageControlId: h.controlId });
          records.push(p.record);
          jobIds.push(p.jobId);
          outcomes.add('updated');
          notes.push(p.note);
          break;
      }
    }
    const ignoredOnly = plans.every((p) => p.kind === 'ignore');
    const reason = notes.join('; ').slice(0, 300);
    const result = this.respond(h, 'accept', ignoredOnly ? 'ignored' : ([...outcomes][0] ?? 'ignored'), reason, jobIds);
    // A message recorded rather than acted on is stored in the same MULTI as its resend marker.
    const ignored =
      ignoredOnly && !meta.replay
        ? {
            kind: 'ignored' as const,
            receivedAt,
            reason,
            ackCode: 'AA' as const,
            ...this.headerSummary(h),
            remoteAddress: meta.remoteAddress,
            raw: text,
          }
        : undefined;
    const marker = { code: result.ackCode, text: reason.slice(0, 80) };
    if (newJobs.length > 0) {
      // The jobs go in first (their ids are deterministic, so a retry after a failed commit re-adds nothing), and
      // the records and the marker only if they are in the queue, in the same round trip.
      await this.deps.store.commitWithJobs(this.channel.write, newJobs, messageKey, marker, records);
    } else {
      await this.deps.store.commit(messageKey, marker, records, ignored);
    }
    return result;
  }
}
