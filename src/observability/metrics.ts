/**
 * Metrics, shared across processes through Redis, and their Prometheus text exposition (format 0.0.4).
 *
 * Gateway processes (orders received / ACKed / NAKed) and worker processes (stage durations, model time, job
 * outcomes, peer errors) each keep their increments in memory and add them to one Redis hash,
 * `<prefix>:metrics`, about once a second (MetricsRecorder: one MULTI of HINCRBY/HINCRBYFLOAT per flush, never a
 * round trip per event). A gateway's GET /metrics reads that hash (plus the queue's job counts) at scrape time, so
 * one scrape shows the whole site however many gateway and worker processes it runs. Counters only grow; they
 * are never reset by ctgate (delete the hash to start over; Prometheus treats that as a counter reset).
 *
 * Hash fields: `<name>|<JSON array of label values in the definition's order>` for counters; for histograms
 * `<name>|<labels>|le=<upper bound>` (per-bucket counts, NOT cumulative: one field per observation) and
 * `<name>|<labels>|sum`. The exposition makes the buckets cumulative and adds +Inf and _count.
 */
import type { Redis } from 'ioredis';

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

// ---- exposition (pure) ----------------------------------------------------------------------------

export interface Sample {
  labels: Labels;
  value: number;
}

export interface ScalarFamily {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  samples: Sample[];
}

export interface HistogramSeries {
  labels: Labels;
  /** Observations per bucket, NOT cumulative: `le` is the bucket's upper bound (Infinity for above the last). */
  buckets: { le: number; count: number }[];
  sum: number;
}

export interface HistogramFamily {
  name: string;
  help: string;
  type: 'histogram';
  /** The bounds always shown; bounds found only in the series are added. */
  buckets: readonly number[];
  series: HistogramSeries[];
}

export type MetricFamily = ScalarFamily | HistogramFamily;

export const EXPOSITION_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** A label value inside double quotes: backslash, double quote and line feed escaped. */
export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** HELP text: backslash and line feed escaped. */
export function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** A sample value as Prometheus reads it (Go float syntax: +Inf, -Inf, NaN). */
export function formatValue(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Number.POSITIVE_INFINITY) return '+Inf';
  if (n === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(n);
}

function labelText(labels: Labels, extra?: [string, string]): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(labels)) {
    if (!LABEL_RE.test(k) || k.startsWith('__')) throw new Error(`invalid label name ${JSON.stringify(k)}`);
    parts.push(`${k}="${escapeLabelValue(v)}"`);
  }
  if (extra) parts.push(`${extra[0]}="${escapeLabelValue(extra[1])}"`);
  return parts.length > 0 ? `{${parts.join(',')}}` : '';
}

/** The families in the Prometheus text format 0.0.4: HELP and TYPE lines, then the samples; ends with a newline. */
export function renderExposition(families: MetricFamily[]): string {
  const out: string[] = [];
  for (const f of families) {
    if (!NAME_RE.test(f.name)) throw new Error(`invalid metric name ${JSON.stringify(f.name)}`);
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`);
    out.push(`# TYPE ${f.name} ${f.type}`);
    if (f.type !== 'histogram') {
      for (const s of f.samples) out.push(`${f.name}${labelText(s.labels)} ${formatValue(s.value)}`);
      continue;
    }
    for (const s of f.series) {
      if ('le' in s.labels) throw new Error(`${f.name}: "le" is reserved for histogram buckets`);
      const bounds = new Set<number>(f.buckets);
      for (const b of s.buckets) if (Number.isFinite(b.le)) bounds.add(b.le);
      const sorted = [...bounds].sort((a, b) => a - b);
      let cumulative = 0;
      let i = 0;
      const own = [...s.buckets].sort((a, b) => a.le - b.le);
      for (const le of sorted) {
        while (i < own.length && (own[i] as { le: number }).le <= le) cumulative += (own[i++] as { count: number }).count;
        out.push(`${f.name}_bucket${labelText(s.labels, ['le', formatValue(le)])} ${formatValue(cumulative)}`);
      }
      while (i < own.length) cumulative += (own[i++] as { count: number }).count;
      out.push(`${f.name}_bucket${labelText(s.labels, ['le', '+Inf'])} ${formatValue(cumulative)}`);
      out.push(`${f.name}_sum${labelText(s.labels)} ${formatValue(s.sum)}`);
      out.push(`${f.name}_count${labelText(s.labels)} ${formatValue(cumulative)}`);
    }
  }
  return out.length > 0 ? `${out.join('\n')}\n` : '';
}

