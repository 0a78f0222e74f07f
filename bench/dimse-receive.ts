/**
 * C-STORE into ctgate's DIMSE receiver against DCMTK's plain storescp, in the same run: a 512×512×N synthetic
 * chest CT (the project's phantom, uncompressed Explicit VR Little Endian, one file per slice in a temp folder) sent
 * by DCMTK's storescu in one association, rounds alternating which receiver goes first.
 *
 * - ctgate: `startDimseReceiver` in this process, as `ctgate dicom receive` runs it: the gate checks the A-ASSOCIATE-RQ
 *   (Called/Calling AE, address), hands the association to a new `storescp -id` over its Unix socket and relays it;
 *   the study index rescans after the association (and every 2 s meanwhile).
 * - baseline: `storescp` alone, listening on its own port, writing into a temp folder with the same storage options
 *   (-su per-study folders, -fe .dcm, -pdu 131072): what the gate, the per-association start and the index cost.
 *
 * Timed: storescu's start to its exit (every C-STORE response received). For ctgate also the time from that exit
 * until its study index lists every instance (indexed) and the study is stable-ready (no arrival for
 * CTGATE_DIMSE_STABLE_S, default 1 s here, and no file unreadable). A fresh folder (and receiver) for each round.
 * The timed rounds run storescu and the plain storescp with TCP_NODELAY=1 (see dcmtkEnv); one more round each with
 * DCMTK's defaults (Nagle on) shows what a sender that keeps Nagle on sees (--skip-nagle-round to leave it out).
 *
 * Run: node --import tsx bench/dimse-receive.ts [--rounds 3] [--slices 300] [--size 512] [--stable-s 1] [--skip-nagle-round]
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { freePort } from '../src/cli/local-peers/orthanc.js';
import { loadConfig } from '../src/config/index.js';
import { type DimseReceiver, startDimseReceiver } from '../src/dimse-receive/receiver.js';
import { createLogger } from '../src/observability/log.js';
import { writeCtSeries, writeSeriesToDir } from '../src/synthetic/dicom-writer.js';
import { generateChestCt } from '../src/synthetic/phantom.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    slices: { type: 'string', default: '300' },
    size: { type: 'string', default: '512' },
    'stable-s': { type: 'string', default: '1' },
    'skip-nagle-round': { type: 'boolean', default: false },
  },
});
const rounds = Number(values.rounds);
const nz = Number(values.slices);
const nxy = Number(values.size);
const stableS = Number(values['stable-s']);
if (!(rounds >= 1 && nz >= 1 && nxy >= 16 && stableS >= 1)) throw new Error('--rounds ≥ 1, --slices ≥ 1, --size ≥ 16, --stable-s ≥ 1');

const CALLING_AE = 'BENCH';
const PDU = '131072';
const work = mkdtempSync(join(tmpdir(), 'ctgate-bench-dimse-'));
const sec = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Files under `dir` (one level of study folders, as -su writes them). */
function filesUnder(dir: string): number {
  let n = 0;
  for (const d of readdirSync(dir, { withFileTypes: true })) {
    if (d.isDirectory()) n += readdirSync(join(dir, d.name)).filter((f) => f.endsWith('.dcm')).length;
  }
  return n;
}

