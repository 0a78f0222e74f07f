/**
 * Sustained MLLP order intake: N concurrent senders, each sending one distinct chest-CT new order and waiting
 * for its ACK before the next (what an interface engine does per connection). Not a test: it prints figures
 * beside the goal (≥ 2,000 orders/s with ACK p99 ≤ 25 ms) and exits 0 on a miss; it exits 1 only when the
 * run is invalid (gateway did not start, or the queue does not hold exactly the orders that were ACKed AA).
 *
 *   node --import tsx bench/intake.ts [--connections 8] [--orders 10000] [--warmup 500] [--processes 1]
 *                                     [--mode process|inproc] [--log-level info] [--skip-baseline]
 *                                     [--profile DIR]   (V8 CPU profile of the gateway process, written on exit)
 *
 * --mode process (default) runs `node bin/ctgate.mjs serve` as a child process, as in production, so the load
 * generator does not share the gateway's event loop; its JSON log lines (one per order at info) are piped to
 * this process and scanned for warnings and errors. --mode inproc calls startGateway() in this process with a
 * logger that only counts warn/error events (no log I/O), so it shares one event loop with the load.
 *
 * Each ACK is written only after Redis confirmed the order, so two baselines run first on the same Redis:
 * the raw round trips the store makes per order (MGET; then a job-add Lua script and the record/marker
 * script, pipelined) over N ioredis connections, one order at a time each, and the store path itself
 * (the intake's ledger, RedisOrderLedger: BullMQ and its Lua on one shared connection, batched as the gateway does)
 * without MLLP or HL7. All keys live under a random prefix and are deleted at the end.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { type Gateway, startGateway } from '../src/cli/gateway.js';
import { loadConfig } from '../src/config/index.js';
import { jobIdFor } from '../src/domain/job.js';
import type { Order } from '../src/domain/order.js';
import type { AckCode } from '../src/hl7/ack.js';
import { encodeFrame, MllpDecoder } from '../src/hl7/mllp-framing.js';
import { createScreeningQueue } from '../src/jobs/queue.js';
import type { Logger } from '../src/observability/log.js';
import { evaluateMessage } from '../src/orders/evaluate.js';
import { messageKeyFor } from '../src/orders/ledger.js';
import { loadMappings } from '../src/orders/mappings.js';
import { RedisOrderLedger } from '../src/orders/redis-ledger.js';
import type { OrderRecord } from '../src/orders/store.js';
import { connectRedis, waitReady } from '../src/redis/connection.js';

const GOAL_RATE = 2000;
const GOAL_P99_MS = 25;

const { values: args } = parseArgs({
  options: {
    connections: { type: 'string', default: '8' },
    orders: { type: 'string', default: '10000' },
    warmup: { type: 'string', default: '500' },
    processes: { type: 'string', default: process.env.CTGATE_PROCESSES ?? '1' },
    mode: { type: 'string', default: 'process' },
    'log-level': { type: 'string', default: 'info' },
    'ack-timeout-ms': { type: 'string', default: '10000' },
    'skip-baseline': { type: 'boolean', default: false },
    /** Directory for a V8 CPU profile of the gateway child process (--mode process only). */
    profile: { type: 'string' },
  },
});

function intArg(raw: string | undefined, flag: string, min: number): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`${flag}: expected an integer ≥ ${min}, got ${raw}`);
  return n;
}

const CONNECTIONS = intArg(args.connections, '--connections', 1);
const ORDERS = intArg(args.orders, '--orders', 1);
const WARMUP = intArg(args.warmup, '--warmup', 0);
const ACK_TIMEOUT_MS = intArg(args['ack-timeout-ms'], '--ack-timeout-ms', 100);
const MODE = args.mode === 'inproc' ? 'inproc' : args.mode === 'process' ? 'process' : null;
if (!MODE) throw new Error(`--mode: expected process or inproc, got ${args.mode}`);
const LOG_LEVEL = args['log-level'] ?? 'info';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MAPPINGS_FILE = fileURLToPath(new URL('../mappings/orders.yaml', import.meta.url));
const REDIS_URL = process.env.CTGATE_REDIS_URL || 'redis://127.0.0.1:6379';
const PREFIX = `ctgate-bench-${randomBytes(4).toString('hex')}`;
const QUEUE_NAME = 'screening';
const RUN = randomBytes(3).toString('hex').toUpperCase();

