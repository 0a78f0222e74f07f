import { decodeMessageBytes } from '../hl7/text.js';
import { evaluateMessage } from '../orders/evaluate.js';
import type { Mappings } from '../orders/mappings.js';
import type { Order } from '../orders/order.js';

export interface CheckReport {
  accepted: boolean;
  chestCt: boolean;
  order: Order | null;
  reason: string;
  /** When the message carries more than one order group. */
  orders?: { order: Order; chestCt: boolean; reason: string }[];
  /** The HL7 error the ACK would carry (table 0357), when rejected. */
  error?: { code: string; segment?: string; field?: number };
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
  return report;
}