async function listening(port: number, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port}`);
    await sleep(50);
  }
}

/**
 * The environment of the DCMTK programs that hold a TCP socket (storescu, the plain storescp). DCMTK 3.6.7 as
 * Debian builds it leaves Nagle's algorithm on unless TCP_NODELAY=1 is set; with it on at both ends each C-STORE
 * waits out delayed ACKs (~90 ms per instance on loopback here, whatever the size). ctgate's gate sets TCP_NODELAY
 * on its side itself (its storescp speaks over a Unix socket), so the fair baseline is storescp with TCP_NODELAY=1.
 */
const dcmtkEnv = (nodelay: boolean): NodeJS.ProcessEnv => {
  const env = { ...process.env };
  if (nodelay) env.TCP_NODELAY = '1';
  else delete env.TCP_NODELAY;
  return env;
};

/** storescu of `files` in one association; the time until it exited. Throws unless it exited 0 (every file sent). */
async function send(port: number, calledAe: string, files: string[], nodelay: boolean): Promise<number> {
  const t = performance.now();
  const args = ['-aet', CALLING_AE, '-aec', calledAe, '-to', '30', '-ta', '30', '-td', '60', '127.0.0.1', String(port), ...files];
  const child = spawn('storescu', args, { env: dcmtkEnv(nodelay), stdio: ['ignore', 'ignore', 'pipe'] });
  let out = '';
  child.stderr.on('data', (d) => {
    out = (out + d).slice(-4000);
  });
  const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  const ms = performance.now() - t;
  if (code !== 0) throw new Error(`storescu to ${calledAe} exited ${code ?? signal}: ${out.trim().split('\n').slice(-3).join(' | ')}`);
  return ms;
}

interface CtgateRound {
  ms: number;
  indexedMs: number;
  stableMs: number;
}

/** One round into ctgate: a fresh receive folder and receiver (its start not timed). */
async function ctgateRound(files: string[], studyInstanceUid: string, nodelay = true): Promise<CtgateRound> {
  const dir = join(work, 'ctgate');
  rmSync(dir, { recursive: true, force: true });
  const config = loadConfig({
    CTGATE_DIMSE_LISTEN_PORT: '0',
    CTGATE_DIMSE_AE_TITLE: 'CTGATE',
    CTGATE_DIMSE_ALLOWED_CALLERS: `${CALLING_AE}@127.0.0.1`,
    CTGATE_DIMSE_RECEIVE_DIR: dir,
    CTGATE_DIMSE_STABLE_S: String(stableS),
  }).dimseReceive;
  if (!config) throw new Error('no receiver configuration');
  const receiver: DimseReceiver = await startDimseReceiver(config, createLogger('warn'));
  let round: CtgateRound;
  try {
    const ms = await send(receiver.port, 'CTGATE', files, nodelay);
    const end = performance.now();
    let indexedMs = 0;
    for (;;) {
      const [study] = receiver.index.findStudies({ studyInstanceUid });
      if (study && study.instances === files.length) {
        if (!indexedMs) indexedMs = performance.now() - end;
        if (study.stable) {
          round = { ms, indexedMs, stableMs: performance.now() - end };
          break;
        }
      }
      if (performance.now() - end > 120_000) throw new Error(`ctgate's index did not show the study stable within 120 s (${study?.instances ?? 0} instances)`);
      await sleep(10);
    }
  } finally {
    await receiver.stop();
  }
  const got = filesUnder(receiver.index.studiesDir);
  rmSync(dir, { recursive: true, force: true });
  if (got !== files.length) throw new Error(`ctgate's folder holds ${got} files, ${files.length} sent`);
  return round;
}