let aborted = false;
process.on('SIGINT', () => {
  if (aborted) process.exit(130);
  aborted = true;
  console.log('\ninterrupted: stopping the load and cleaning up (Ctrl-C again to quit at once)');
});

// ---------------------------------------------------------------- helpers

const ms = (x: number) => x.toFixed(2);
const int = (x: number) => Math.round(x).toLocaleString('en-US');
const clock = () => new Date().toISOString().slice(11, 19);

interface Summary {
  n: number;
  mean: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

function summarize(values: Float64Array, n: number): Summary {
  const s = values.slice(0, n).sort();
  const rank = (q: number) => s[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))] ?? Number.NaN;
  let sum = 0;
  for (const v of s) sum += v;
  return { n, mean: sum / n, p50: rank(0.5), p95: rank(0.95), p99: rank(0.99), max: s[n - 1] ?? Number.NaN };
}

const pcts = (s: Summary) => `p50 ${ms(s.p50)}  p95 ${ms(s.p95)}  p99 ${ms(s.p99)}  max ${ms(s.max)} ms (mean ${ms(s.mean)})`;

/** Builds a valid chest-CT ORM^O01 new order, like orm() in test/helpers/hl7.ts, with its own MSH-10 and placer. */
function chestCtOrder(i: number): { controlId: string; placer: string; text: string } {
  const controlId = `BN${RUN}${i}`;
  const placer = `BP${RUN}-${i}`;
  const text = [
    `MSH|^~\\&|EPIC|GENHOSP|CTGATE|RADIOLOGY|20261127101500||ORM^O01^ORM_O01|${controlId}|P|2.5.1`,
    `PID|1||MRN${100000 + i}^^^GENHOSP^MR||TEST^PATIENT||19700101|M`,
    `ORC|NW|${placer}^EPIC|F-${placer}^RIS||SC||^^^20261127101000^^R||20261127101400|||77^ORDERING^OLIVIA`,
    `OBR|1|${placer}^EPIC|F-${placer}^RIS|71250^CT THORAX WO CONTRAST^C4|||20261127101000||||||||77^ORDERING^OLIVIA|||A-${placer}`,
  ].join('\r');
  return { controlId, placer, text };
}

/** MSA-1..3 of an ACK. */
function msaOf(ack: string): [string, string, string] {
  const line = ack.split('\r').find((l) => l.startsWith('MSA')) ?? '';
  const f = line.split('|');
  return [f[1] ?? '', f[2] ?? '', f[3] ?? ''];
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Fields 3 onward of /proc/PID/stat (state, ppid, …), or null when the process is gone. */
function procStat(pid: number): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** A process and its descendants: with --processes N the gateway is a supervisor and the work is in its children. */
function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const ppid = Number(procStat(Number(entry))?.[1]);
    if (!Number.isInteger(ppid)) continue;
    children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
  }
  const tree = [pid];
  for (let i = 0; i < tree.length; i++) tree.push(...(children.get(tree[i] as number) ?? []));
  return tree;
}

/** CPU seconds used so far by a process and its descendants, from /proc (utime + stime, in clock ticks of 1/100 s). */
function procCpuSeconds(pid: number): number {
  let sum = 0;
  for (const p of processTree(pid)) {
    const f = procStat(p);
    if (f) sum += (Number(f[11]) + Number(f[12])) / 100;
    else if (p === pid) return Number.NaN;
  }
  return sum;
}

/** Peak RSS of a process and its descendants, summed. */
function procPeakRssMb(pid: number): number {
  let sum = 0;
  for (const p of processTree(pid)) {
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
      if (m) sum += Number(m[1]) / 1024;
    } catch {
      if (p === pid) return Number.NaN;
    }
  }
  return sum;
}

async function redisCpuSeconds(r: Redis): Promise<number> {
  const info = await r.info('cpu');
  const get = (k: string) => Number(new RegExp(`^${k}:([0-9.]+)`, 'm').exec(info)?.[1] ?? Number.NaN);
  return get('used_cpu_user') + get('used_cpu_sys');
}

