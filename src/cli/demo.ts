/**
 * `ctgate demo [--once] [--via-cstore]`: the whole flow on one machine, with real peers.
 *
 *   1. starts Orthanc (PACS, DICOMweb), Medplum's FHIR engine and python-hl7's MLLP server (the EMR);
 *   2. starts ctgate: the gateway (MLLP, HTTP page, DICOMweb proxy) and a worker (models);
 *   3. stores a synthetic positive and a synthetic negative chest CT in the PACS, and the real CT of
 *      ../shared/data (TotalSegmentator's example) when it is there;
 *   4. sends their ORM orders with mllp_send and shows the ACKs;
 *   5. waits for every job with a progress display, then prints where to look and a verdict per study.
 *
 * With --via-cstore (or CTGATE_DEMO_VIA_CSTORE=1) the gateway also runs ctgate's DIMSE receiver, Orthanc knows it as the
 * modality CTGATE, and after step 3 Orthanc sends every study to ctgate by C-STORE (after a C-ECHO); the demo prints
 * the associations, the instances received and the study index's view of each study. Which source the analysis then
 * reads is printed too: DICOMweb from the PACS unless this build has CTGATE_STUDY_SOURCE (received studies into jobs).
 *
 * Without --once everything keeps running until Ctrl-C. With --once it stops what it started and prints a JSON
 * summary as its last line; the exit code is 0 only when every study finished.
 *
 * However it ends (the end of --once, Ctrl-C, SIGTERM, an error) it removes the patient data it made: its work
 * folder (the orders it sent, the ORUs the EMR received), the PACS's storage, and every Redis key under its own
 * prefix (`ctgate-demo-<random>`, new each run; CTGATE_REDIS_PREFIX is not used, so a site's keys are never
 * touched). The FHIR peer keeps its chart in memory. Only a SIGKILL leaves them behind.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { configKeys, loadConfig } from '../config/index.js';
import type { DimseReceiver } from '../dimse-receive/receiver.js';
import { jobIdFor } from '../domain/job.js';
import { readNifti } from '../imaging/nifti.js';
import type { HuVolume } from '../imaging/volume.js';
import type { ScreeningResult } from '../jobs/screening.js';
import { createLogger, type Logger } from '../observability/log.js';
import { writeCtSeries } from '../synthetic/dicom-writer.js';
import { generateChestCt, type PhantomKind } from '../synthetic/phantom.js';
import { startGateway } from './gateway.js';
import { LocalFhirServer } from './local-peers/fhir.js';
import { freePort, LocalOrthanc } from './local-peers/orthanc.js';
import { type Receiver, running, startReceiver } from './local-peers/oru-receiver.js';

const execFileP = promisify(execFile);
const SENDER = { application: 'DEMO-EMR', facility: 'GENHOSP' };
/** ctgate's AE title and Orthanc's (the calling AE ctgate's receiver allows) in --via-cstore. */
const CTGATE_AE = 'CTGATE';
const ORTHANC_AE = 'ORTHANC';

interface DemoStudy {
  label: string;
  accession: string;
  placer: string;
  patient: { id: string; family: string; given: string; birthDate: string; sex: 'M' | 'F' };
  volume: HuVolume;
  seed: number;
}

export interface DemoSummary {
  studies: {
    accession: string;
    label: string;
    verdict: string | null;
    probability: number | null;
    diagnosticReport: string | null;
    segSeriesInstanceUid: string | null;
    oruAcked: boolean;
    state: string;
    reason?: string;
  }[];
  elapsedMs: number;
  /** With --via-cstore: what ctgate's DIMSE receiver got from Orthanc (counts and UIDs only, no PHI). */
  dimseReceive?: DimseReceiveSummary;
  /** What the demo removed when it stopped, so that none of its patient data outlives it (names only, no PHI). */
  cleanup: {
    /** The Redis key prefix it used (new each run); every key under it was deleted (SCAN + UNLINK). */
    redisPrefix: string;
    redisKeysDeleted: number;
    /** The folders it wrote to: its work folder (orders sent, ORUs received) and the PACS's storage. */
    dirs: string[];
    /** true when every folder is gone and the Redis keys were deleted. */
    removed: boolean;
    /** What could not be removed, and how to remove it by hand. */
    problems: string[];
  };
}

export interface DimseReceiveSummary {
  /** Orthanc's C-ECHO to ctgate's receiver succeeded. */
  echoOk: boolean;
  /** Associations ctgate's gate accepted and rejected (C-ECHO and C-STORE alike). */
  associationsAccepted: number;
  associationsRejected: number;
  /** Files the index quarantined (not CT, unreadable). */
  quarantined: number;
  studies: {
    accession: string;
    studyInstanceUid: string;
    /** Instances Orthanc sent (its C-STORE report), and those it could not. */
    sent: number;
    failed: number;
    /** Instances ctgate's study index lists for the study, and under which accession. */
    indexed: number;
    indexedAccession: string | null;
    /** The index called the study stable (nothing arrived for CTGATE_DIMSE_STABLE_S, no file unreadable). */
    stable: boolean;
    /** Milliseconds from the C-STORE request to Orthanc until the index called the study stable. */
    stableAfterMs: number | null;
  }[];
  /** Where the analysis read the images: 'dicomweb' (WADO-RS from the PACS) or 'received' (ctgate's receive folder). */
  analysisSource: 'dicomweb' | 'received';
}

