/** The screening pipeline: its stages in order (their names are the ones job-state.ts STAGES lists). */
import type { ScreeningDeps } from '../screening-deps.js';
import type { Operator } from '../stage-operator.js';
import { Analyze } from './analyze.js';
import { RetrieveSeries } from './retrieve-series.js';
import { SendOru } from './send-oru.js';
import { StoreDicomResults } from './store-dicom-results.js';
import { WaitForStudy } from './wait-for-study.js';
import { WriteFhirReport } from './write-fhir-report.js';

export function screeningStages(deps: ScreeningDeps): Operator[] {
  return [new WaitForStudy(deps), new RetrieveSeries(deps), new Analyze(deps), new StoreDicomResults(deps), new WriteFhirReport(deps), new SendOru(deps)];
}