/** Busy and total CPU seconds of the whole machine (all cores), to see what other work took. */
function machineCpu(): { busy: number; total: number } {
  let busy = 0;
  let total = 0;
  for (const c of os.cpus()) {
    const t = c.times.user + c.times.nice + c.times.sys + c.times.irq + c.times.idle;
    total += t;
    busy += t - c.times.idle;
  }
  return { busy: busy / 1000, total: total / 1000 };
}

interface CpuMark {
  self: NodeJS.CpuUsage;
  gateway: number;
  redis: number;
  machine: { busy: number; total: number };
  at: number;
}

async function cpuMark(admin: Redis, gatewayPid: number | null): Promise<CpuMark> {
  return {
    self: process.cpuUsage(),
    gateway: gatewayPid === null ? Number.NaN : procCpuSeconds(gatewayPid),
    redis: await redisCpuSeconds(admin).catch(() => Number.NaN),
    machine: machineCpu(),
    at: performance.now(),
  };
}

async function deleteKeys(r: Redis, prefix: string): Promise<number> {
  let cursor = '0';
  let deleted = 0;
  do {
    const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) deleted += await r.del(...keys);
  } while (cursor !== '0');
  return deleted;
}

/** Runs `count` iterations of `step` over `workers` concurrent loops; returns per-iteration latency (ms). */
async function closedLoop(
  workers: number,
  count: number,
  step: (worker: number, i: number) => Promise<void>,
): Promise<{ lat: Float64Array; n: number; seconds: number }> {
  const lat = new Float64Array(count);
  let next = 0;
  let n = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      while (!aborted) {
        const i = next++;
        if (i >= count) return;
        const s = performance.now();
        await step(w, i);
        lat[n++] = performance.now() - s;
      }
    }),
  );
  return { lat, n, seconds: (performance.now() - t0) / 1000 };
}

// ---------------------------------------------------------------- a realistic order payload

const mappings = loadMappings(MAPPINGS_FILE);
const sampleEval = evaluateMessage(chestCtOrder(0).text, mappings);
if (sampleEval.kind !== 'orders' || !sampleEval.orders[0]?.chestCt.chestCt) throw new Error('the bench order does not evaluate to a chest-CT order');
const sampleOrder: Order = sampleEval.orders[0].order;

function orderFor(i: number): Order {
  const o = chestCtOrder(i);
  return { ...sampleOrder, placerOrderNumber: o.placer, message: { ...sampleOrder.message, controlId: o.controlId } };
}

function recordFor(jobId: string, order: Order, at: string): OrderRecord {
  return {
    jobId,
    status: 'queued',
    order,
    createdAt: at,
    updatedAt: at,
    history: [{ at, control: 'NW', controlId: order.message.controlId, note: 'created' }],
  };
}

// ---------------------------------------------------------------- baselines

/** A stand-in for BullMQ's addStandardJob: one Lua call that allocates an id, writes the job hash, pushes the id. */
const ADD_LUA = `local id = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2] .. id, 'name', 'screen', 'data', ARGV[1], 'timestamp', ARGV[2], 'opts', ARGV[3])
redis.call('LPUSH', KEYS[3], id)
return id`;

/** A stand-in for the intake's record/marker script: both SETs only if the job exists. */
const RECORD_LUA = `if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[4])
return 1`;

interface BaselineResult extends Summary {
  rate: number;
  /** CPU ms this process spent per order (the client side: ioredis, and BullMQ for the store baseline). */
  cpuMsPerOrder: number;
}

function cpuMsSince(start: NodeJS.CpuUsage, n: number): number {
  const d = process.cpuUsage(start);
  return (d.user + d.system) / 1000 / Math.max(1, n);
}

