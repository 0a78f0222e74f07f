/**
 * A screening job's checkpoint in Redis: the stage it is at, what each finished stage produced, per-stage
 * attempts and timings, and the last error. A worker that picks the job up again (after a crash, a retry or a
 * restart) starts at `stage`; finished stages are never run twice.
 */
import type { Redis } from 'ioredis';
import type { ReusedFrom } from '../results/context.js';
import { type AnalysisCheckpoint, decodeCheckpoint, encodeCheckpoint } from './analysis-codec.js';

export const STAGES = ['wait-for-study', 'retrieve', 'analyze', 'write-seg', 'write-fhir', 'send-oru'] as const;
export type StageName = (typeof STAGES)[number];

/**
 * Whose failure a job's lastError is: the PACS (DICOMweb), the C-STORE destination of the results (pacs-dimse), the
 * FHIR server, the EMR's ORU receiver, the models, or ctgate itself.
 */
export type ErrorPeer = 'pacs' | 'pacs-dimse' | 'fhir' | 'emr-oru' | 'model' | 'internal';

/**
 * The patient identity check of a study (or of the chosen series) against the order (domain/patient-identity.ts):
 * DICOM attribute names only, never values, so it may sit in the checkpoint the API shows without PHI.
 */
export interface PatientIdentityRecord {
  /** not-compared: the sender's rule has mode off. */
  outcome: 'match' | 'mismatch' | 'not-comparable' | 'not-compared';
  /** proceed: accepted; warn: not accepted, but the rule's mode is warn, so the job went on. (A failure fails the job.) */
  action: 'proceed' | 'warn';
  /** The rule, as describeRule words it (where it sits in the mappings and what it compares). */
  rule: string;
  /** Whose attributes were read: the study's or the chosen series'. */
  level?: 'study' | 'series';
  compared: string[];
  differ: string[];
  notComparable: string[];
  /** Present when action is warn: what a failure would have said. */
  message?: string;
}

export interface StageOutputs {
  'wait-for-study'?: { studyInstanceUid: string; instances: number; matchedBy: string; patientIdentity?: PatientIdentityRecord };
  retrieve?: {
    /** The patient identity check against the chosen series, before its analysis was run or shared. */
    patientIdentity?: PatientIdentityRecord;
    seriesInstanceUid: string;
    slices: number;
    reason: string;
    /** The series' content fingerprint and the analysis claim this job took (jobs/analysis-reuse.ts). */
    reuse?: { fingerprint: string; claimKey: string };
    /** The earlier job whose analysis and PACS objects this job shares: analyze and write-seg did not run. */
    reusedFrom?: ReusedFrom;
  };
  analyze?: {
    verdict: string;
    category?: string;
    probability: number | null;
    models: string[];
    executionProvider: string;
    reason?: string;
    reusedFrom?: ReusedFrom;
  };
  'write-seg'?:
    | {
        seriesInstanceUid: string;
        sopInstanceUid: string;
        frames: number;
        /** The key-image series (secondary captures with the overlay burned in), when there were key slices. */
        keyImageSeriesInstanceUid?: string;
        keyImages?: number;
        /** The key object selection (KOS) series that flags the key slices and key images, when there were key slices. */
        kosSeriesInstanceUid?: string;
        /** The measurement report (TID 1500 SR) series. */
        srSeriesInstanceUid?: string;
        /** The objects are an earlier job's (shared analysis), not written by this job. */
        reusedFrom?: ReusedFrom;
      }
    | {
        skipped: string;
        /** The measurement report is written without a SEG too (no lesion; not assessable, saying why). */
        srSeriesInstanceUid?: string;
        reusedFrom?: ReusedFrom;
      };
  'write-fhir'?: { diagnosticReportId: string; resources: number } | { skipped: string };
  'send-oru'?:
    | {
        controlId: string;
        /** The EMR's MSA-1, or 'unknown' when deliveryUnknown. */
        ackCode: string;
        attempts: number;
        /** Why the ORU may or may not have reached the EMR (a worker died mid-send; not resent). */
        deliveryUnknown?: string;
        /**
         * Sent again with the same MSH-10 after an attempt whose outcome is unknown — a worker death
         * (CTGATE_ORU_UNCONFIRMED=resend) or a send that got no ACK in time: the EMR may have it more than once.
         */
        possibleDuplicate?: boolean;
        /** Sends, across the stage's attempts, that went out and got no ACK. */
        unacked?: number;
      }
    | { skipped: string };
}

export interface JobState {
  jobId: string;
  /** The next stage to run; 'done' when every stage finished, 'cancelled' when stopped by a cancel. */
  stage: StageName | 'done' | 'cancelled';
  attempts: Partial<Record<StageName, number>>;
  timingsMs: Partial<Record<StageName, number>>;
  outputs: StageOutputs;
  startedAt: string;
  updatedAt: string;
  finishedAt?: string;
  /**
   * The last error of the stage the job is at (cleared when that stage succeeds): a retry's cause, or a peer that did
   * not answer while the job waits (a PACS outage during wait-for-study). `peer` says whose fault it is; `since` is
   * when this same error was first seen (a wait that keeps failing shows how long).
   */
  /** Set (with the ORU's MSH-10) just before the ORU is sent, cleared by its outcome; see stages/send-oru.ts. */
  oruSending?: { controlId: string; at: string };
  /** ORU sends of earlier send-oru attempts that went out and got no ACK (the EMR may have them). */
  oruUnacked?: number;
  /** While another job analyses the same series (jobs/analysis-reuse.ts): which, since when, how often looked. */
  waitingFor?: { jobId: string; since: string; looks: number };
  lastError?: {
    stage: StageName;
    peer?: ErrorPeer;
    message: string;
    retryable: boolean;
    at: string;
    since?: string;
    /** What kind of failure, where a client may want to tell it apart: 'patient-identity' (the study is not the order's patient). */
    kind?: 'patient-identity';
  };
}

