/**
 * ORM^O01's ORDER_DETAIL choices other than OBR: pharmacy/treatment (RXO), dietary (ODS, ODT) and supply
 * requisition (RQD, RQ1) orders. Valid HL7, but not imaging orders: acknowledged and recorded as ignored.
 */
export const NON_IMAGING_DETAILS = {
  RXO: 'pharmacy/treatment order',
  ODS: 'dietary order',
  ODT: 'diet tray order',
  RQD: 'requisition',
  RQ1: 'requisition',
} as const;
export type NonImagingDetail = keyof typeof NON_IMAGING_DETAILS;

/** An imaging order as ctgate understands it, read from one ORC/OBR group of an ORM^O01 or OMI^O23. */
export interface Order {
  sender: { application: string; facility: string };
  message: { type: string; controlId: string; version: string; processingId: string };
  /** ORC-1: NW new, CA cancel request, DC discontinue, OC cancelled, XO change, others ignored. */
  orderControl: string;
  placerOrderNumber: string;
  placerAuthority?: string;
  fillerOrderNumber?: string;
  accessionNumber?: string;
  studyInstanceUid?: string;
  procedure: { code: string; text: string; system: string; alternate?: { code: string; text: string; system: string } };
  /**
   * Set when the ORC's order detail is not an OBR (ORM^O01 only): the order is not an imaging order, and the
   * procedure is the detail's own code (RXO-1, ODS-3, ODT-1, RQD-2; empty for RQ1).
   */
  orderDetail?: NonImagingDetail;
  /** Normalized priority: stat, asap, routine (or the raw code when unknown). */
  priority?: string;
  orderingProvider?: { id: string; family: string; given: string };
  /** ORC-9 as ISO 8601 when it parses. */
  orderDateTime?: string;
  patient: {
    /**
     * PID-3 repetitions: CX.1 value, CX.4 assigning authority (its namespace ID, HD.1; `authorityId` is its universal
     * ID, HD.2, when sent), CX.5 identifier type code.
     */
    identifiers: { value: string; authority: string; authorityId?: string; type: string }[];
    name: { family: string; given: string[] };
    /** YYYY-MM-DD */
    birthDate?: string;
    sex?: 'male' | 'female' | 'other' | 'unknown';
  };
}

/**
 * The order's lifecycle as the hospital sees it (its record, written by the intake): queued (a job exists for it),
 * cancel-requested (a cancel arrived while its job was running; the job stops at its next stage), cancelled.
 */
export type OrderStatus = 'queued' | 'cancelled' | 'cancel-requested';

/** Order controls that act on a job; any other valid ORC-1 is acknowledged and recorded as ignored. */
export const ACTIONABLE_CONTROLS = ['NW', 'CA', 'DC', 'OC', 'XO'] as const;
export type OrderAction = 'create' | 'cancel' | 'update' | 'none';

export function actionFor(orderControl: string): OrderAction {
  switch (orderControl) {
    case 'NW':
      return 'create';
    case 'CA':
    case 'DC':
    case 'OC':
      return 'cancel';
    case 'XO':
      return 'update';
    default:
      return 'none';
  }
}
