/** BullMQ refusing a job command because the job, or this worker's lock on it, is gone from Redis. */
export function isJobGoneError(e: unknown): boolean {
  const m = (e as { message?: string } | null)?.message ?? '';
  return /Missing key for job|Missing lock for job|Lock mismatch for job/i.test(m);
}
