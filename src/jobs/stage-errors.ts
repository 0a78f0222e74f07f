/**
 * The errors a screening job's stages and their runner tell apart, and how a failure is retried. Kept apart from the
 * runner and the stages so both can use them without importing each other.
 */
import { PacsError } from '../dicomweb/errors.js';

/** A stage failure with its retry class. Errors of other types are classified by classifyError. */
export class StageFailure extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
    this.name = 'StageFailure';
  }
}

/**
 * The study (or the chosen series) is not the order's patient under the sender's rule (domain/patient-identity.ts).
 * Not retried within the job: the job fails at once (the dead letter), naming the fields, never their values, and
 * can be retried from the API once the PACS or the mappings are fixed.
 */
export class PatientIdentityError extends StageFailure {
  constructor(message: string) {
    super(message, false);
    this.name = 'PatientIdentityError';
  }
}

/**
 * Redis was unreachable for longer than settings.redisOutageMs during a checkpoint read or write: the job is given
 * back to the queue without counting an attempt.
 */
export class RedisUnavailableError extends Error {
  constructor(override readonly cause: unknown) {
    super(`Redis is unreachable: ${(cause as Error)?.message ?? String(cause)}`);
    this.name = 'RedisUnavailableError';
  }
}

/** The job's hash is gone from the queue (deleted by an admin or by hand): nothing is left to run it for. */
export class JobGoneError extends Error {
  constructor(jobId: string, stage: string) {
    super(`job ${jobId} is gone from the queue; stopped before stage ${stage}`);
    this.name = 'JobGoneError';
  }
}

export function classifyError(e: unknown): StageFailure {
  if (e instanceof StageFailure) return e;
  if (e instanceof PacsError) return new StageFailure(e.message, e.retryable);
  const err = e as Error & { retryable?: boolean };
  return new StageFailure(err?.message ?? String(e), err?.retryable ?? true);
}

export function backoffMs(attempt: number, s: { backoffMs: number; backoffMaxMs: number }): number {
  return Math.min(s.backoffMaxMs, s.backoffMs * 2 ** Math.max(0, attempt - 1));
}

/** Rejects with a retryable StageFailure naming `stage` when `p` has not settled within `ms`. */
export function withTimeout<T>(p: Promise<T>, ms: number, stage: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StageFailure(`stage ${stage} timed out after ${ms} ms`, true)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}
