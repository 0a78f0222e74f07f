import { jobIdFor } from '../domain/job.js';
import { type AckCode, type AckError, ackCodeFor, ackPlan, HL7_ERROR } from '../hl7/ack.js';
import { type MshHeader, namespaceOf } from '../hl7/header.js';
import { NOT_STARTED } from '../jobs/queue.js';
import type { EvaluatedOrder, Evaluation } from './evaluate.js';
import type { JobChange, LedgerEntry, LedgerFacts, LedgerQuery, MessageEntry, NewJob, QueueState, ResendMarker } from './ledger.js';
import { messageKeyFor } from './ledger.js';
import type { OrderRecord } from './store.js';

export type Outcome = 'queued' | 'duplicate' | 'resend' | 'cancelled' | 'cancel-requested' | 'updated' | 'ignored' | 'rejected' | 'error';

/** The class of an ACK; its code (original or enhanced mode) follows from the message's MSH-15/16. */
export type Answer = 'accept' | 'error' | 'reject';

/** One order's effect, decided from the ledger's facts before anything is written. */
export type OrderEffect =
  | { kind: 'ignore'; note: string }
  | { kind: 'create'; jobId: string; record: OrderRecord }
  | { kind: 'duplicate'; jobId: string }
  | { kind: 'cancel'; jobId: string; record: OrderRecord; removeJob: boolean; outcome: 'cancelled' | 'cancel-requested' | 'duplicate'; note: string }
  | { kind: 'update'; jobId: string; record: OrderRecord; applyToJob: boolean; note: string };

/**
 * What to do with a message. `write`, when set, is recorded before the ACK is sent; when recording fails the
 * answer is AE/CE instead (the sender resends).
 */
export type IntakeDecision =
  /** AR/CR with ERR; the message is dead-lettered (unless it is an operator's replay). */
  | { kind: 'reject'; header: MshHeader | null; error: AckError; write: LedgerEntry | null }
  /** AE/CE: the store cannot keep the order durably now; nothing is written. */
  | { kind: 'unavailable'; header: MshHeader; error: AckError; write: null }
  /** A message already processed: the answer it got, nothing written. */
  | { kind: 'resend'; header: MshHeader; answer: 'accept' | 'error'; reason: string; write: null }
  /** AA/CA: orders queued, cancelled, updated, found again or ignored. */
  | { kind: 'accept'; header: MshHeader; outcome: Outcome; reason: string; jobIds: string[]; effects: OrderEffect[]; write: LedgerEntry };

export interface DecisionInput {
  evaluation: Evaluation;
  /** The message as received, kept with a dead-lettered or ignored message. */
  text: string;
  remoteAddress: string;
  /** An operator's replay of a stored message: not stored again. */
  replay: boolean;
  /** Why orders cannot be stored durably now, or null. */
  notDurable: string | null;
  /** What ledgerQueryFor(evaluation, notDurable) asked the ledger and its answer; null when it asked nothing. */
  known: { query: LedgerQuery; facts: LedgerFacts } | null;
  now: Date;
}

/** The code an answer gets for this message: enhanced mode (CA/CE/CR) when MSH-15 or MSH-16 is valued. */
export function ackCodeOf(header: MshHeader | null, answer: Answer): AckCode {
  return ackCodeFor(answer, ackPlan(header, answer === 'accept').enhanced);
}

/** What the ledger must be asked before deciding, or null when the decision needs nothing from it. */
export function ledgerQueryFor(evaluation: Evaluation, notDurable: string | null): LedgerQuery | null {
  if (evaluation.kind === 'reject' || notDurable) return null;
  const h = evaluation.header;
  return {
    messageKey: messageKeyFor(h.sendingApp, h.sendingFacility, h.controlId),
    orders: evaluation.orders.map((o) => ({
      jobId: jobIdFor(o.order.sender, o.order.placerOrderNumber),
      jobState: o.chestCt.chestCt && (o.action === 'cancel' || o.action === 'update'),
    })),
  };
}

