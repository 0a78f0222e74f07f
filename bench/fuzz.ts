/**
 * HL7/MLLP fuzz bench: N seeded mutated cases (test/helpers/hl7-fuzz.ts) through (a) the in-process path the
 * listener uses (MLLP decoder, decodeMessageBytes, evaluateMessage, buildAck) and (b) a sample of them over a real
 * MLLP listener (the gateway, in process, on Redis at CTGATE_REDIS_URL or 127.0.0.1:6379). Each case must raise no
 * exception, be answered (ACK/NAK) or cleanly closed within the ACK timeout (else: a hang), and get the answer its
 * evaluation calls for; afterwards the listener must still accept a valid order, and memory must stay bounded.
 * Rates are printed beside a baseline measured in the same run: valid fixture messages through the same path.
 *
 *   node --import tsx --expose-gc bench/fuzz.ts [--cases 100000] [--seed 0x5eedf022] [--tcp-cases 5000] [--lanes 4]
 *                                               [--baseline 5000] [--ack-timeout-ms 8000] [--only INDEX]
 *
 * Exits 1 on a crash, a hang, a wrong answer or a listener that no longer answers; 0 otherwise.
 */
import { parseArgs } from 'node:util';
import type { Gateway } from '../src/cli/gateway.js';
import { loadMappings } from '../src/orders/mappings.js';
import { startTestGateway } from '../test/helpers/gateway.js';
import {
  baselineCase,
  baseSummaryOf,
  type FuzzCase,
  fuzzCase,
  loadFixtureMessages,
  newTally,
  probeValidOrder,
  runOverMllp,
  runPure,
  startWatchdog,
  type TcpTally,
} from '../test/helpers/hl7-fuzz.js';

const { values: args } = parseArgs({
  options: {
    cases: { type: 'string', default: '100000' },
    seed: { type: 'string', default: '0x5eedf022' },
    'tcp-cases': { type: 'string', default: '5000' },
    lanes: { type: 'string', default: '4' },
    baseline: { type: 'string', default: '5000' },
    'ack-timeout-ms': { type: 'string', default: '8000' },
    only: { type: 'string' },
  },
});

function intArg(raw: string | undefined, flag: string, min: number): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`${flag}: expected an integer ≥ ${min}, got ${raw}`);
  return n;
}

const CASES = intArg(args.cases, '--cases', 1);
const SEED = intArg(args.seed, '--seed', 0) >>> 0;
const TCP_CASES = Math.min(CASES, intArg(args['tcp-cases'], '--tcp-cases', 0));
const LANES = intArg(args.lanes, '--lanes', 1);
const BASELINE = intArg(args.baseline, '--baseline', 1);
const ACK_TIMEOUT_MS = intArg(args['ack-timeout-ms'], '--ack-timeout-ms', 100);
/** A case that holds the event loop longer than this blocks every connection: counted as a hang. */
const PURE_HANG_MS = 2000;
const MAX_BYTES = 4 * 1024 * 1024; // the gateway's default CTGATE_MLLP_MAX_MESSAGE_BYTES
const MIB = 1024 * 1024;

const mappings = loadMappings('mappings/orders.yaml');
const fixtures = loadFixtureMessages();
const gc = (globalThis as { gc?: () => void }).gc;
const heap = () => {
  gc?.();
  return process.memoryUsage().heapUsed;
};
let peakRss = 0;
const sampleRss = () => {
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
};

// Anything thrown outside a case's own try (the in-process gateway included) is a crash.
const escaped: string[] = [];
process.on('uncaughtException', (e) => escaped.push(`uncaught: ${e.stack ?? e.message}`));
process.on('unhandledRejection', (e) => escaped.push(`unhandled rejection: ${(e as Error)?.stack ?? String(e)}`));

if (args.only !== undefined) {
  const c = fuzzCase(SEED, intArg(args.only, '--only', 0), fixtures);
  console.log(`case ${c.index}: ${c.label}, preserves=${c.preserves}, ${c.writes.length} write(s) of ${c.writes.map((w) => w.length).join('+')} bytes`);
  console.log(JSON.stringify(Buffer.concat(c.writes).subarray(0, 2000).toString('latin1')));
  console.log(runPure(c, mappings, MAX_BYTES, baseSummaryOf(c, mappings)));
  process.exit(0);
}

// ---------------------------------------------------------------- (a) in process

