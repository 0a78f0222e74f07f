/**
 * Pieces shared by the tests that run the screening worker against real peers: a real `ctgate worker` child
 * process (env on top of this process's, stderr kept, killed at exit), a poll-until helper, the queue and
 * checkpoint store on a Redis prefix, and a synthetic study uploaded to Orthanc.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { jobIdFor, type ScreeningJobData } from '../../src/domain/job.js';
import { JobStateStore } from '../../src/jobs/job-state.js';
import { writeCtSeries } from '../../src/synthetic/dicom-writer.js';
import { generateChestCt, type PhantomKind } from '../../src/synthetic/phantom.js';
import type { TestOrthanc } from './orthanc.js';
import { sampleOrder } from './result-context.js';

export interface WorkerProcess {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The last `tail` characters the worker wrote to stderr. */
  stderr(): string;
}

const children = new Set<ChildProcess>();
process.once('exit', killWorkers);

/** SIGKILLs every worker spawned here that is still running (for `after`). */
export function killWorkers(): void {
  for (const c of children) c.kill('SIGKILL');
  children.clear();
}

/** Starts `ctgate worker` with `env` over this process's environment; it is SIGKILLed by killWorkers() if still running. */
export function spawnWorker(env: Record<string, string>, opts: { tail?: number } = {}): WorkerProcess {
  const tail = opts.tail ?? 8000;
  const child = spawn(process.execPath, ['bin/ctgate.mjs', 'worker'], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(child);
  let stderr = '';
  child.stderr?.on('data', (d) => {
    stderr = (stderr + d).slice(-tail);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  return { child, exited, stderr: () => stderr };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A worker's environment against the test peers, with the study wait and the retries made fast: Redis on
 * `prefix`, the PACS, and (when given) the FHIR server and the ORU receiver's port; `extra` on top.
 */
export function fastWorkerEnv(
  peers: { redisUrl: string; prefix: string; pacsUrl: string; fhirUrl?: string; oruPort?: number },
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    CTGATE_REDIS_URL: peers.redisUrl,
    CTGATE_REDIS_PREFIX: peers.prefix,
    CTGATE_PACS_URL: peers.pacsUrl,
    ...(peers.fhirUrl ? { CTGATE_FHIR_BASE_URL: peers.fhirUrl } : {}),
    ...(peers.oruPort ? { CTGATE_ORU_HOST: '127.0.0.1', CTGATE_ORU_PORT: String(peers.oruPort), CTGATE_ORU_RETRIES: '0' } : {}),
    CTGATE_STUDY_POLL_MS: '200',
    CTGATE_STUDY_STABLE_MS: '300',
    CTGATE_STUDY_CHECK_MS: '5000',
    CTGATE_STUDY_SLEEP_MS: '500',
    CTGATE_STAGE_BACKOFF_MS: '300',
    CTGATE_STAGE_BACKOFF_MAX_MS: '1000',
    CTGATE_MODEL_THREADS: '2',
    CTGATE_LOG_LEVEL: 'error',
    ...extra,
  };
}

/** Polls `f` every `everyMs` until it gives a truthy value; throws after `ms`, or as soon as `worker` exits. */
export async function waitFor<T>(
  what: string,
  f: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  ms: number,
  opts: { worker?: WorkerProcess; everyMs?: number } = {},
): Promise<T> {
  const { worker, everyMs = 50 } = opts;
  const log = () => (worker ? `: ${worker.stderr()}` : '');
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (worker && worker.child.exitCode !== null) throw new Error(`the worker exited (${worker.child.exitCode}) while waiting for ${what}${log()}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${log()}`);
    await sleep(everyMs);
  }
}

/** The screening queue and the checkpoint store on `prefix`, over one Redis connection. */
export class WorkerQueue {
  readonly redis: Redis;
  readonly queue: Queue<ScreeningJobData>;
  readonly states: JobStateStore;
  constructor(
    url: string,
    readonly prefix: string,
    opts: { quiet?: boolean } = {},
  ) {
    this.redis = new Redis(url, { maxRetriesPerRequest: null });
    this.queue = new Queue<ScreeningJobData>('screening', { connection: this.redis, prefix: `${prefix}:bull` });
    if (opts.quiet) {
      this.redis.on('error', () => {});
      this.queue.on('error', () => {});
    }
    this.states = new JobStateStore(this.redis, prefix, 1);
  }

  /** Adds the sample order for `accession` with placer number `placer` (3 attempts); gives its job id. */
  async addJob(accession: string, placer: string): Promise<string> {
    const order = sampleOrder({ accessionNumber: accession, placerOrderNumber: placer });
    const jobId = jobIdFor(order.sender, placer);
    await this.queue.add('screen', { order, receivedAt: new Date().toISOString(), messageControlId: `MSG-${placer}` }, { jobId, attempts: 3 });
    return jobId;
  }

  /** Polls the job's state until `until` holds; throws after `ms` with the checkpoint. */
  async waitForJob(jobId: string, until: (state: string) => boolean, ms = 120_000): Promise<string> {
    const deadline = Date.now() + ms;
    for (;;) {
      const s = await this.queue.getJobState(jobId);
      if (until(s)) return s;
      if (Date.now() > deadline) throw new Error(`job ${jobId} still ${s}; checkpoint ${JSON.stringify(await this.states.get(jobId))}`);
      await sleep(200);
    }
  }

  async close(): Promise<void> {
    await this.queue.close();
    this.redis.disconnect();
  }
}

/** A synthetic chest CT (128×128×52 at 2.6×2.6×5 mm unless told) written as a CT series and stored in `orthanc`. */
export async function uploadStudy(
  orthanc: TestOrthanc,
  o: { seed: number; kind: PhantomKind; accession: string; patientId?: string; size?: [number, number, number]; spacing?: [number, number, number] },
) {
  const p = generateChestCt({ seed: o.seed, kind: o.kind, size: o.size ?? [128, 128, 52], spacing: o.spacing ?? [2.6, 2.6, 5] });
  const series = writeCtSeries(p.volume, {
    seed: o.seed,
    accessionNumber: o.accession,
    patientId: o.patientId ?? 'MRN000123',
    seriesDescription: `synthetic ${o.kind}`,
  });
  await orthanc.client().store(series.files.map((f) => f.bytes));
  return series;
}
