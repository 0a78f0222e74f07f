/**
 * Recording metrics: each process keeps its increments in memory and adds them to one Redis hash,
 * `<prefix>:metrics`, about once a second (one MULTI of HINCRBY/HINCRBYFLOAT per flush, never a round trip per event).
 * A gateway's GET /metrics reads that hash (plus the queue's job counts) at scrape time, so one scrape shows the whole
 * site however many gateway and worker processes it runs. Counters only grow; ctgate never resets them (delete the hash
 * to start over; Prometheus treats that as a counter reset).
 */
import type { Redis } from 'ioredis';
import { bucketFor, counterField, familiesFromHash, type MetricFamily, metricsKey } from './exposition.js';
import type { Labels, MetricDef } from './metric-names.js';

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
