/**
 * analyze: runs the screening models on the retrieved volume and makes the analysis the result writers render
 * (verdict, findings, lesion mask, key images), with the source study's attributes as the PACS holds them.
 *
 * Takes: the series volume (pulled again after a resume, see HANDOVER_FALLBACKS). Reads: wait-for-study's study.
 * Gives: the analysis, saved with this stage's checkpoint.
 */
import { sourceStudyFromJson } from '../../dicomweb/metadata.js';
import { keyImagePng } from '../../inference/key-images.js';
import { runPipeline } from '../../inference/pipeline.js';
import { METRICS } from '../../observability/metrics.js';
import { analysisOf, type SourceStudy } from '../../results/context.js';
import type { AnalysisCheckpoint } from '../analysis-codec.js';
import type { ScreeningDeps } from '../screening-deps.js';
import type { Operator, StageContext, StageDone } from '../stage-operator.js';

/** CT Image Storage: the SOP class the results reference. */
const CT_IMAGE_STORAGE = '1.2.840.10008.5.1.4.1.1.2';

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
      const modelStart = performance.now();
      const result = await runPipeline(retrieved.volume, models, {
        keySliceCount: this.deps.settings.keySliceCount,
        onProgress: (p) => ctx.progress(p.total > 0 ? p.done / p.total : 0, p.stage),
      });
      this.deps.metrics?.observe(METRICS.modelDuration, { provider: result.executionProvider }, (performance.now() - modelStart) / 1000);
      const slices = retrieved.slices;
      const first = slices[0];
      const mask = result.lesionMask;
      const analysis: AnalysisCheckpoint = {
        jobId: job.id,
        study,
        series: {
          seriesInstanceUid: first?.seriesInstanceUid ?? '',
          seriesNumber,
          seriesDescription,
          frameOfReferenceUid: first?.frameOfReferenceUid ?? '',
          sopClassUid: CT_IMAGE_STORAGE,
          slices,
          geometry: retrieved.volume.geometry,
        },
        analysis: analysisOf(result, manifest),
        keyImages:
          mask && result.findings
            ? result.findings.keySlices.map((k) => ({
                sliceIndex: k.index,
                sopInstanceUid: slices[k.index]?.sopInstanceUid ?? '',
                lesionAreaMm2: k.lesionAreaMm2,
                png: keyImagePng(retrieved.volume, k.index, mask),
              }))
            : [],
        links: this.deps.links(job.id),
      };
      const output = {
        verdict: result.verdict,
        category: result.category,
        probability: result.probability,
        models: result.models,
        executionProvider: result.executionProvider,
        ...(result.reason ? { reason: result.reason } : {}),
      };
      return { output, gives: { analysis } };
    } finally {
      lease.release();
    }
  }

  /** The study's attributes as the PACS holds them (the results repeat them exactly); its UID alone if not listed. */
  private async sourceStudy(studyUid: string): Promise<SourceStudy> {
    const studies = await this.deps.pacs.searchStudies({ StudyInstanceUID: studyUid });
    const studyJson = studies.find((s) => sourceStudyFromJson(s).studyInstanceUid === studyUid);
    return studyJson ? sourceStudyFromJson(studyJson) : { studyInstanceUid: studyUid };
  }
}
