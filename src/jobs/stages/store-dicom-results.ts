/**
 * write-seg: stores the DICOM results beside the CT in the PACS (SEG, key images, KOS, SR) with the configured
 * writer, then publishes the analysis for later orders of the same series (analysis-sharing.ts).
 *
 * Takes: the analysis. Reads: retrieve's analysis claim. Gives: the stored series (checkpointed).
 */
import type { ScreeningDeps } from '../screening-deps.js';
import type { Operator, StageContext, StageDone } from '../stage-operator.js';
import { publishAnalysis } from './analysis-sharing.js';
import { resultContextOf } from './result-context.js';

export class StoreDicomResults implements Operator<'write-seg', 'analysis', never> {
  readonly name = 'write-seg';
  readonly takes = ['analysis'] as const;
  readonly gives = [] as const;
  readonly reads = ['wait-for-study', 'retrieve'] as const;
  /** The write is timed; the publish after it is a Redis call (bounded by the Redis outage limit). */
  readonly timeout = 'steps';

  constructor(private readonly deps: ScreeningDeps) {}

  async run(ctx: StageContext<'analysis'>): Promise<StageDone<'write-seg', never>> {
    const results = resultContextOf(ctx);
    const write = this.deps.writers.seg;
    const output = write ? await ctx.timed(write(results)) : { skipped: 'no PACS writer configured' };
    await ctx.redis('publish analysis', () => publishAnalysis(this.deps, ctx.job, ctx.state, results));
    return { output };
  }
}
