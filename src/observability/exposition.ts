/**
 * The Prometheus text exposition (format 0.0.4) of the metrics, and how they are kept in the shared Redis hash: fields
 * `<name>|<JSON array of label values in the definition's order>` for counters; for histograms
 * `<name>|<labels>|le=<upper bound>` (per-bucket counts, NOT cumulative: one field per observation) and
 * `<name>|<labels>|sum`. The exposition makes the buckets cumulative and adds +Inf and _count.
 */
import { type Labels, METRICS, type MetricDef } from './metric-names.js';

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