const DAY = 86_400;

/**
 * A fencing token for checkpoint writes: the job's BullMQ lock key and the token of the worker that holds it. A
 * worker that lost its lock (its event loop held too long, Redis away past the lock) while another worker took
 * the job over must not write its stale checkpoint, nor go on to send the ORU: a fenced write checks, in the same
 * Lua script as the write, that the lock still holds this token.
 */
export interface Fence {
  lockKey: string;
  token: string;
  /** The queue's active list and the job's id: a lapsed lock is taken back only while the job is still active. */
  activeKey: string;
  jobId: string;
  /** The lock's duration, for taking a lapsed lock back. */
  lockMs: number;
}

/** A fenced checkpoint write found the job's lock held by another worker, or expired. */
export class LockLostError extends Error {
  constructor(readonly jobId: string) {
    super(`job ${jobId}: this worker no longer holds the job's lock`);
    this.name = 'LockLostError';
  }
}

// A lock that lapsed while nobody took the job over (its key is gone, the job still in the active list: this
// worker's event loop was held past the lock, or Redis was away) is taken back, so that a stage whose work
// outlasts the lock does not lose the job again and again; a lock held by another token refuses the write.
// KEYS: state, [analysis,] active list, lock. ARGV: ttl, token, job id, lock ms, state json[, analysis json].
const PUT_FENCED = `local lock = redis.call('GET', KEYS[#KEYS])
if lock == false then
  if redis.call('LPOS', KEYS[#KEYS - 1], ARGV[3]) == false then return 0 end
  redis.call('SET', KEYS[#KEYS], ARGV[2], 'PX', ARGV[4])
elseif lock ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[5], 'EX', ARGV[1])
if #KEYS == 4 then redis.call('SET', KEYS[2], ARGV[6], 'EX', ARGV[1]) end
return 1`;

export class JobStateStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly retentionDays: number,
  ) {}

  private key(jobId: string, part: string): string {
    return `${this.prefix}:job:${jobId}:${part}`;
  }

  async get(jobId: string): Promise<JobState | null> {
    const v = await this.redis.get(this.key(jobId, 'state'));
    return v ? (JSON.parse(v) as JobState) : null;
  }

  async getMany(jobIds: string[]): Promise<(JobState | null)[]> {
    if (jobIds.length === 0) return [];
    const vs = await this.redis.mget(jobIds.map((id) => this.key(id, 'state')));
    return vs.map((v) => (v ? (JSON.parse(v) as JobState) : null));
  }

  async put(state: JobState, fence?: Fence): Promise<void> {
    if (fence) return this.putFenced(fence, state);
    await this.redis.set(this.key(state.jobId, 'state'), JSON.stringify(state), 'EX', this.retentionDays * DAY);
  }

  private async putFenced(fence: Fence, state: JobState, analysis?: AnalysisCheckpoint): Promise<void> {
    const keys = [this.key(state.jobId, 'state'), ...(analysis ? [this.key(state.jobId, 'analysis')] : []), fence.activeKey, fence.lockKey];
    const args = [
      String(this.retentionDays * DAY),
      fence.token,
      fence.jobId,
      String(fence.lockMs),
      JSON.stringify(state),
      ...(analysis ? [encodeCheckpoint(analysis)] : []),
    ];
    if ((await this.redis.eval(PUT_FENCED, keys.length, ...keys, ...args)) !== 1) throw new LockLostError(state.jobId);
  }

  /** Saves the analysis and the state that points past it atomically: a crash leaves either both or neither. */
  async putWithAnalysis(state: JobState, analysis: AnalysisCheckpoint, fence?: Fence): Promise<void> {
    if (fence) return this.putFenced(fence, state, analysis);
    const res = await this.redis
      .multi()
      .set(this.key(state.jobId, 'analysis'), encodeCheckpoint(analysis), 'EX', this.retentionDays * DAY)
      .set(this.key(state.jobId, 'state'), JSON.stringify(state), 'EX', this.retentionDays * DAY)
      .exec();
    const failed = res?.find(([err]) => err);
    if (!res || failed) throw failed?.[0] ?? new Error('Redis transaction aborted');
  }

  async getAnalysis(jobId: string): Promise<AnalysisCheckpoint | null> {
    const v = await this.redis.get(this.key(jobId, 'analysis'));
    return v ? decodeCheckpoint(v) : null;
  }

  /** Forgets a job's progress (an admin re-run from the start). */
  async reset(jobId: string): Promise<void> {
    await this.redis.del(this.key(jobId, 'state'), this.key(jobId, 'analysis'));
  }
}

export function newJobState(jobId: string, now = new Date()): JobState {
  const at = now.toISOString();
  return { jobId, stage: STAGES[0], attempts: {}, timingsMs: {}, outputs: {}, startedAt: at, updatedAt: at };
}