/** What a stored message shows of its sender and type (never the message text). */
function headerSummary(header: MshHeader | null) {
  return {
    sendingApplication: header ? namespaceOf(header.sendingApp, header.componentSep).slice(0, 64) : '',
    sendingFacility: header ? namespaceOf(header.sendingFacility, header.componentSep).slice(0, 64) : '',
    messageType: header ? `${header.messageType}^${header.triggerEvent}`.slice(0, 20) : '',
    controlId: header?.controlId.slice(0, 64) ?? '',
  };
}

/** A rejection; the dead letter carries `ackCode` (the code the answer gets). */
export function rejectDecision(
  header: MshHeader | null,
  error: AckError,
  ctx: { text: string; remoteAddress: string; replay: boolean; now: Date },
  ackCode: AckCode = ackCodeOf(header, 'reject'),
): IntakeDecision {
  const message: MessageEntry = {
    kind: 'dead-letter',
    receivedAt: ctx.now.toISOString(),
    reason: error.reason,
    errorCode: HL7_ERROR[error.kind].code,
    ackCode,
    ...headerSummary(header),
    remoteAddress: ctx.remoteAddress,
    raw: ctx.text,
  };
  return { kind: 'reject', header, error, write: ctx.replay ? null : { kind: 'dead-letter', message } };
}

class Rejection extends Error {
  constructor(readonly ackError: AckError) {
    super(ackError.reason);
  }
}

/** The whole intake decision for a message, from the parsed message and the ledger's facts; no I/O. */
export function decideIntake(input: DecisionInput): IntakeDecision {
  const ev = input.evaluation;
  if (ev.kind === 'reject') return rejectDecision(ev.header, ev.error, input);
  const h = ev.header;
  if (input.notDurable) return { kind: 'unavailable', header: h, error: { kind: 'internalError', reason: input.notDurable }, write: null };
  if (!input.known) throw new Error('an order message is decided on what the ledger knows of it');
  const { query, facts } = input.known;
  if (facts.seen) {
    const answer = facts.seen.code === 'AA' || facts.seen.code === 'CA' ? 'accept' : 'error';
    return { kind: 'resend', header: h, answer, reason: `resend of an already processed message: ${facts.seen.text}`.slice(0, 200), write: null };
  }
  const at = input.now.toISOString();
  let effects: OrderEffect[];
  try {
    effects = ev.orders.map((o, i) => {
      const jobId = query.orders[i]?.jobId ?? jobIdFor(o.order.sender, o.order.placerOrderNumber);
      return effectOf(o, h, jobId, facts.records.get(jobId) ?? null, facts.queueStates.get(jobId) ?? 'missing', at);
    });
  } catch (e) {
    if (!(e instanceof Rejection)) throw e;
    return rejectDecision(h, e.ackError, input);
  }
  return acceptDecision(effects, h, query.messageKey, input);
}

type HistoryEvent = OrderRecord['history'][number];

/** The record with one more history event (and a new status, when given). */
function withEvent(record: OrderRecord, event: HistoryEvent, status = record.status): OrderRecord {
  return { ...record, status, updatedAt: event.at, history: [...record.history, event] };
}

/** One order's effect. `jobId` is jobIdFor(order.sender, order.placerOrderNumber); throws a Rejection. */
function effectOf(ev: EvaluatedOrder, h: MshHeader, jobId: string, record: OrderRecord | null, state: QueueState, at: string): OrderEffect {
  const { order } = ev;
  if (!ev.chestCt.chestCt) return { kind: 'ignore', note: `not a chest CT (${ev.chestCt.because})` };
  if (ev.action === 'none') return { kind: 'ignore', note: `order control ${order.orderControl} is recorded, not acted on` };
  const event = { at, control: order.orderControl, controlId: h.controlId, note: '' };
  if (ev.action === 'create') {
    if (record) return { kind: 'duplicate', jobId };
    return { kind: 'create', jobId, record: { jobId, status: 'queued', order, createdAt: at, updatedAt: at, history: [{ ...event, note: 'created' }] } };
  }
  if (!record) {
    throw new Rejection({ kind: 'unknownKey', reason: `no order with this placer number (ORC-2) from this sender`, segment: 'ORC', field: 2 });
  }
  if (ev.action === 'cancel') return cancelEffect(jobId, record, state, event);
  if (record.status !== 'queued') {
    throw new Rejection({ kind: 'internalError', reason: `the order is ${record.status}; it cannot be changed`, segment: 'ORC', field: 1 });
  }
  const applyToJob = NOT_STARTED.has(state);
  const note = applyToJob ? 'order updated' : `update recorded; job already ${state}`;
  return { kind: 'update', jobId, record: { ...withEvent(record, { ...event, note }), order: applyToJob ? order : record.order }, applyToJob, note };
}