async function rawRedisBaseline(): Promise<BaselineResult> {
  const p = `${PREFIX}:baseline-raw`;
  const conns = await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      const r = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
      await r.ping();
      return r;
    }),
  );
  try {
    const first = conns[0] as Redis;
    const sha = (await first.script('LOAD', ADD_LUA)) as string;
    const recordSha = (await first.script('LOAD', RECORD_LUA)) as string;
    const opts = JSON.stringify({ attempts: 5, backoff: { type: 'exponential', delay: 5000 } });
    const dayTtl = 86_400;
    const cpu0 = process.cpuUsage();
    const run = await closedLoop(CONNECTIONS, ORDERS, async (w, i) => {
      const r = conns[w] as Redis;
      const order = orderFor(i);
      const at = new Date().toISOString();
      await r.mget(`${p}:seen:${i}`, `${p}:order:${i}`);
      const res = await r
        .pipeline()
        .evalsha(
          sha,
          3,
          `${p}:id`,
          `${p}:job:`,
          `${p}:wait`,
          JSON.stringify({ order, receivedAt: at, messageControlId: order.message.controlId }),
          String(Date.now()),
          opts,
        )
        .evalsha(
          recordSha,
          3,
          `${p}:id`,
          `${p}:order:${i}`,
          `${p}:seen:${i}`,
          JSON.stringify(recordFor(`j${i}`, order, at)),
          JSON.stringify({ code: 'AA', text: 'order queued' }),
          90 * dayTtl,
          30 * dayTtl,
        )
        .exec();
      if (!res || res.some(([e]) => e) || res[1]?.[1] !== 1) throw new Error('job-add and record scripts failed');
    });
    return { ...summarize(run.lat, run.n), rate: run.n / run.seconds, cpuMsPerOrder: cpuMsSince(cpu0, run.n) };
  } finally {
    for (const r of conns) r.disconnect();
  }
}

async function storeBaseline(): Promise<BaselineResult> {
  const p = `${PREFIX}:baseline-store`;
  const redis = connectRedis(REDIS_URL, 2000);
  redis.on('error', () => {});
  if (!(await waitReady(redis, 3000))) throw new Error('store baseline: Redis not ready');
  const queue = createScreeningQueue(redis, QUEUE_NAME, p);
  const ledger = new RedisOrderLedger(redis, queue, p, { dedupeDays: 30, retentionDays: 90 });
  try {
    const cpu0 = process.cpuUsage();
    const run = await closedLoop(CONNECTIONS, ORDERS, async (_w, i) => {
      const order = orderFor(i);
      const at = new Date().toISOString();
      const messageKey = messageKeyFor('EPIC', 'GENHOSP', order.message.controlId);
      const jobId = jobIdFor(order.sender, order.placerOrderNumber);
      const found = await ledger.read({ messageKey, orders: [{ jobId, jobState: false }] });
      if (found.seen) throw new Error('unexpected resend');
      if (found.records.size > 0) throw new Error('unexpected duplicate');
      const marker: { code: AckCode; text: string } = { code: 'AA', text: 'order queued' };
      const data = { order, receivedAt: at, messageControlId: order.message.controlId };
      await ledger.record({ kind: 'orders', messageKey, marker, newJobs: [{ jobId, data }], jobChanges: [], records: [recordFor(jobId, order, at)] });
    });
    return { ...summarize(run.lat, run.n), rate: run.n / run.seconds, cpuMsPerOrder: cpuMsSince(cpu0, run.n) };
  } finally {
    await queue.close().catch(() => {});
    redis.disconnect();
  }
}

// ---------------------------------------------------------------- the gateway under test

interface LogTally {
  lines: number;
  byEvent: Map<string, number>;
  samples: string[];
}

const logTally: LogTally = { lines: 0, byEvent: new Map(), samples: [] };

function tallyWarn(level: string, event: string, fields: unknown): void {
  const key = `${level} ${event}`;
  logTally.byEvent.set(key, (logTally.byEvent.get(key) ?? 0) + 1);
  if (logTally.samples.length < 5) logTally.samples.push(`${key} ${JSON.stringify(fields).slice(0, 300)}`);
}

const countingLogger: Logger = {
  debug() {},
  info() {},
  warn: (e, f) => tallyWarn('warn', e, f),
  error: (e, f) => tallyWarn('error', e, f),
};

interface RunningGateway {
  port: number;
  pid: number | null;
  describe: string;
  stop(): Promise<void>;
}