// ---- storage (Redis hash fields) -----------------------------------------------------------------

/** Label values in the definition's order; missing ones are '' and each is cut to 128 characters. */
function labelValues(def: MetricDef, labels: Labels | undefined): string[] {
  return def.labels.map((k) => String(labels?.[k] ?? '').slice(0, 128));
}

export function counterField(def: MetricDef, labels?: Labels): string {
  return `${def.name}|${JSON.stringify(labelValues(def, labels))}`;
}

/** The bucket an observation falls in: the first bound >= value, or +Inf. */
export function bucketFor(def: MetricDef, value: number): string {
  for (const b of def.buckets ?? []) if (value <= b) return formatValue(b);
  return '+Inf';
}

/** The families for the definitions, from the metrics hash (unknown fields are ignored). */
export function familiesFromHash(hash: Record<string, string>, defs: readonly MetricDef[] = Object.values(METRICS)): MetricFamily[] {
  const byName = new Map(defs.map((d) => [d.name, d]));
  const counters = new Map<string, Map<string, number>>();
  const hist = new Map<string, Map<string, { buckets: Map<number, number>; sum: number }>>();
  for (const [field, raw] of Object.entries(hash)) {
    const bar = field.indexOf('|');
    if (bar < 0) continue;
    const def = byName.get(field.slice(0, bar));
    if (!def) continue;
    const value = Number(raw);
    if (!Number.isFinite(value)) continue;
    if (def.type === 'counter') {
      const key = field.slice(bar + 1);
      const m = counters.get(def.name) ?? new Map<string, number>();
      m.set(key, (m.get(key) ?? 0) + value);
      counters.set(def.name, m);
      continue;
    }
    const last = field.lastIndexOf('|');
    if (last <= bar) continue;
    const key = field.slice(bar + 1, last);
    const suffix = field.slice(last + 1);
    const m = hist.get(def.name) ?? new Map();
    hist.set(def.name, m);
    const series = m.get(key) ?? { buckets: new Map<number, number>(), sum: 0 };
    m.set(key, series);
    if (suffix === 'sum') series.sum += value;
    else if (suffix.startsWith('le=')) {
      const le = suffix === 'le=+Inf' ? Number.POSITIVE_INFINITY : Number(suffix.slice(3));
      if (!Number.isNaN(le)) series.buckets.set(le, (series.buckets.get(le) ?? 0) + value);
    }
  }
  const toLabels = (def: MetricDef, key: string): Labels | null => {
    let values: unknown;
    try {
      values = JSON.parse(key);
    } catch {
      return null;
    }
    if (!Array.isArray(values) || values.length !== def.labels.length) return null;
    return Object.fromEntries(def.labels.map((k, i) => [k, String(values[i])]));
  };
  const out: MetricFamily[] = [];
  for (const def of defs) {
    if (def.type === 'counter') {
      const m = counters.get(def.name) ?? new Map<string, number>();
      for (const z of def.zero ?? []) {
        const key = JSON.stringify(z);
        if (!m.has(key)) m.set(key, 0);
      }
      const samples: Sample[] = [];
      for (const [key, value] of [...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
        const labels = toLabels(def, key);
        if (labels) samples.push({ labels, value });
      }
      out.push({ name: def.name, help: def.help, type: 'counter', samples });
    } else {
      const series: HistogramSeries[] = [];
      for (const [key, s] of [...(hist.get(def.name) ?? new Map<string, { buckets: Map<number, number>; sum: number }>())].sort(([a], [b]) =>
        a < b ? -1 : a > b ? 1 : 0,
      )) {
        const labels = toLabels(def, key);
        if (labels) series.push({ labels, sum: s.sum, buckets: [...s.buckets].map(([le, count]) => ({ le, count })) });
      }
      out.push({ name: def.name, help: def.help, type: 'histogram', buckets: def.buckets ?? [], series });
    }
  }
  return out;
}

export function metricsKey(prefix: string): string {
  return `${prefix}:metrics`;
}

// ---- recording -----------------------------------------------------------------------------------

/** What code that counts things calls; cheap (a Map update), never waits on Redis. */
export interface MetricsSink {
  inc(def: MetricDef, labels?: Labels, by?: number): void;
  observe(def: MetricDef, labels: Labels | undefined, value: number): void;
}

export const noMetrics: MetricsSink = { inc() {}, observe() {} };

export interface RecorderOptions {
  /** How often increments are added to Redis; default 1000 ms. */
  flushMs?: number;
  onError?: (e: Error) => void;
}

/**
 * Keeps increments in memory and adds them to the metrics hash in one MULTI per flush (about once a second, and on
 * demand before a scrape). While Redis is unreachable the increments stay in memory (their number is bounded by the
 * label combinations, not by traffic) and go with the next flush that succeeds.
 */
export class MetricsRecorder implements MetricsSink {
  private ints = new Map<string, number>();
  private floats = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private chain: Promise<void> = Promise.resolve();
  readonly key: string;

  constructor(
    private readonly redis: Redis,
    prefix: string,
    private readonly opts: RecorderOptions = {},
  ) {
    this.key = metricsKey(prefix);
  }

  inc(def: MetricDef, labels?: Labels, by = 1): void {
    const f = counterField(def, labels);
    this.ints.set(f, (this.ints.get(f) ?? 0) + by);
  }

  observe(def: MetricDef, labels: Labels | undefined, value: number): void {
    if (!Number.isFinite(value)) return;
    const base = counterField(def, labels);
    const b = `${base}|le=${bucketFor(def, value)}`;
    this.ints.set(b, (this.ints.get(b) ?? 0) + 1);
    const s = `${base}|sum`;
    this.floats.set(s, (this.floats.get(s) ?? 0) + value);
  }

  /** Starts the periodic flush (the timer does not keep the process alive). */
  start(): this {
    if (!this.timer) {
      this.timer = setInterval(() => void this.flush().catch(() => {}), this.opts.flushMs ?? 1000);
      this.timer.unref();
    }
    return this;
  }

  /** Adds what was counted so far to Redis; resolves once this process's increments so far are stored. */
  flush(): Promise<void> {
    const next = this.chain.then(() => this.flushNow());
    this.chain = next.catch(() => {});
    return next;
  }

  private async flushNow(): Promise<void> {
    if (this.ints.size === 0 && this.floats.size === 0) return;
    const ints = this.ints;
    const floats = this.floats;
    this.ints = new Map();
    this.floats = new Map();
    const m = this.redis.multi();
    for (const [f, n] of ints) if (n !== 0) m.hincrby(this.key, f, n);
    for (const [f, n] of floats) if (n !== 0) m.hincrbyfloat(this.key, f, n);
    try {
      const res = await m.exec();
      const failed = res?.find(([err]) => err);
      if (!res || failed) throw failed?.[0] ?? new Error('Redis transaction aborted');
    } catch (e) {
      // Not stored (MULTI/EXEC is all or nothing): keep them for the next flush.
      for (const [f, n] of ints) this.ints.set(f, (this.ints.get(f) ?? 0) + n);
      for (const [f, n] of floats) this.floats.set(f, (this.floats.get(f) ?? 0) + n);
      this.opts.onError?.(e as Error);
      throw e;
    }
  }

  /** Stops the timer and flushes once more (best effort). */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.flush().catch(() => {});
  }
}

/** The recorder of a process's Redis connection, so the HTTP layer can flush it before a scrape. */
const recorders = new WeakMap<Redis, MetricsRecorder>();

export function registerRecorder(redis: Redis, recorder: MetricsRecorder): MetricsRecorder {
  recorders.set(redis, recorder);
  return recorder;
}

export function recorderFor(redis: Redis): MetricsRecorder | undefined {
  return recorders.get(redis);
}

/** The metrics hash as families (one HGETALL). */
export async function readSharedMetrics(redis: Redis, prefix: string): Promise<MetricFamily[]> {
  return familiesFromHash(await redis.hgetall(metricsKey(prefix)));
}
