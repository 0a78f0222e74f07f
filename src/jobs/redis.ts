/**
 * The Redis helpers moved to src/redis/ (everyone's leaf); the re-exports stay for src/cli/worker.ts and gateway.ts,
 * which import them from here.
 */
export * from '../redis/connection.js';
export * from '../redis/group-commit.js';
export * from '../redis/persistence.js';

/** BullMQ refusing a job command because the job, or this worker's lock on it, is gone from Redis. */
export function isJobGoneError(e: unknown): boolean {
  const m = (e as { message?: string } | null)?.message ?? '';
  return /Missing key for job|Missing lock for job|Lock mismatch for job/i.test(m);
}