function gatewayEnv(mllpPort: number, httpPort: number): Record<string, string> {
  return {
    CTGATE_REDIS_URL: REDIS_URL,
    CTGATE_MLLP_PORT: String(mllpPort),
    CTGATE_HTTP_PORT: String(httpPort),
    CTGATE_API_TOKEN: 'bench-token-0123456789',
    CTGATE_REDIS_PREFIX: PREFIX,
    CTGATE_QUEUE_NAME: QUEUE_NAME,
    CTGATE_MAPPINGS_FILE: MAPPINGS_FILE,
    CTGATE_LOG_LEVEL: LOG_LEVEL,
    CTGATE_PROCESSES: String(args.processes),
    // Runs against whatever Redis is there, and prints its persistence settings beside the figures.
    CTGATE_REDIS_REQUIRE_AOF: process.env.CTGATE_REDIS_REQUIRE_AOF ?? 'false',
  };
}

async function startInProcess(): Promise<RunningGateway> {
  const gw: Gateway = await startGateway(loadConfig({ ...process.env, ...gatewayEnv(0, 0) }), countingLogger);
  return {
    port: gw.mllp.port,
    pid: null,
    describe: 'in-process startGateway() sharing this event loop with the load generator; warn/error events counted, no log output',
    stop: () => gw.stop(),
  };
}