interface PureTally {
  cases: number;
  messages: number;
  answers: Record<string, number>;
  crashes: string[];
  hangs: string[];
  problems: string[];
  labels: Map<string, number>;
  slowestMs: number;
  slowest: string;
  ms: number;
}

function runPurePhase(make: (i: number) => FuzzCase, n: number, checkPreserve: boolean, progress: boolean): PureTally {
  const t: PureTally = { cases: 0, messages: 0, answers: {}, crashes: [], hangs: [], problems: [], labels: new Map(), slowestMs: 0, slowest: '', ms: 0 };
  const dog = startWatchdog(30_000);
  const started = performance.now();
  for (let i = 0; i < n; i++) {
    dog.beat(i);
    const c = make(i);
    t.cases++;
    const top = c.label.split('+')[0] ?? c.label;
    t.labels.set(top, (t.labels.get(top) ?? 0) + 1);
    try {
      const r = runPure(c, mappings, MAX_BYTES, checkPreserve && c.preserves ? baseSummaryOf(c, mappings) : undefined);
      t.messages += r.messages;
      for (const a of r.answers) t.answers[a] = (t.answers[a] ?? 0) + 1;
      for (const p of r.problems) t.problems.push(`case ${i} (${c.label}): ${p}`);
      if (r.ms > t.slowestMs) [t.slowestMs, t.slowest] = [r.ms, `case ${i} (${c.label})`];
      if (r.ms > PURE_HANG_MS) t.hangs.push(`case ${i} (${c.label}): ${Math.round(r.ms)} ms`);
    } catch (e) {
      t.crashes.push(`case ${i} (${c.label}): ${(e as Error).stack?.split('\n').slice(0, 3).join(' ') ?? String(e)}`);
    }
    if (i % 1000 === 0) sampleRss();
    if (progress && i > 0 && i % 20_000 === 0) console.log(`  … ${i} cases, ${Math.round(performance.now() - started)} ms`);
  }
  t.ms = performance.now() - started;
  dog.stop();
  return t;
}

// ---------------------------------------------------------------- output

const rate = (n: number, ms: number) => Math.round((n / ms) * 1000).toLocaleString('en-US');
const dist = (a: Record<string, number>) =>
  Object.entries(a)
    .sort(([x], [y]) => x.localeCompare(y))
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
const list = (title: string, items: string[]) => {
  console.log(`  ${title}: ${items.length}`);
  for (const s of items.slice(0, 10)) console.log(`    ${s.slice(0, 400)}`);
  if (items.length > 10) console.log(`    … and ${items.length - 10} more`);
};

console.log(`HL7/MLLP fuzz bench — node ${process.version}, seed 0x${SEED.toString(16)}, ${CASES} cases, ${fixtures.length} fixture messages as bases`);
const heap0 = heap();

console.log('\n(a) in process: MLLP decoder → decodeMessageBytes → evaluateMessage → buildAck');
const pureBase = runPurePhase((i) => baselineCase(SEED, 10_000_000 + i, fixtures), BASELINE, false, false);
const pure = runPurePhase((i) => fuzzCase(SEED, i, fixtures), CASES, true, true);
const heap1 = heap();
console.log(
  `  baseline (valid fixture ORMs): ${rate(pureBase.cases, pureBase.ms)} cases/s (${pureBase.cases} in ${Math.round(pureBase.ms)} ms) — ${dist(pureBase.answers)}`,
);
console.log(
  `  fuzz:                          ${rate(pure.cases, pure.ms)} cases/s (${pure.cases} in ${Math.round(pure.ms)} ms, ${pure.messages} messages decoded)`,
);
console.log(`  answers: ${dist(pure.answers)}`);
console.log(`  slowest case: ${Math.round(pure.slowestMs)} ms, ${pure.slowest}`);
console.log(`  mutation kinds (first applied): ${pure.labels.size} — ${[...pure.labels].map(([k, v]) => `${k} ${v}`).join(', ')}`);
list('crashes (exception escaped)', [...pureBase.crashes, ...pure.crashes]);
list(`hangs (a case over ${PURE_HANG_MS} ms)`, [...pureBase.hangs, ...pure.hangs]);
list('wrong answers', [...pureBase.problems, ...pure.problems]);

// ---------------------------------------------------------------- (b) over MLLP