/** The gateway's logger, counting the DIMSE receiver's association and quarantine events on the way. */
function countingDimse(base: Logger, c: { accepted: number; rejected: number; quarantined: number }): Logger {
  const tap = (event: string) => {
    if (event === 'dimse.association-accepted') c.accepted++;
    else if (event === 'dimse.association-rejected' || event === 'dimse.association-refused') c.rejected++;
    else if (event === 'dimse.quarantined') c.quarantined++;
  };
  return {
    debug: (e, f) => {
      tap(e);
      base.debug(e, f);
    },
    info: (e, f) => {
      tap(e);
      base.info(e, f);
    },
    warn: (e, f) => {
      tap(e);
      base.warn(e, f);
    },
    error: (e, f) => {
      tap(e);
      base.error(e, f);
    },
  };
}

/** A POST to the local Orthanc's REST API; the JSON answer, or an Error with Orthanc's status and message. */
async function orthancPost(url: string, body: string, timeoutMs = 120_000): Promise<unknown> {
  const res = await fetch(url, { method: 'POST', body, signal: AbortSignal.timeout(timeoutMs) });
  const text = await res.text();
  if (!res.ok) {
    let why = text.slice(0, 200);
    try {
      const j = JSON.parse(text) as { Message?: string; Details?: string };
      why = [j.Message, j.Details].filter(Boolean).join(': ') || why;
    } catch {}
    throw new Error(`Orthanc answered ${res.status}: ${why}`);
  }
  return text ? (JSON.parse(text) as unknown) : {};
}

/**
 * --via-cstore, after the studies are in the PACS: Orthanc C-ECHOes ctgate's receiver, then sends each study by
 * C-STORE (REST /modalities/CTGATE/store: one association per study, synchronous); then the receiver's study index
 * is watched until it lists every instance of each study and calls it stable. Prints what happened (UIDs, accession
 * numbers and counts only). The association counts and the analysis source are the caller's to fill in.
 */