/** `event`: the cancel's history event, its note left to fill. */
function cancelEffect(jobId: string, record: OrderRecord, state: QueueState, event: HistoryEvent): OrderEffect {
  if (record.status === 'cancelled') return { kind: 'cancel', jobId, record, removeJob: false, outcome: 'duplicate', note: 'already cancelled' };
  if (NOT_STARTED.has(state) || state === 'missing') {
    const next = withEvent(record, { ...event, note: 'cancelled before start' }, 'cancelled');
    return { kind: 'cancel', jobId, record: next, removeJob: state !== 'missing', outcome: 'cancelled', note: 'cancelled' };
  }
  if (state === 'active') {
    const next = withEvent(record, { ...event, note: 'cancel requested while running' }, 'cancel-requested');
    return { kind: 'cancel', jobId, record: next, removeJob: false, outcome: 'cancel-requested', note: 'job is running; cancel requested' };
  }
  const next = withEvent(record, { ...event, note: `cancel after job ${state}; result stands` });
  return { kind: 'cancel', jobId, record: next, removeJob: false, outcome: 'duplicate', note: `job already ${state}` };
}

/** The ACK's outcome and text, and the entry that records the effects with the message's resend marker. */
function acceptDecision(effects: OrderEffect[], h: MshHeader, messageKey: string, input: DecisionInput): IntakeDecision {
  const receivedAt = input.now.toISOString();
  const records: OrderRecord[] = [];
  const jobIds: string[] = [];
  const notes: string[] = [];
  const outcomes: Outcome[] = [];
  const newJobs: NewJob[] = [];
  const jobChanges: JobChange[] = [];
  for (const e of effects) {
    if (e.kind === 'ignore') {
      notes.push(e.note);
      continue;
    }
    jobIds.push(e.jobId);
    if (e.kind === 'duplicate') {
      outcomes.push('duplicate');
      notes.push('order already received');
      continue;
    }
    records.push(e.record);
    if (e.kind === 'create') {
      newJobs.push({ jobId: e.jobId, data: { order: e.record.order, receivedAt, messageControlId: h.controlId } });
      outcomes.push('queued');
      notes.push('order queued');
    } else if (e.kind === 'cancel') {
      if (e.removeJob) jobChanges.push({ kind: 'remove', jobId: e.jobId });
      outcomes.push(e.outcome);
      notes.push(e.note);
    } else {
      if (e.applyToJob) jobChanges.push({ kind: 'update-data', jobId: e.jobId, data: { order: e.record.order, receivedAt, messageControlId: h.controlId } });
      outcomes.push('updated');
      notes.push(e.note);
    }
  }
  const ignoredOnly = effects.every((e) => e.kind === 'ignore');
  const reason = notes.join('; ').slice(0, 300);
  const marker: ResendMarker = { code: ackCodeOf(h, 'accept'), text: reason.slice(0, 80) };
  const ignored: MessageEntry | undefined =
    ignoredOnly && !input.replay
      ? { kind: 'ignored', receivedAt, reason, ackCode: 'AA', ...headerSummary(h), remoteAddress: input.remoteAddress, raw: input.text }
      : undefined;
  return {
    kind: 'accept',
    header: h,
    outcome: ignoredOnly ? 'ignored' : (outcomes[0] ?? 'ignored'),
    reason,
    jobIds,
    effects,
    write: { kind: 'orders', messageKey, marker, newJobs, jobChanges, records, ...(ignored ? { ignored } : {}) },
  };
}
