import type { Order } from '../domain/order.js';
import { describeRule, type OrderIdentityField, orderIdentityFields } from '../domain/patient-identity.js';
import { decodeMessageBytes } from '../hl7/text.js';
import { evaluateMessage } from '../orders/evaluate.js';
import type { Mappings } from '../orders/mappings.js';

export interface CheckReport {
  accepted: boolean;
  chestCt: boolean;
  order: Order | null;
  reason: string;
  /** When the message carries more than one order group. */
  orders?: { order: Order; chestCt: boolean; reason: string }[];
  /** The HL7 error the ACK would carry (table 0357), when rejected. */
  error?: { code: string; segment?: string; field?: number };
  /**
   * What the worker's patient identity check will compare for the (chest-CT) order: the sender's rule and, per DICOM
   * attribute, the order's side as it is compared. Values are shown: the engineer holds the message.
   */
  patientIdentity?: {
    sender: string;
    rule: string;
    mode: 'enforce' | 'warn' | 'off';
    notComparable: 'mismatch' | 'ignore';
    fields: OrderIdentityField[];
  };
}

const ACTION_TEXT = { create: 'creates a job', cancel: 'cancels the job', update: 'updates the job', none: 'is recorded only' } as const;

/**
 * The integration engineer's dry run: what ctgate would make of this message with these mappings. The reason
 * quotes the offending value (the engineer holds the file; `serve` does not quote unless CTGATE_HL7_REASON_VALUES).
 */
export function checkMessage(bytes: Buffer, mappings: Mappings): CheckReport {
  const ev = evaluateMessage(decodeMessageBytes(bytes), mappings, { quoteValues: true });
  if (ev.kind === 'reject') {
    return {
      accepted: false,
      chestCt: false,
      order: null,
      reason: ev.error.reason,
      error: { code: ev.error.kind, segment: ev.error.segment, field: ev.error.field },
    };
  }
  const describe = (o: (typeof ev.orders)[number]) =>
    o.chestCt.chestCt
      ? `chest CT (${o.chestCt.because}); ORC-1 ${o.order.orderControl} ${ACTION_TEXT[o.action]}`
      : `not a chest CT (${o.chestCt.because}): acknowledged and recorded as ignored`;
  const main = ev.orders.find((o) => o.chestCt.chestCt) ?? ev.orders[0];
  const report: CheckReport = {
    accepted: true,
    chestCt: Boolean(main?.chestCt.chestCt),
    order: main?.order ?? null,
    reason: main ? describe(main) : 'no order group',
  };
  if (ev.orders.length > 1) report.orders = ev.orders.map((o) => ({ order: o.order, chestCt: o.chestCt.chestCt, reason: describe(o) }));
  if (main?.chestCt.chestCt) {
    const sender = main.order.sender.facility;
    const rule = mappings.patientIdentity(sender);
    report.patientIdentity = {
      sender,
      rule: describeRule(rule),
      mode: rule.mode,
      notComparable: rule.notComparable,
      fields: orderIdentityFields(main.order.patient, rule),
    };
  }
  return report;
}
