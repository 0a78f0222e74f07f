/** Every metric ctgate records: names, help, labels and buckets (data only; recorder.ts counts, exposition.ts renders). */

export type Labels = Record<string, string>;

export interface MetricDef {
  name: string;
  help: string;
  type: 'counter' | 'histogram';
  labels: readonly string[];
  /** Histograms: finite upper bounds, ascending (+Inf is implied). */
  buckets?: readonly number[];
  /** Label value combinations always shown, with 0 until counted (so rate() has a series from the start). */
  zero?: readonly (readonly string[])[];
}

const STAGE_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600] as const;
const MODEL_BUCKETS = [0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120] as const;
export const ACK_CODES = ['AA', 'AE', 'AR', 'CA', 'CE', 'CR'] as const;

/** Every metric ctgate records (the scrape-time gauges are in renderSiteMetrics). */
export const METRICS = {
  ordersReceived: {
    name: 'ctgate_orders_received_total',
    help: 'HL7 v2 messages received over MLLP (oversized frames included, operator replays excluded).',
    type: 'counter',
    labels: [],
    zero: [[]],
  },
  ordersAcked: {
    name: 'ctgate_orders_acked_total',
    help: 'Acknowledgements decided per message, by MSA-1 code: AA/AE/AR (original mode), CA/CE/CR (enhanced mode). Sent unless MSH-15/16 asked for none.',
    type: 'counter',
    labels: ['code'],
    zero: ACK_CODES.map((c) => [c]),
  },
  ordersNak: {
    name: 'ctgate_orders_nak_total',
    help: 'Messages answered negatively, by class: error (AE/CE, nothing stored, the sender resends) or reject (AR/CR, dead-lettered).',
    type: 'counter',
    labels: ['class'],
    zero: [['error'], ['reject']],
  },
  mllpRefused: {
    name: 'ctgate_mllp_connections_refused_total',
    help: 'MLLP connections closed at once, by reason: allow-list (address not in CTGATE_MLLP_ALLOW_IPS) or connection-cap.',
    type: 'counter',
    labels: ['reason'],
  },
  mllpGarbage: {
    name: 'ctgate_mllp_garbage_total',
    help: 'Runs of bytes outside MLLP frames, discarded.',
    type: 'counter',
    labels: [],
  },
  stageDuration: {
    name: 'ctgate_stage_duration_seconds',
    help: 'Duration of a job stage that finished (one attempt; for wait-for-study, the check that found the study).',
    type: 'histogram',
    labels: ['stage'],
    buckets: STAGE_BUCKETS,
  },
  modelDuration: {
    name: 'ctgate_model_duration_seconds',
    help: 'Time in the screening models per study (lung mask, lesion segmentation, classification), by execution provider.',
    type: 'histogram',
    labels: ['provider'],
    buckets: MODEL_BUCKETS,
  },
  jobsCompleted: {
    name: 'ctgate_jobs_completed_total',
    help: 'Jobs that finished every stage, by the analysis verdict.',
    type: 'counter',
    labels: ['verdict'],
  },
  jobsCancelled: {
    name: 'ctgate_jobs_cancelled_total',
    help: 'Jobs stopped at a stage boundary because their order was cancelled.',
    type: 'counter',
    labels: [],
  },
  jobsFailed: {
    name: 'ctgate_jobs_failed_total',
    help: 'Jobs that failed for good (dead letter), by the stage that failed.',
    type: 'counter',
    labels: ['stage'],
  },
  analysesShared: {
    name: 'ctgate_analyses_shared_total',
    help: "Jobs that shared an earlier order's analysis of the same series and model versions instead of running the models.",
    type: 'counter',
    labels: [],
    zero: [[]],
  },
  patientIdentityMismatches: {
    name: 'ctgate_patient_identity_mismatches_total',
    help: "Studies whose patient (PatientID, IssuerOfPatientID, PatientName, PatientBirthDate) did not match the order's under the sender's rule, by sender (MSH-4) and action: failed (the job failed, nothing was sent) or warned (mode warn: recorded, the job went on).",
    type: 'counter',
    labels: ['sender', 'action'],
  },
  stageErrors: {
    name: 'ctgate_stage_errors_total',
    help: 'Failed stage attempts, by stage, peer (pacs, fhir, emr for the ORU receiver, model, internal) and whether the attempt is retried.',
    type: 'counter',
    labels: ['stage', 'peer', 'retryable'],
  },
} as const satisfies Record<string, MetricDef>;

export type MetricName = keyof typeof METRICS;

/** Where a stage error came from, for ctgate_stage_errors_total (by the error's class name: no imports of peers here). */
export function errorPeer(stage: string, e: unknown): string {
  const name = (e as { name?: unknown } | null)?.name;
  if (name === 'PacsError') return 'pacs';
  if (name === 'DimseError') return 'pacs-dimse';
  if (name === 'FhirSendError' || name === 'SmartAuthError') return 'fhir';
  if (name === 'OruDeliveryError') return 'emr';
  // ctgate's own verdicts (no study before the deadline, no usable series, a missing checkpoint), timeouts excepted.
  if (name === 'StageFailure' && !/timed out/.test(String((e as { message?: unknown }).message))) return 'internal';
  switch (stage) {
    case 'wait-for-study':
    case 'retrieve':
    case 'write-seg':
      return 'pacs';
    case 'write-fhir':
      return 'fhir';
    case 'send-oru':
      return 'emr';
    case 'analyze':
      return 'model';
    default:
      return 'internal';
  }
}
