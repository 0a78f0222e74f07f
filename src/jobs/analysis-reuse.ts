/**
 * Reuse of an analysis across orders: the same study ordered again (a duplicate order, a re-order under a new
 * placer number, a second department asking) does not run the models again when the chosen series is unchanged
 * and the model versions are the same. Its results (SEG, key images, SR) are already in the PACS; the later order
 * gets its own FHIR DiagnosticReport and ORU, which say whose analysis they share.
 *
 * Identity of a series: its study and series UIDs and the sorted SOP Instance UIDs of its instances (DICOM gives a
 * changed image a new SOP Instance UID, so an instance added, removed or replaced makes a new fingerprint). The
 * models are named by name@version (the same key the SEG and SR UIDs are derived from), plus ctgate's version and
 * the pipeline settings that change the output.
 *
 * Redis holds, per fingerprint + models: the source job (published once its write-seg stage has stored the
 * objects) and, while a job is analysing that series, a claim with a TTL, so that a burst of orders for one study
 * runs the models once while the others wait for it.
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { ModelRef, ReusedFrom } from '../results/context.js';

/** The fingerprint of a series' content: study, series and sorted SOP Instance UIDs. */
export function seriesFingerprint(studyUid: string, seriesUid: string, sopInstanceUids: readonly string[]): string {
  const h = createHash('sha256').update(`study=${studyUid}\nseries=${seriesUid}\n`);
  for (const uid of [...sopInstanceUids].sort()) h.update(`${uid}\n`);
  return h.digest('hex');
}

/** The analysis key: a series fingerprint with the models and settings that made (or would make) its analysis. */
export function reuseKey(fingerprint: string, models: readonly ModelRef[], settings: { ctgateVersion: string; keySliceCount: number }): string {
  const m = models.map((x) => `${x.name}@${x.version}`).join(',');
  return createHash('sha256').update(`${fingerprint}|models=${m}|ctgate=${settings.ctgateVersion}|key-slices=${settings.keySliceCount}`).digest('hex');
}

export class AnalysisReuseStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly retentionDays: number,
  ) {}

  private key(reuseKey: string, part: 'source' | 'claim'): string {
    return `${this.prefix}:analysis:${reuseKey}:${part}`;
  }

  async source(reuseKey: string): Promise<ReusedFrom | null> {
    const v = await this.redis.get(this.key(reuseKey, 'source'));
    return v ? (JSON.parse(v) as ReusedFrom) : null;
  }

  /**
   * Claims the analysis of a series for a job: true when this job may run it (no claim, or its own), false when
   * another job holds the claim (it is analysing the same series now). The claim expires after ttlMs, so a holder
   * that fails for good without releasing it blocks the others only that long.
   */
  async claim(reuseKey: string, jobId: string, ttlMs: number): Promise<{ claimed: true } | { claimed: false; holder: string }> {
    const k = this.key(reuseKey, 'claim');
    const ok = await this.redis.set(k, jobId, 'PX', ttlMs, 'NX');
    if (ok) return { claimed: true };
    const holder = await this.redis.get(k);
    if (holder === null || holder === jobId) {
      await this.redis.set(k, jobId, 'PX', ttlMs);
      return { claimed: true };
    }
    return { claimed: false, holder };
  }

  /** Publishes a finished analysis (its objects are in the PACS) and drops the job's claim. */
  async publish(reuseKey: string, source: ReusedFrom): Promise<void> {
    await this.redis
      .multi()
      .set(this.key(reuseKey, 'source'), JSON.stringify(source), 'EX', this.retentionDays * 86_400)
      .del(this.key(reuseKey, 'claim'))
      .exec();
  }

  /** Drops a job's claim (its analysis failed for good), if it still holds it. */
  async release(reuseKey: string, jobId: string): Promise<void> {
    const k = this.key(reuseKey, 'claim');
    if ((await this.redis.get(k)) === jobId) await this.redis.del(k);
  }

  /** Forgets a source that can no longer be shared (its checkpoint expired, its objects left the PACS). */
  async forget(reuseKey: string, jobId: string): Promise<void> {
    const cur = await this.source(reuseKey);
    if (cur?.jobId === jobId) await this.redis.del(this.key(reuseKey, 'source'));
  }
}
