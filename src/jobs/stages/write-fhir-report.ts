/**
 * write-fhir: writes the FHIR resources (ImagingStudy, Observations, DiagnosticReport) with the configured writer.
 *
 * Takes: the analysis. Reads: write-seg's stored series (the report links them). Gives: the report (checkpointed).
 */
import type { ScreeningDeps } from '../screening-deps.js';
import type { Operator, StageContext, StageDone } from '../stage-operator.js';
import { resultContextOf } from './result-context.js';

export class WriteFhirReport implements Operator<'write-fhir', 'analysis', never> {
  readonly name = 'write-fhir';
  readonly takes = ['analysis'] as const;
  readonly gives = [] as const;
  readonly reads = ['wait-for-study', 'retrieve', 'write-seg'] as const;

  constructor(private readonly deps: ScreeningDeps) {}

  async run(ctx: StageContext<'analysis'>): Promise<StageDone<'write-fhir', never>> {
    const write = this.deps.writers.fhir;
    return { output: write ? await write(resultContextOf(ctx), ctx.state.outputs['write-seg']) : { skipped: 'CTGATE_FHIR_BASE_URL is not set' } };
  }
}
