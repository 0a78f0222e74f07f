/**
 * analyze: runs the screening models on the retrieved volume and makes the analysis the result writers render
 * (verdict, findings, lesion mask, key images), with the source study's attributes as the PACS holds them.
 *
 * Takes: the series volume (pulled again after a resume, see HANDOVER_FALLBACKS). Reads: wait-for-study's study.
 * Gives: the analysis, saved with this stage's checkpoint.
 */
import { SOP_CLASS } from '../../dicom/sop-classes.js';
import type { SourceStudy } from '../../domain/study.js';
import { METRICS } from '../../observability/metric-names.js';
import { analyzeVolume } from '../../results/analyze-volume.js';
import type { AnalysisCheckpoint } from '../analysis-codec.js';
import type { ScreeningDeps } from '../screening-deps.js';
import type { Operator, StageContext, StageDone } from '../stage-operator.js';
import { studySourceOf } from './study-source.js';

export class Analyze implements Operator<'analyze', 'series', 'analysis'> {
  readonly name = 'analyze';
  readonly takes = ['series'] as const;
  readonly gives = ['analysis'] as const;
  readonly reads = ['wait-for-study'] as const;

  constructor(private readonly deps: ScreeningDeps) {}

  async run(ctx: StageContext<'series'>): Promise<StageDone<'analyze', 'analysis'>> {
    const { job, state } = ctx;
    const { retrieved, seriesNumber, seriesDescription } = ctx.inputs.series;
    const study = await this.sourceStudy(state.outputs['wait-for-study']?.studyInstanceUid as string);
    const lease = await this.deps.models.lease();
    try {
      const { models, manifest } = lease.set;
      const first = retrieved.slices[0];
      const { result, analysis, series, keyImages, modelMs } = await analyzeVolume(
        {
          volume: retrieved.volume,
          slices: retrieved.slices,
          seriesInstanceUid: first?.seriesInstanceUid ?? '',
          seriesNumber,
          seriesDescription,
          sopClassUid: SOP_CLASS.ctImage, // the SOP class the results reference
        },
        models,
        manifest,
        { keySliceCount: this.deps.settings.keySliceCount, onProgress: (p) => ctx.progress(p.total > 0 ? p.done / p.total : 0, p.stage) },
      );
      this.deps.metrics?.observe(METRICS.modelDuration, { provider: result.executionProvider }, modelMs / 1000);
      const checkpoint: AnalysisCheckpoint = { jobId: job.id, study, series, analysis, keyImages, links: this.deps.links(job.id) };
      const output = {
        verdict: result.verdict,
        category: result.category,
        probability: result.probability,
        models: result.models,
        executionProvider: result.executionProvider,
        ...(result.reason ? { reason: result.reason } : {}),
      };
      return { output, gives: { analysis: checkpoint } };
    } finally {
      lease.release();
    }
  }

  /**
   * The study's attributes as the study source holds them (the PACS, or the received files; the results repeat them
   * exactly); its UID alone if not listed.
   */
  private sourceStudy(studyUid: string): Promise<SourceStudy> {
    return studySourceOf(this.deps).sourceStudy(studyUid);
  }
}