async function startChild(): Promise<RunningGateway> {
  const port = await freePort();
  const httpPort = await freePort();
  const nodeArgs = args.profile ? ['--cpu-prof', `--cpu-prof-dir=${args.profile}`] : [];
  const child: ChildProcess = spawn(process.execPath, [...nodeArgs, 'bin/ctgate.mjs', 'serve'], {
    cwd: ROOT,
    env: { ...process.env, ...gatewayEnv(port, httpPort) },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const tail: string[] = [];
  let exited: number | null = null;
  child.on('exit', (code) => {
    exited = code ?? -1;
  });
  let partial = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      logTally.lines++;
      if (line.includes('"level":"warn"') || line.includes('"level":"error"') || !line.startsWith('{')) {
        tail.push(line);
        if (tail.length > 20) tail.shift();
        try {
          const rec = JSON.parse(line) as { level: string; event: string };
          tallyWarn(rec.level, rec.event, rec);
        } catch {
          tallyWarn('stderr', 'non-json', line);
        }
      }
    }
  });
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited !== null) throw new Error(`gateway exited with code ${exited} before listening:\n${tail.join('\n')}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`gateway did not listen on ${port} within 30 s:\n${tail.join('\n')}`);
    }
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    port,
    pid: child.pid ?? null,
    describe: `separate process: node bin/ctgate.mjs serve (pid ${child.pid}), CTGATE_LOG_LEVEL=${LOG_LEVEL}, its JSON log lines piped to this process`,
    stop: async () => {
      if (exited !== null) return;
      const done = once(child, 'exit');
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await done;
      clearTimeout(t);
    },
  };
}

/** One MLLP sender connection: one frame out, one ACK back. */
class Sender {
  private decoder = new MllpDecoder(1 << 20);
  private waiter: { resolve: (ack: string) => void; reject: (e: Error) => void; timer: NodeJS.Timeout } | null = null;

  private constructor(private readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      for (const ev of this.decoder.push(chunk)) {
        if (ev.type !== 'message') continue;
        const w = this.waiter;
        this.waiter = null;
        if (w) {
          clearTimeout(w.timer);
          w.resolve(ev.data.toString('utf8'));
        }
      }
    });
    const fail = (why: string) => {
      const w = this.waiter;
      this.waiter = null;
      if (w) {
        clearTimeout(w.timer);
        w.reject(new Error(why));
      }
    };
    socket.on('close', () => fail('connection closed before the ACK'));
    socket.on('error', (e) => fail(`socket error: ${e.message}`));
  }

  static open(port: number): Promise<Sender> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.off('error', reject);
        resolve(new Sender(s));
      });
      s.once('error', reject);
    });
  }

  request(frame: Buffer, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new Error(`no ACK within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = { resolve, reject, timer };
      this.socket.write(frame);
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

interface Phase {
  name: string;
  from: number;
  to: number;
  next: number;
  done: number;
  aa: number;
  errors: number;
  lat: Float64Array;
  /** When each ACK arrived, in ms since the phase began (to place outliers in time). */
  at: Float64Array;
  n: number;
  start: number;
  end: number;
}

const errorSamples = new Map<string, number>();
function noteError(kind: string): void {
  errorSamples.set(kind, (errorSamples.get(kind) ?? 0) + 1);
}

async function runPhase(name: string, from: number, to: number, frames: Buffer[], controlIds: string[], senders: Sender[], port: number): Promise<Phase> {
  const count = to - from;
  const ph: Phase = {
    name,
    from,
    to,
    next: from,
    done: 0,
    aa: 0,
    errors: 0,
    lat: new Float64Array(count),
    at: new Float64Array(count),
    n: 0,
    start: performance.now(),
    end: 0,
  };
  let lastDone = 0;
  let lastAt = ph.start;
  const progress = setInterval(() => {
    const now = performance.now();
    const rate = ((ph.done - lastDone) * 1000) / (now - lastAt);
    const avg = (ph.done * 1000) / (now - ph.start);
    console.log(
      `  [${clock()}] ${name}: ${int(ph.done)}/${int(count)} ACKs, ${int(rate)}/s over the last ${((now - lastAt) / 1000).toFixed(1)} s, ${int(avg)}/s average, errors ${ph.errors}`,
    );
    lastDone = ph.done;
    lastAt = now;
  }, 2000);
  try {
    await Promise.all(
      senders.map(async (_, w) => {
        while (!aborted) {
          const i = ph.next++;
          if (i >= to) return;
          const t0 = performance.now();
          let ack: string;
          try {
            ack = await (senders[w] as Sender).request(frames[i] as Buffer, ACK_TIMEOUT_MS);
          } catch (e) {
            ph.errors++;
            ph.done++;
            noteError((e as Error).message);
            (senders[w] as Sender).close();
            senders[w] = await Sender.open(port);
            continue;
          }
          const t1 = performance.now();
          ph.lat[ph.n] = t1 - t0;
          ph.at[ph.n] = t1 - ph.start;
          ph.n++;
          ph.done++;
          const [code, ackedId, text] = msaOf(ack);
          if (code === 'AA' && ackedId === controlIds[i]) ph.aa++;
          else {
            ph.errors++;
            noteError(code === 'AA' ? `AA for the wrong message (MSA-2 ${ackedId}, sent ${controlIds[i]})` : `MSA-1 ${code}: ${text}`);
          }
        }
      }),
    );
  } finally {
    clearInterval(progress);
    ph.end = performance.now();
  }
  return ph;
}

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  const admin = new Redis(REDIS_URL, { maxRetriesPerRequest: 1, connectTimeout: 2000, retryStrategy: () => null });
  try {
    await admin.ping();
  } catch (e) {
    console.error(`Redis is not answering at ${REDIS_URL}: ${(e as Error).message}`);
    admin.disconnect();
    return 1;
  }
  const version = /redis_version:(\S+)/.exec(await admin.info('server'))?.[1] ?? '?';
  const persistence = await Promise.all([admin.config('GET', 'appendonly'), admin.config('GET', 'save')])
    .then(([a, s]) => `appendonly=${(a as string[])[1]}, save="${(s as string[])[1]}"`)
    .catch(() => 'persistence settings unknown');
  const cpus = os.cpus();
  console.log(`ctgate intake benchmark — ${new Date().toISOString()}`);
  console.log(
    `machine: ${cpus.length} x ${cpus[0]?.model ?? '?'}, node ${process.version}, load average ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  console.log(`redis: ${version} at ${REDIS_URL} (${persistence}); keys under ${PREFIX}:*`);
  console.log(`load: ${CONNECTIONS} MLLP connections, each sends one order and waits for its ACK; ${int(WARMUP)} warm-up + ${int(ORDERS)} measured orders`);
  console.log(`goal: ≥ ${int(GOAL_RATE)} orders/s with ACK p99 ≤ ${GOAL_P99_MS} ms`);

  let gateway: RunningGateway | null = null;
  let exitCode = 0;
  const senders: Sender[] = [];
  try {
    let raw: BaselineResult | null = null;
    let store: BaselineResult | null = null;
    if (!args['skip-baseline']) {
      console.log(
        `\n[1/3] Redis baseline: ${CONNECTIONS} ioredis connections, each in turn per order: MGET, then EVALSHA (job-add Lua) + EVALSHA (records Lua) pipelined`,
      );
      raw = await rawRedisBaseline();
      console.log(
        `  ${int(raw.n)} order-equivalents in ${(raw.n / raw.rate).toFixed(2)} s: ${int(raw.rate)} orders/s = ${int(raw.rate * 2)} round trips/s; client CPU ${raw.cpuMsPerOrder.toFixed(3)} ms/order`,
      );
      console.log(`  per order (2 round trips): ${pcts(raw)}`);
      console.log(
        `\n[2/3] Store baseline: the intake's ledger (RedisOrderLedger: BullMQ + Lua) on one shared connection (as the gateway), ${CONNECTIONS} concurrent, no MLLP/HL7`,
      );
      store = await storeBaseline();
      console.log(
        `  ${int(store.n)} orders in ${(store.n / store.rate).toFixed(2)} s: ${int(store.rate)} orders/s; client CPU (ioredis + BullMQ) ${store.cpuMsPerOrder.toFixed(3)} ms/order`,
      );
      console.log(`  per order (MGET seen+order; job add + records script), round trips shared by concurrent orders: ${pcts(store)}`);
    }
    if (aborted) return 130;

    console.log(`\n[3/3] Gateway intake over MLLP`);
    gateway = MODE === 'inproc' ? await startInProcess() : await startChild();
    console.log(`  gateway: ${gateway.describe}; MLLP port ${gateway.port}`);
    const total = WARMUP + ORDERS;
    const frames: Buffer[] = [];
    const controlIds: string[] = [];
    for (let i = 0; i < total; i++) {
      const o = chestCtOrder(i);
      frames.push(encodeFrame(o.text));
      controlIds.push(o.controlId);
    }
    for (let c = 0; c < CONNECTIONS; c++) senders.push(await Sender.open(gateway.port));

    const warm = WARMUP > 0 ? await runPhase('warm-up', 0, WARMUP, frames, controlIds, senders, gateway.port) : null;
    if (warm) console.log(`  warm-up: ${warm.done} orders in ${((warm.end - warm.start) / 1000).toFixed(2)} s, errors ${warm.errors}`);
    if (aborted) return 130;
    const before = await cpuMark(admin, gateway.pid);
    const ph = await runPhase('measure', WARMUP, total, frames, controlIds, senders, gateway.port);
    const after = await cpuMark(admin, gateway.pid);
    const peakRss = gateway.pid === null ? Number.NaN : procPeakRssMb(gateway.pid);
    for (const s of senders) s.close();

    const seconds = (ph.end - ph.start) / 1000;
    const rate = ph.aa / seconds;
    const s = summarize(ph.lat, ph.n);
    let over25 = 0;
    let over100 = 0;
    let maxAt = 0;
    for (let k = 0; k < ph.n; k++) {
      const v = ph.lat[k] as number;
      if (v > 25) over25++;
      if (v > 100) over100++;
      if (v === s.max) maxAt = (ph.at[k] as number) / 1000;
    }
    const mark = (ok: boolean) => (ok ? 'PASS' : 'MISS');
    console.log(
      `\nresults (${MODE === 'process' ? 'gateway in its own process' : 'gateway in-process'}, ${CONNECTIONS} connections, ${int(ORDERS)} measured orders)`,
    );
    console.log(
      `  throughput: ${int(rate)} orders/s ACKed AA (${int(ph.aa)} in ${seconds.toFixed(2)} s)   goal ≥ ${int(GOAL_RATE)}/s: ${mark(rate >= GOAL_RATE)}`,
    );
    console.log(`  ACK latency: ${pcts(s)}   goal p99 ≤ ${GOAL_P99_MS} ms: ${mark(s.p99 <= GOAL_P99_MS)}`);
    console.log(`  slow ACKs: ${over25} over 25 ms, ${over100} over 100 ms; the slowest arrived ${maxAt.toFixed(1)} s into the run`);
    console.log(`  errors: ${ph.errors} (non-AA, wrong MSA-2, timeouts or dropped connections)${warm?.errors ? `; warm-up errors ${warm.errors}` : ''}`);
    for (const [kind, n] of errorSamples) console.log(`    ${n} x ${kind}`);

    const wall = (after.at - before.at) / 1000;
    const selfCpu = (after.self.user - before.self.user + after.self.system - before.self.system) / 1e6;
    const gwCpu = after.gateway - before.gateway;
    const redisCpu = after.redis - before.redis;
    const machineBusy = after.machine.busy - before.machine.busy;
    const cpuLine = (name: string, sec: number) =>
      Number.isNaN(sec) ? '' : `${name} ${sec.toFixed(2)} s (${int((sec / wall) * 100)}% of a core, ${((sec * 1000) / Math.max(1, ph.n)).toFixed(3)} ms/order)`;
    console.log(`  CPU over the ${wall.toFixed(2)} s measured window:`);
    const gwName = Number(args.processes) > 1 ? `gateway (supervisor + ${args.processes} workers)` : 'gateway';
    if (MODE === 'process') console.log(`    ${cpuLine(gwName, gwCpu)}${Number.isNaN(peakRss) ? '' : `, peak RSS ${peakRss.toFixed(0)} MB`}`);
    console.log(`    ${cpuLine(MODE === 'process' ? 'load generator' : 'gateway + load generator (one process)', selfCpu)}`);
    console.log(`    ${cpuLine('redis-server', redisCpu)}`);
    const known = (MODE === 'process' ? gwCpu : 0) + selfCpu + (Number.isNaN(redisCpu) ? 0 : redisCpu);
    console.log(
      `    whole machine busy ${machineBusy.toFixed(2)} of ${(wall * cpus.length).toFixed(2)} core-seconds (${int((machineBusy / (wall * cpus.length)) * 100)}%); other processes ≈ ${Math.max(0, machineBusy - known).toFixed(2)} s`,
    );
    if (MODE === 'process') console.log(`  gateway log: ${int(logTally.lines)} lines on stderr`);
    if (logTally.byEvent.size) {
      console.log('  gateway warn/error events:');
      for (const [k, n] of logTally.byEvent) console.log(`    ${n} x ${k}`);
      for (const line of logTally.samples) console.log(`    e.g. ${line}`);
    } else console.log('  gateway warn/error events: none');

    if (raw && store) {
      console.log('\nbudget (same Redis, same run; baselines are from this process before the gateway started)');
      console.log(
        `  raw Redis, 2 round trips per order: p50 ${ms(raw.p50)} ms = ${int((raw.p50 / s.p50) * 100)}% of the gateway's ACK p50 (${ms(s.p50)} ms); ceiling ${int(raw.rate)} orders/s over ${CONNECTIONS} connections`,
      );
      console.log(
        `  store path (ioredis + BullMQ, no HL7): p50 ${ms(store.p50)} ms = ${int((store.p50 / s.p50) * 100)}% of the ACK p50; ceiling ${int(store.rate)} orders/s`,
      );
      console.log(`  → MLLP + HL7 parse/evaluate + ACK building + logging account for roughly ${ms(Math.max(0, s.p50 - store.p50))} ms of the ACK p50`);
    }

    if (gateway) {
      await gateway.stop();
      gateway = null;
    }
    const counter = new Queue(QUEUE_NAME, { connection: admin, prefix: `${PREFIX}:bull` });
    counter.on('error', () => {});
    const counts = await counter.getJobCounts();
    await counter.close();
    const queued = Object.values(counts).reduce((a, b) => a + b, 0);
    const acked = (warm?.aa ?? 0) + ph.aa;
    const sent = (warm?.done ?? 0) + ph.done;
    const ok = queued === acked && acked === sent;
    console.log(
      `\nqueue check: ${int(queued)} jobs in ${PREFIX}:bull:${QUEUE_NAME} (${Object.entries(counts)
        .filter(([, n]) => n > 0)
        .map(([k, n]) => `${k} ${n}`)
        .join(', ')}); orders sent ${int(sent)}, ACKed AA ${int(acked)} → ${ok ? 'OK' : 'MISMATCH'}`,
    );
    if (queued !== acked) exitCode = 1;
    return exitCode;
  } finally {
    for (const s of senders) s.close();
    if (gateway) await gateway.stop().catch(() => {});
    const deleted = await deleteKeys(admin, PREFIX).catch((e: Error) => {
      console.error(`cleanup failed: ${e.message}`);
      return -1;
    });
    if (deleted >= 0) console.log(`cleanup: deleted ${int(deleted)} keys under ${PREFIX}:*`);
    admin.disconnect();
  }
}

process.exitCode = await main();
