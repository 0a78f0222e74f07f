/** What a ScreeningRunner and its stages (stages/*) are built from: peers, writers, settings. */
import type { DicomWebClient } from '../dicomweb/client.js';
import type { PatientIdentityRule } from '../domain/patient-identity.js';
import type { SeriesRules } from '../imaging/series-selection.js';
import type { ModelRegistry } from '../inference/model-registry.js';
import type { Logger } from '../observability/log.js';
import type { MetricsSink } from '../observability/recorder.js';
import type { ResultContext, ResultLinks } from '../results/context.js';
import type { StudySource } from '../study-sources/source.js';
import type { AnalysisReuseStore } from './analysis-reuse.js';
import type { StageOutputs } from './job-state.js';
import type { CheckpointStore } from './stage-operator.js';
import type { StageRunnerDeps, StageRunnerSettings } from './stage-runner.js';

export interface ResultWriters {
  seg?: (ctx: ResultContext) => Promise<NonNullable<StageOutputs['write-seg']>>;
  fhir?: (ctx: ResultContext, seg: StageOutputs['write-seg']) => Promise<NonNullable<StageOutputs['write-fhir']>>;
  oru?: (ctx: ResultContext, fhir: StageOutputs['write-fhir']) => Promise<NonNullable<StageOutputs['send-oru']>>;
}

export interface ScreeningSettings extends StageRunnerSettings {
  studyWait: {
    /** First wait between PACS polls within one check. */
    pollMs: number;
    /** The instance count must be unchanged this long. */
    stableMs: number;
    /** How long one check polls before the job goes back to sleep in the queue. */
    checkMs: number;
    /** Sleep in the queue between checks. */
    sleepMs: number;
    /** Give up this long after the order was received. */
    deadlineMs: number;
  };
  retrieveConcurrency: number;
  keySliceCount: number;
  /**
   * A job resumed at send-oru after its worker died between sending the ORU and recording the ACK: 'hold' (default)
   * records deliveryUnknown and does not resend; 'resend' sends it once more with the same MSH-10 (possibleDuplicate).
   */
  oruUnconfirmed?: 'hold' | 'resend';
  /**
   * Longest sleep between looks while another job analyses the same series (the wait grows from 500 ms to this).
   * Default 10 s.
   */
  reuseWaitMaxMs?: number;
}

export interface ScreeningDeps extends StageRunnerDeps {
  states: CheckpointStore;
  /** The PACS over DICOMweb: where the results go (and the study source when studySource is absent). */
  pacs: DicomWebClient;
  /**
   * Where wait-for-study and retrieve find and read the order's study (src/study-sources): the PACS over DICOMweb, or
   * the studies received by C-STORE. Absent: the PACS over DICOMweb (deps.pacs).
   */
  studySource?: StudySource;
  models: ModelRegistry;
  seriesRules: SeriesRules;
  writers: ResultWriters;
  links: (jobId: string) => ResultLinks;
  settings: ScreeningSettings;
  log: Logger;
  /** Stage durations, model time, outcomes and peer errors (shared through Redis; see observability/recorder.ts). */
  metrics?: MetricsSink;
  /** Shares the analysis of an unchanged series across orders (jobs/analysis-reuse.ts); absent: every order runs the models. */
  reuse?: AnalysisReuseStore;
  /**
   * The patient identity rule for a sender (MSH-4), from the order mappings (Mappings.patientIdentity); absent: the
   * default rule (PatientID, issuer where both sides have one, name and birth date; enforced).
   */
  patientIdentity?: (facility: string) => PatientIdentityRule;
}