let gw: (Gateway & { cleanup(): Promise<void> }) | null = null;
let tcpBase: TcpTally = newTally();
let tcp: TcpTally = newTally();
let tcpBaseMs = 0;
let tcpMs = 0;
let probe = { code: '', msa2: '', text: '' };
let heap2 = heap1;
const stride = TCP_CASES > 0 ? Math.max(1, Math.floor(CASES / TCP_CASES)) : 0;
try {
  gw = await startTestGateway({ CTGATE_REDIS_TIMEOUT_MS: '2000', CTGATE_MLLP_MAX_MESSAGE_BYTES: String(MAX_BYTES) });
  const o = { port: gw.mllp.port, mappings, maxBytes: MAX_BYTES, ackTimeoutMs: ACK_TIMEOUT_MS, maybeSilentMs: 1500 };
  const baseCount = Math.min(BASELINE, Math.max(TCP_CASES, 500));
  console.log(`\n(b) over MLLP: in-process gateway on port ${gw.mllp.port}, ${LANES} connections, every ${stride}th case (${TCP_CASES} cases)`);
  let t0 = performance.now();
  tcpBase = await runOverMllp(
    Array.from({ length: baseCount }, (_, i) => baselineCase(SEED, 20_000_000 + i, fixtures)),
    LANES,
    o,
  );
  tcpBaseMs = performance.now() - t0;
  sampleRss();
  t0 = performance.now();
  const sample = function* () {
    for (let k = 0; k < TCP_CASES; k++) yield fuzzCase(SEED, k * stride, fixtures);
  };
  tcp = await runOverMllp(sample(), LANES, o);
  tcpMs = performance.now() - t0;
  sampleRss();
  probe = await probeValidOrder(gw.mllp.port, fixtures, `${SEED.toString(36)}`, ACK_TIMEOUT_MS);
  heap2 = heap();
  console.log(
    `  baseline (valid fixture ORMs): ${rate(tcpBase.cases, tcpBaseMs)} cases/s (${tcpBase.cases} in ${Math.round(tcpBaseMs)} ms) — ${dist(tcpBase.answers)}`,
  );
  console.log(
    `  fuzz:                          ${rate(tcp.cases, tcpMs)} cases/s (${tcp.cases} in ${Math.round(tcpMs)} ms, ${tcp.messages} messages seen by the server)`,
  );
  console.log(`  answers: ${dist(tcp.answers)} over ${tcp.connections} connections; slowest ACK ${Math.round(tcp.slowestMs)} ms`);
  list(`hangs (no ACK and no close within ${ACK_TIMEOUT_MS} ms)`, [...tcpBase.hangs, ...tcp.hangs]);
  list('wrong answers', [...tcpBase.problems, ...tcp.problems]);
  console.log(
    `  listener afterwards: a valid chest-CT order on a fresh connection → ${probe.code || 'no ACK'} ${probe.code === 'AA' ? '[OK]' : `[FAIL: ${probe.text}]`}`,
  );
} catch (e) {
  escaped.push(`MLLP phase failed: ${(e as Error).stack ?? String(e)}`);
} finally {
  await gw?.cleanup();
}

// ---------------------------------------------------------------- verdict

const growth = (heap2 - heap0) / MIB;
const memOk = growth < 128;
console.log(
  `\nmemory: heap ${(heap0 / MIB).toFixed(1)} → ${(heap1 / MIB).toFixed(1)} (after in-process) → ${(heap2 / MIB).toFixed(1)} MiB (after MLLP)${gc ? ' after GC' : ' (run with --expose-gc for figures after GC)'}, peak RSS ${(peakRss / MIB).toFixed(0)} MiB — ${memOk ? 'bounded' : 'GREW'}`,
);
list('exceptions escaping (process level)', escaped);
const crashes = pure.crashes.length + pureBase.crashes.length + escaped.length;
const hangs = pure.hangs.length + pureBase.hangs.length + tcp.hangs.length + tcpBase.hangs.length;
const wrong = pure.problems.length + pureBase.problems.length + tcp.problems.length + tcpBase.problems.length;
const listenerOk = TCP_CASES === 0 || probe.code === 'AA';
console.log(
  `\nverdict: ${pure.cases} cases in process + ${tcp.cases} over MLLP — crashes ${crashes}, hangs ${hangs}, wrong answers ${wrong}, listener ${listenerOk ? 'up' : 'DOWN'}, memory ${memOk ? 'bounded' : 'grew'}`,
);
const failed = crashes + hangs + wrong > 0 || !listenerOk || !memOk;
process.exit(failed ? 1 : 0);