async function pushToCtgate(
  orthancUrl: string,
  receiver: DimseReceiver,
  stored: { study: DemoStudy; studyInstanceUid: string; instances: number }[],
  out: (s?: string) => void,
  checkpoint: () => void,
): Promise<DimseReceiveSummary> {
  out(`\n3b. Orthanc sends the studies to ctgate by C-STORE (DIMSE), as a PACS or a scanner pushing images does`);
  const summary: DimseReceiveSummary = {
    echoOk: false,
    associationsAccepted: 0,
    associationsRejected: 0,
    quarantined: 0,
    studies: [],
    analysisSource: 'dicomweb',
  };
  const modality = `${orthancUrl}/modalities/${CTGATE_AE}`;
  const t0 = performance.now();
  try {
    await orthancPost(`${modality}/echo`, '{}', 30_000);
    summary.echoOk = true;
    out(`   C-ECHO ${ORTHANC_AE} → ${CTGATE_AE}: ok (${Math.round(performance.now() - t0)} ms)`);
  } catch (e) {
    out(`   C-ECHO ${ORTHANC_AE} → ${CTGATE_AE}: FAILED (${(e as Error).message})`);
  }
  const began = new Map<string, number>();
  // The index is watched while Orthanc sends (each study's time runs from its own C-STORE's start).
  let storing = true;
  const watch = (async () => {
    let deadline = Number.POSITIVE_INFINITY;
    for (;;) {
      try {
        checkpoint();
      } catch {
        return;
      }
      const now = performance.now();
      for (const e of summary.studies) {
        if (e.stable) continue;
        const [st] = receiver.index.findStudies({ studyInstanceUid: e.studyInstanceUid });
        if (!st) continue;
        e.indexed = st.instances;
        e.indexedAccession = st.accessionNumber ?? null;
        // sent is known once Orthanc's C-STORE call returned: not stable before that.
        if (e.sent > 0 && st.stable && st.instances >= e.sent) {
          e.stable = true;
          e.stableAfterMs = Math.round(now - (began.get(e.studyInstanceUid) ?? now));
        }
      }
      if (!storing) {
        if (deadline === Number.POSITIVE_INFINITY) deadline = Date.now() + 60_000;
        if (summary.studies.every((e) => e.stable || e.sent === 0) || Date.now() > deadline) return;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  for (const x of stored) {
    checkpoint();
    const entry: DimseReceiveSummary['studies'][number] = {
      accession: x.study.accession,
      studyInstanceUid: x.studyInstanceUid,
      sent: 0,
      failed: 0,
      indexed: 0,
      indexedAccession: null,
      stable: false,
      stableAfterMs: null,
    };
    summary.studies.push(entry);
    const t = performance.now();
    began.set(x.studyInstanceUid, t);
    try {
      const found = (await orthancPost(`${orthancUrl}/tools/lookup`, x.studyInstanceUid, 30_000)) as { ID?: string; Type?: string }[];
      const id = found.find((f) => f.Type === 'Study')?.ID;
      if (!id) throw new Error('Orthanc does not know the study');
      const r = (await orthancPost(`${modality}/store`, id)) as { InstancesCount?: number; FailedInstancesCount?: number };
      entry.sent = r.InstancesCount ?? 0;
      entry.failed = r.FailedInstancesCount ?? 0;
      out(
        `   ${x.study.accession}: Orthanc sent ${entry.sent} of ${x.instances} instance(s) in one association, ${entry.failed} failed (${((performance.now() - t) / 1000).toFixed(1)} s)`,
      );
    } catch (e) {
      out(`   ${x.study.accession}: C-STORE to ctgate FAILED (${(e as Error).message})`);
    }
  }
  storing = false;
  out("   ctgate's study index (rescanned after each association): waiting until each study is stable (CTGATE_DIMSE_STABLE_S=2)");
  await watch;
  checkpoint();
  for (const e of summary.studies) {
    const [st] = receiver.index.findStudies({ studyInstanceUid: e.studyInstanceUid });
    const series = st?.series.length ?? 0;
    out(
      e.stable
        ? `   ${e.accession}: indexed ${e.indexed} instance(s) in ${series} series, accession ${e.indexedAccession ?? '(none)'}, study ${e.studyInstanceUid}; stable ${(
            (e.stableAfterMs ?? 0) / 1000
          ).toFixed(1)} s after its C-STORE began`
        : `   ${e.accession}: NOT ready in ctgate's index (${e.indexed} of ${e.sent} instance(s) indexed${e.indexed ? ', not stable' : ''})`,
    );
  }
  return summary;
}

function synthetic(kind: PhantomKind, seed: number): HuVolume {
  return generateChestCt({ seed, kind, size: [128, 128, 52], spacing: [2.6, 2.6, 5] }).volume;
}

function realCt(): HuVolume | undefined {
  const dir = process.env.CTGATE_SHARED_DATA ?? resolve('../shared/data');
  const file = join(dir, 'totalseg-ct-small', 'example_ct_sm.nii.gz');
  if (!existsSync(file)) return undefined;
  const n = readNifti(file);
  if (!(n.data instanceof Int16Array)) return undefined;
  return { geometry: n.geometry, data: n.data };
}

const hl7Date = (d: Date) => d.toISOString().replace(/[-:T]/g, '').slice(0, 14);

/** An ORM^O01 for a chest CT (CPT 71250) in the shape EMRs send (see fixtures/hl7/orm-chest-ct.hl7). */
export function demoOrm(s: DemoStudy, controlId: string, now = new Date()): string {
  const t = hl7Date(now);
  return [
    `MSH|^~\\&|${SENDER.application}|${SENDER.facility}|CTGATE|RADIOLOGY|${t}||ORM^O01^ORM_O01|${controlId}|P|2.5.1`,
    `PID|1||${s.patient.id}^^^GENHOSP^MR||${s.patient.family}^${s.patient.given}||${s.patient.birthDate}|${s.patient.sex}`,
    'PV1|1|O|CT1',
    `ORC|NW|${s.placer}^DEMO-EMR|||SC||^^^${t}^^R||${t}|||4411^CHEN^LI^^^DR`,
    `OBR|1|${s.placer}^DEMO-EMR||71250^CT THORAX WO CONTRAST^C4|||${t}||||||||4411^CHEN^LI|||${s.accession}`,
  ].join('\r');
}

interface SpawnedWorker {
  pid: number;
  ready: { models: string[]; provider: string };
  stop(): Promise<void>;
}

/**
 * `ctgate worker` as a child process; resolves when it logs worker.ready (its log lines are JSON on stderr).
 * `onSpawn` gets its stop() at once, so a demo stopped while the worker is still loading stops it too.
 */
function spawnWorker(env: NodeJS.ProcessEnv, onSpawn: (stop: () => Promise<void>) => void): Promise<SpawnedWorker> {
  const child = spawn(process.execPath, ['bin/ctgate.mjs', 'worker'], { env: { ...env, CTGATE_LOG_LEVEL: 'info' }, stdio: ['ignore', 'ignore', 'pipe'] });
  let buf = '';
  let tail = '';
  const ready = { models: [] as string[], provider: '' };
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await new Promise((r) => child.once('exit', r));
    clearTimeout(t);
  };
  onSpawn(stop);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`the worker did not start within 60 s: ${tail}`));
    }, 60_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the worker exited (${code}): ${tail}`));
    });
    child.stderr.on('data', (d: Buffer) => {
      buf += d.toString();
      tail = (tail + d.toString()).slice(-2000);
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        nl = buf.indexOf('\n');
        let rec: { event?: string; models?: string[]; provider?: string; level?: string };
        try {
          rec = JSON.parse(line);
        } catch {
          continue;
        }
        if (rec.event === 'models.loaded') Object.assign(ready, { models: rec.models ?? [], provider: rec.provider ?? '' });
        if (rec.event === 'worker.ready') {
          clearTimeout(timer);
          child.removeAllListeners('exit');
          resolve({ pid: child.pid ?? 0, ready, stop });
        }
        if (rec.level === 'error') process.stderr.write(`worker: ${line}\n`);
      }
    });
  });
}

const pct = (p: unknown) => (typeof p === 'object' && p !== null ? (p as { percent?: number; stage?: string }) : {});

/** Glob-escapes `s` for SCAN MATCH. */
const globEscape = (s: string) => s.replace(/[*?[\]\\]/g, '\\$&');

/** A Redis key prefix of the demo's own, new for each run, so that its end can delete every key under it. */
export const demoRedisPrefix = () => `ctgate-demo-${randomBytes(8).toString('hex')}`;

/**
 * Deletes every key whose name starts with `prefix` (SCAN + UNLINK; the BullMQ queue's keys sit under
 * `<prefix>:bull`), pass after pass until one finds none; returns how many it deleted.
 */
export async function unlinkByPrefix(url: string, prefix: string): Promise<number> {
  if (!/^ctgate-demo-[0-9a-f]{16}$/.test(prefix)) throw new Error(`refusing to delete the keys of a prefix the demo did not make: ${prefix}`);
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 5000, commandTimeout: 10_000, retryStrategy: () => null });
  r.on('error', () => {}); // connect() and the commands reject with it
  let deleted = 0;
  try {
    await r.connect();
    for (let pass = 0; pass < 5; pass++) {
      let found = 0;
      let cursor = '0';
      do {
        const [next, keys] = await r.scan(cursor, 'MATCH', `${globEscape(prefix)}*`, 'COUNT', 1000);
        cursor = next;
        found += keys.length;
        if (keys.length) deleted += await r.unlink(...keys);
      } while (cursor !== '0');
      if (found === 0) break;
    }
    return deleted;
  } finally {
    r.disconnect();
  }
}

/**
 * Undoes what the demo started and wrote, newest first: at the end, at Ctrl-C or SIGTERM, and after an error.
 * A step added after the undo began (something that was still starting) is undone at once. The `last` steps
 * (the Redis keys, the folders) run after every round, so nothing started late writes after them unnoticed.
 */
class Teardown {
  private readonly steps: { what: string; run: () => Promise<void> }[] = [];
  private readonly last: { what: string; run: () => Promise<void> }[] = [];
  private draining?: Promise<void>;
  private again = false;
  started = false;
  readonly problems = new Map<string, string>();

  add(what: string, run: () => Promise<void>): void {
    this.steps.push({ what, run });
    if (this.started) void this.drain();
  }

  addLast(what: string, run: () => Promise<void>): void {
    this.last.push({ what, run });
  }

  /** Runs the steps not yet run, then the last ones; resolves when nothing is left to run. */
  stop(): Promise<void> {
    this.started = true;
    return this.drain();
  }

  private drain(): Promise<void> {
    if (this.draining) {
      this.again = true;
      return this.draining;
    }
    this.draining = (async () => {
      do {
        this.again = false;
        for (let s = this.steps.pop(); s; s = this.steps.pop()) await this.run(s);
        for (const s of this.last) await this.run(s);
      } while (this.again || this.steps.length > 0);
      this.draining = undefined;
    })();
    return this.draining;
  }

  private async run(s: { what: string; run: () => Promise<void> }): Promise<void> {
    try {
      await s.run();
      this.problems.delete(s.what);
    } catch (e) {
      this.problems.set(s.what, (e as Error).message);
    }
  }
}

class Interrupted extends Error {}

export async function runDemo(args: string[]): Promise<number> {
  const once = args.includes('--once');
  const viaCstore = args.includes('--via-cstore') || /^(1|true|yes|on)$/i.test(process.env.CTGATE_DEMO_VIA_CSTORE ?? '');
  const t0 = Date.now();
  const out = (s = '') => process.stdout.write(`${s}\n`);
  const teardown = new Teardown();

  // Everything with patient data the demo makes: its work folder (the orders it sends, the ORUs the EMR receives),
  // the PACS's storage, and the Redis keys under a prefix of its own (orders, jobs, results). The FHIR peer keeps
  // its chart in memory only. All of it goes when the demo stops, however it stops.
  const redisPrefix = demoRedisPrefix();
  const work = mkdtempSync(join(tmpdir(), 'ctgate-demo-'));
  const emrDir = join(work, 'emr-oru');
  // --via-cstore: what ctgate's DIMSE receiver writes (received images: patient data) lives in the work folder too.
  const receiveDir = join(work, 'dimse-receive');
  const dirs = viaCstore ? [work, emrDir, receiveDir] : [work, emrDir];
  let redisUrl: string | undefined;
  let redisKeysDeleted = 0;
  teardown.addLast('Redis keys', async () => {
    if (redisUrl === undefined) return;
    try {
      redisKeysDeleted += await unlinkByPrefix(redisUrl, redisPrefix);
    } catch (e) {
      throw new Error(`${(e as Error).message}; delete them with: redis-cli --scan --pattern '${redisPrefix}*' | xargs -r redis-cli unlink`);
    }
  });
  teardown.addLast('folders', async () => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    const left = dirs.filter((d) => existsSync(d));
    if (left.length) throw new Error(`still there: ${left.join(', ')}`);
  });
  // Last resort when something calls process.exit: the folders at least (Redis needs a round trip).
  const onExit = () => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  };
  process.once('exit', onExit);

  // Ctrl-C (SIGINT) or SIGTERM: while the demo waits for it, it ends the demo as usual; before, it stops the demo
  // where it is. Either way the teardown runs before the process exits.
  let signalled: NodeJS.Signals | undefined;
  let waitingForCtrlC: (() => void) | undefined;
  let settled: () => void = () => {};
  const mainSettled = new Promise<void>((r) => {
    settled = r;
  });
  const onSignal = (sig: NodeJS.Signals) => {
    if (waitingForCtrlC) {
      waitingForCtrlC();
      waitingForCtrlC = undefined;
      return;
    }
    if (signalled || teardown.started) {
      process.stderr.write(`ctgate demo: ${sig}: still stopping and removing the demo's data, one moment\n`);
      return;
    }
    signalled = sig;
    process.stderr.write(`\nctgate demo: ${sig}: stopping what the demo started and removing its data\n`);
    void (async () => {
      await teardown.stop();
      // The main flow notices (what it waits on is gone) and ends; whatever it started meanwhile is undone then.
      await Promise.race([mainSettled, new Promise((r) => setTimeout(r, 10_000).unref())]);
      await teardown.stop();
      reportCleanup(process.stderr);
      process.exit(sig === 'SIGINT' ? 130 : 143);
    })();
  };
  const onFatal = (e: unknown) => {
    process.stderr.write(`ctgate demo: ${(e as Error)?.stack ?? String(e)}\n`);
    void teardown.stop().finally(() => {
      reportCleanup(process.stderr);
      process.exit(1);
    });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('uncaughtException', onFatal);
  process.on('unhandledRejection', onFatal);
  const checkpoint = () => {
    if (signalled || teardown.started) throw new Interrupted('stopped');
  };

  const cleanupSummary = (): DemoSummary['cleanup'] => ({
    redisPrefix,
    redisKeysDeleted,
    dirs: [...dirs],
    removed: teardown.problems.size === 0,
    problems: [...teardown.problems].map(([what, why]) => `${what}: ${why}`),
  });
  const reportCleanup = (to: NodeJS.WritableStream) => {
    const c = cleanupSummary();
    if (c.removed) to.write(`   Removed the demo's data: ${c.dirs.join(', ')} and ${c.redisKeysDeleted} Redis key(s) under ${c.redisPrefix}.\n`);
    else to.write(`ctgate demo: could not remove all of the demo's data (it holds patient data):\n${c.problems.map((p) => `   ${p}\n`).join('')}`);
  };

  try {
    out('ctgate demo — AI chest-CT screening from HL7 order to SEG, FHIR report and ORU (NOT FOR CLINICAL USE)\n');
    out('1. Starting the peers: Orthanc (PACS with DICOMweb), Medplum FHIR engine, python-hl7 MLLP server (the EMR)');
    // --via-cstore: ctgate's receiver port is chosen now, so that Orthanc starts knowing ctgate as a modality. Orthanc's
    // own DICOM server stays off (it would listen on every interface): it only calls out.
    const dimsePort = viaCstore ? await freePort() : 0;
    const orthanc = new LocalOrthanc(
      viaCstore ? { dicom: { aet: ORTHANC_AE, listen: false, modalities: { [CTGATE_AE]: [CTGATE_AE, '127.0.0.1', dimsePort] } } } : {},
    );
    const fhir = new LocalFhirServer();
    // Added before they start, so a demo stopped while they start stops them too.
    teardown.add('PACS (Orthanc and its storage)', async () => {
      await orthanc.stop();
      if (orthanc.storageDir && existsSync(orthanc.storageDir)) throw new Error(`${orthanc.storageDir} is still there`);
    });
    teardown.add('FHIR peer', () => fhir.stop());
    const peers = Promise.all([orthanc.start(), fhir.start()]);
    // Its storage folder exists once start() began (made before the first await).
    if (orthanc.storageDir) dirs.push(orthanc.storageDir);
    await peers;
    checkpoint();
    let emr: Receiver | undefined;
    teardown.add('EMR (ORU receiver)', async () => {
      if (emr) await emr.stop();
      else for (const p of running) p.kill('SIGTERM');
    });
    emr = await startReceiver({ dir: emrDir });
    checkpoint();
    out(`   PACS ${orthanc.dicomweb}   FHIR ${fhir.url}   EMR MLLP 127.0.0.1:${emr.port}`);
    if (viaCstore) out(`   Orthanc knows ctgate as the DICOM modality ${CTGATE_AE} (AE ${CTGATE_AE}, 127.0.0.1:${dimsePort}) and calls it as ${ORTHANC_AE}`);

    const token = process.env.CTGATE_API_TOKEN ?? `demo-${randomBytes(12).toString('hex')}`;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      // Never a site's prefix: the demo deletes every key under this one when it stops.
      CTGATE_REDIS_PREFIX: redisPrefix,
      CTGATE_MLLP_PORT: process.env.CTGATE_MLLP_PORT ?? '0',
      CTGATE_HTTP_PORT: process.env.CTGATE_HTTP_PORT ?? '0',
      CTGATE_API_TOKEN: token,
      CTGATE_PACS_URL: orthanc.dicomweb,
      CTGATE_FHIR_BASE_URL: fhir.url,
      CTGATE_ORU_HOST: '127.0.0.1',
      CTGATE_ORU_PORT: String(emr.port),
      CTGATE_STUDY_POLL_MS: '500',
      CTGATE_STUDY_STABLE_MS: '1500',
      CTGATE_STUDY_SLEEP_MS: '2000',
      CTGATE_LOG_LEVEL: process.env.CTGATE_LOG_LEVEL ?? 'error',
      // The demo uses whatever Redis answers (under its own prefix); a deployment keeps the check on.
      CTGATE_REDIS_REQUIRE_AOF: process.env.CTGATE_REDIS_REQUIRE_AOF ?? 'false',
    };
    if (viaCstore) {
      // The gateway runs the receiver (as `ctgate serve` does with these keys); only Orthanc, from loopback, may send.
      Object.assign(env, {
        CTGATE_DIMSE_LISTEN_PORT: String(dimsePort),
        CTGATE_DIMSE_LISTEN_HOST: '127.0.0.1',
        CTGATE_DIMSE_AE_TITLE: CTGATE_AE,
        CTGATE_DIMSE_ALLOWED_CALLERS: `${ORTHANC_AE}@127.0.0.1`,
        CTGATE_DIMSE_RECEIVE_DIR: receiveDir,
        CTGATE_DIMSE_STABLE_S: '2',
      });
      // Received studies into jobs, where this build has it (a key of the configuration); the user's choice otherwise.
      if (configKeys.includes('CTGATE_STUDY_SOURCE') && !process.env.CTGATE_STUDY_SOURCE) env.CTGATE_STUDY_SOURCE = 'received';
    }
    const analysisSource: DimseReceiveSummary['analysisSource'] =
      viaCstore && configKeys.includes('CTGATE_STUDY_SOURCE') && env.CTGATE_STUDY_SOURCE === 'received' ? 'received' : 'dicomweb';
    const gwConfig = loadConfig(env);
    redisUrl = gwConfig.redisUrl;
    const dimseCounts = { accepted: 0, rejected: 0, quarantined: 0 };
    const log = countingDimse(createLogger(gwConfig.logLevel, gwConfig.logPhi), dimseCounts);
    out('\n2. Starting ctgate: the gateway (MLLP intake, web page, DICOMweb proxy) and a worker (models, SEG, FHIR, ORU)');
    const gw = await startGateway(gwConfig, log);
    teardown.add('gateway', () => gw.stop());
    checkpoint();
    const base = `http://127.0.0.1:${gw.httpPort}`;
    // The worker in its own process, as at a site: model runs hold its event loop for seconds, which would
    // otherwise delay the gateway's ACKs.
    const worker = await spawnWorker({ ...env, CTGATE_PUBLIC_URL: base }, (stop) => teardown.add('worker', stop));
    checkpoint();
    const models = worker.ready;
    out(`   MLLP 127.0.0.1:${gw.mllp.port}   HTTP ${base}   worker pid ${worker.pid}: models ${models.models.join(', ')} on ${models.provider}`);
    let receiver: DimseReceiver | undefined;
    if (viaCstore) {
      receiver = gw.dimse;
      if (!receiver) throw new Error('the gateway did not start the DIMSE receiver');
      out(`   DIMSE receiver ${CTGATE_AE} 127.0.0.1:${receiver.port} (C-ECHO, C-STORE of CT; calling AE ${ORTHANC_AE} from 127.0.0.1 only)`);
    }

    out('\n3. Storing the studies in the PACS (STOW-RS)');
    const studies: DemoStudy[] = [
      {
        label: 'synthetic COVID-19 pneumonia',
        accession: 'DEMO-ACC-1',
        placer: 'DEMO-ORD-1',
        patient: { id: 'DEMO-MRN-1', family: 'DEMO', given: 'POSITIVE', birthDate: '19650314', sex: 'F' },
        volume: synthetic('covid', 501),
        seed: 501,
      },
      {
        label: 'synthetic healthy lungs',
        accession: 'DEMO-ACC-2',
        placer: 'DEMO-ORD-2',
        patient: { id: 'DEMO-MRN-2', family: 'DEMO', given: 'NEGATIVE', birthDate: '19720101', sex: 'M' },
        volume: synthetic('healthy', 503),
        seed: 503,
      },
    ];
    const real = realCt();
    if (real) {
      studies.push({
        label: 'real CT (TotalSegmentator example, lung bases only)',
        accession: 'DEMO-ACC-3',
        placer: 'DEMO-ORD-3',
        patient: { id: 'DEMO-MRN-3', family: 'DEMO', given: 'REALCT', birthDate: '19600101', sex: 'M' },
        volume: real,
        seed: 3,
      });
    } else out('   (../shared/data/totalseg-ct-small not found: two studies only)');
    const pacs = orthanc.client();
    const stored: { study: DemoStudy; studyInstanceUid: string; instances: number }[] = [];
    for (const s of studies) {
      checkpoint();
      const series = writeCtSeries(s.volume, {
        seed: s.seed,
        accessionNumber: s.accession,
        patientId: s.patient.id,
        patientName: `${s.patient.family}^${s.patient.given}`,
        patientSex: s.patient.sex,
        patientBirthDate: s.patient.birthDate,
        seriesDescription: s.label,
      });
      await pacs.store(series.files.map((f) => f.bytes));
      const [nx, ny, nz] = s.volume.geometry.size;
      out(`   ${s.accession}  ${s.label}: ${nz} slices of ${nx}×${ny}, study ${series.studyInstanceUid}`);
      stored.push({ study: s, studyInstanceUid: series.studyInstanceUid, instances: series.files.length });
    }

    let dimseReceive: DimseReceiveSummary | undefined;
    if (receiver) {
      checkpoint();
      dimseReceive = await pushToCtgate(orthanc.url, receiver, stored, out, checkpoint);
      Object.assign(dimseReceive, {
        associationsAccepted: dimseCounts.accepted,
        associationsRejected: dimseCounts.rejected,
        quarantined: dimseCounts.quarantined,
        analysisSource,
      });
      out(
        `   ctgate's gate: ${dimseCounts.accepted} association(s) accepted (the C-ECHO and one C-STORE per study), ${dimseCounts.rejected} rejected; ${dimseCounts.quarantined} file(s) quarantined`,
      );
      out(
        analysisSource === 'received'
          ? "   Analysis source: the received copy (CTGATE_STUDY_SOURCE=received): the worker reads each study from ctgate's receive folder."
          : configKeys.includes('CTGATE_STUDY_SOURCE')
            ? `   Analysis source: DICOMweb (CTGATE_STUDY_SOURCE=${env.CTGATE_STUDY_SOURCE}): the worker retrieves each study from the PACS by WADO-RS.`
            : '   Analysis source: DICOMweb. The worker retrieves each study from the PACS by WADO-RS: feeding received studies\n' +
              "   to jobs (CTGATE_STUDY_SOURCE=received) is not in this build. The received copy goes with the demo's data.",
      );
    }

    out('\n4. Sending the orders (ORM^O01) with mllp_send (python-hl7)');
    checkpoint();
    const ormFile = join(work, 'orders.hl7');
    writeFileSync(ormFile, `${studies.map((s, i) => demoOrm(s, `DEMO${String(i + 1).padStart(4, '0')}`)).join('\r\r')}\r`, { mode: 0o600 });
    const { stdout } = await execFileP('/usr/bin/mllp_send', ['--loose', '-p', String(gw.mllp.port), '-f', ormFile, '127.0.0.1'], { timeout: 30_000 });
    rmSync(ormFile, { force: true });
    for (const ack of stdout.split(/(?=MSH\|)/).filter((a) => a.startsWith('MSH'))) {
      const msa = ack.split(/\r|\n/).find((l) => l.startsWith('MSA')) ?? '';
      out(`   ACK ${msa.split('|').slice(1, 3).join(' for ')}`);
    }

    out('\n5. Waiting for the results');
    const ids = studies.map((s) => jobIdFor(SENDER, s.placer));
    const deadline = Date.now() + Number(process.env.CTGATE_DEMO_TIMEOUT_MS ?? 15 * 60_000);
    const last = new Map<string, string>();
    const states = new Map<string, string>();
    const tty = process.stdout.isTTY === true;
    for (;;) {
      checkpoint();
      let running = 0;
      const line: string[] = [];
      for (const [i, id] of ids.entries()) {
        const job = await gw.queue.getJob(id);
        const state = job ? await job.getState() : 'missing';
        states.set(id, state);
        const p = pct(job?.progress);
        const text = state === 'completed' || state === 'failed' ? state : `${p.stage ?? state} ${p.percent ?? 0}%`;
        if (state !== 'completed' && state !== 'failed') running++;
        const acc = studies[i]?.accession ?? id;
        line.push(`${acc} ${text}`);
        if (!tty && last.get(id) !== text) out(`   ${acc}: ${text}`);
        last.set(id, text);
      }
      if (tty) process.stdout.write(`\r   ${line.join('   ')}   `);
      if (running === 0 || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    if (tty) out();

    const summary: Omit<DemoSummary, 'cleanup'> = { studies: [], elapsedMs: 0 };
    out('\n6. Results');
    for (const [i, id] of ids.entries()) {
      const s = studies[i] as DemoStudy;
      const job = await gw.queue.getJob(id);
      const state = states.get(id) ?? 'missing';
      const r = job?.returnvalue as ScreeningResult | undefined;
      const entry: DemoSummary['studies'][number] = {
        accession: s.accession,
        label: s.label,
        verdict: r?.verdict ?? null,
        probability: r?.probability ?? null,
        diagnosticReport: r?.diagnosticReportId ? `DiagnosticReport/${r.diagnosticReportId}` : null,
        segSeriesInstanceUid: r?.segSeriesInstanceUid ?? null,
        oruAcked: r?.oruAckCode === 'AA' || r?.oruAckCode === 'CA',
        state,
        ...(state === 'failed' ? { reason: job?.failedReason } : {}),
      };
      summary.studies.push(entry);
      const verdict =
        state !== 'completed'
          ? `${state.toUpperCase()}${entry.reason ? `: ${entry.reason}` : ''}`
          : `${(r?.verdict ?? '?').toUpperCase()}${r?.probability != null ? ` (p = ${r.probability.toFixed(3)})` : ''}`;
      out(`   ${s.accession}  ${s.label}: ${verdict}`);
      if (dimseReceive) {
        const got = dimseReceive.studies.find((x) => x.accession === s.accession);
        const received = got?.stable ? `received by C-STORE: ${got.indexed} instance(s) indexed` : 'NOT received by C-STORE';
        out(
          dimseReceive.analysisSource === 'received'
            ? `      images read from ctgate's receive folder (${received})`
            : `      images retrieved by DICOMweb (WADO-RS) from the PACS; ${received}, not used by the analysis`,
        );
      }
      out(`      page ${base}/jobs/${id}`);
      if (r?.studyInstanceUid) out(`      viewer ${base}/viewer/viewer?StudyInstanceUIDs=${r.studyInstanceUid}`);
      if (entry.diagnosticReport) out(`      FHIR ${fhir.url}/${entry.diagnosticReport}`);
      if (entry.segSeriesInstanceUid) out(`      SEG  series ${entry.segSeriesInstanceUid} (in the PACS, and through ${base}/dicom-web)`);
      else if (r?.skipped['write-seg']) out(`      SEG  none: ${r.skipped['write-seg']}`);
      if (r?.keyImageSeriesInstanceUid) out(`      key images (Secondary Capture) series ${r.keyImageSeriesInstanceUid}`);
      if (r?.srSeriesInstanceUid) out(`      measurements (DICOM SR, TID 1500) series ${r.srSeriesInstanceUid}`);
      out(`      ORU  ${entry.oruAcked ? `delivered to the EMR (ACK ${r?.oruAckCode})` : 'not delivered'}`);
    }
    out(`\n   EMR received ${emr.received().length} ORU^R01 message(s).`);
    out(`   Web page: ${base}/login (token ${token})`);
    out(`   Viewer (OHIF, after the login): ${base}/viewer/ — the studies with our SEG, SR and key images`);
    summary.elapsedMs = Date.now() - t0;
    if (dimseReceive) summary.dimseReceive = dimseReceive;
    // --via-cstore: the receive counts too (C-ECHO, every instance sent, indexed, stable).
    const received =
      !dimseReceive || (dimseReceive.echoOk && dimseReceive.studies.every((x) => x.sent > 0 && x.failed === 0 && x.stable && x.indexed === x.sent));
    const allDone = summary.studies.every((s) => s.state === 'completed') && received;
    if (!once) {
      out("\nEverything keeps running; press Ctrl-C to stop (that also removes the demo's data: PACS, EMR folder, Redis keys).");
      await new Promise<void>((r) => {
        waitingForCtrlC = r;
      });
      out('\nStopping.');
    }
    await teardown.stop();
    const cleanup = cleanupSummary();
    reportCleanup(process.stdout);
    if (once) out(JSON.stringify({ ...summary, cleanup } satisfies DemoSummary));
    return allDone && cleanup.removed ? 0 : 1;
  } catch (e) {
    await teardown.stop();
    if (signalled) return signalled === 'SIGINT' ? 130 : 143;
    reportCleanup(process.stderr);
    throw e;
  } finally {
    settled();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('uncaughtException', onFatal);
    process.off('unhandledRejection', onFatal);
    process.off('exit', onExit);
  }
}