/** One round into a plain storescp of its own (started and stopped outside the timing). */
async function storescpRound(files: string[], nodelay = true): Promise<number> {
  const dir = join(work, 'storescp');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const scp = spawn('storescp', ['-aet', 'STORESCP', '-od', dir, '-su', 'st', '-fe', '.dcm', '-dhl', '-pdu', PDU, String(port)], {
    env: dcmtkEnv(nodelay),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  scp.stderr.on('data', (d) => {
    err = (err + d).slice(-2000);
  });
  let ms: number;
  try {
    await listening(port);
    ms = await send(port, 'STORESCP', files, nodelay);
  } finally {
    if (scp.exitCode === null) {
      scp.kill('SIGTERM');
      await once(scp, 'exit');
    }
  }
  const got = filesUnder(dir);
  rmSync(dir, { recursive: true, force: true });
  if (got !== files.length) throw new Error(`storescp's folder holds ${got} files, ${files.length} sent ${err}`);
  return ms;
}

try {
  process.stdout.write(`bench/dimse-receive: generating a ${nxy}×${nxy}×${nz} synthetic chest CT (phantom) … `);
  let t = performance.now();
  const phantom = generateChestCt({ seed: 19, kind: 'covid', size: [nxy, nxy, nz], spacing: [358 / nxy, 358 / nxy, 1] });
  const series = writeCtSeries(phantom.volume, { seed: 19, accessionNumber: 'BENCH-DIMSE', seriesDescription: 'bench dimse-receive' });
  const files = await writeSeriesToDir(join(work, 'source'), series);
  const bytes = files.reduce((s, f) => s + statSync(f).size, 0);
  const mb = bytes / 1e6;
  process.stdout.write(`${files.length} files, ${mb.toFixed(1)} MB, in ${sec(performance.now() - t)}\n`);
  console.log(`  load average ${loadavg()[0]?.toFixed(2)} on this machine (other work shares it: figures are noisy)`);

  process.stdout.write('  warm-up (30 instances into each) … ');
  t = performance.now();
  const warm = files.slice(0, Math.min(30, files.length));
  await storescpRound(warm);
  await ctgateRound(warm, series.studyInstanceUid);
  process.stdout.write(`${sec(performance.now() - t)}\n`);

  const c: CtgateRound[] = [];
  const s: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? (['ctgate', 'storescp'] as const) : (['storescp', 'ctgate'] as const);
    for (const side of order) {
      process.stdout.write(`  round ${r + 1}/${rounds}: ${side.padEnd(8)} … `);
      if (side === 'ctgate') {
        const x = await ctgateRound(files, series.studyInstanceUid);
        c.push(x);
        process.stdout.write(`${sec(x.ms)}  (index: every instance +${sec(x.indexedMs)}, stable +${sec(x.stableMs)})\n`);
      } else {
        const ms = await storescpRound(files);
        s.push(ms);
        process.stdout.write(`${sec(ms)}\n`);
      }
    }
  }
  let nagle: { storescp: number; ctgate: number } | undefined;
  if (!values['skip-nagle-round']) {
    process.stdout.write('  DCMTK defaults (Nagle on in storescu and storescp): storescp … ');
    const storescp = await storescpRound(files, false);
    process.stdout.write(`${sec(storescp)}; ctgate … `);
    const ctgate = (await ctgateRound(files, series.studyInstanceUid, false)).ms;
    process.stdout.write(`${sec(ctgate)}\n`);
    nagle = { storescp, ctgate };
  }

  const rate = (ms: number) => `${(files.length / (ms / 1000)).toFixed(1).padStart(6)} instances/s  ${(mb / (ms / 1000)).toFixed(1).padStart(6)} MB/s`;
  const short = (ms: number) => `${(files.length / (ms / 1000)).toFixed(1)} instances/s, ${(mb / (ms / 1000)).toFixed(1)} MB/s`;
  const cm = median(c.map((x) => x.ms));
  const sm = median(s);
  console.log(
    `\n${files.length} CT instances of ${nxy}×${nxy} (${mb.toFixed(1)} MB, uncompressed), storescu → receiver on loopback, one association, median of ${rounds} alternating rounds (MB = 10^6 bytes):`,
  );
  console.log(`  DCMTK storescp (plain, own port)        ${sec(sm).padStart(8)}  ${rate(sm)}   baseline`);
  console.log(`  ctgate (gate → storescp -id, + index)   ${sec(cm).padStart(8)}  ${rate(cm)}  = ${(sm / cm).toFixed(2)}× storescp's rate`);
  console.log(
    `  ctgate's study index after the last response: every instance indexed in ${sec(median(c.map((x) => x.indexedMs)))}, stable-ready in ${sec(median(c.map((x) => x.stableMs)))} (CTGATE_DIMSE_STABLE_S=${stableS})`,
  );
  console.log(
    `  from storescu's start to stable-ready in ctgate: ${sec(median(c.map((x) => x.ms + x.stableMs)))}; every round: storescp ${s.map((x) => sec(x)).join(', ')}; ctgate ${c.map((x) => sec(x.ms)).join(', ')}`,
  );
  if (nagle) {
    console.log(
      `  with DCMTK's defaults (sender and plain storescp keep Nagle on; one round): storescp ${sec(nagle.storescp)} (${short(nagle.storescp)}), ctgate ${sec(nagle.ctgate)} (${short(nagle.ctgate)}); ctgate's gate turns Nagle off on its side`,
    );
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
