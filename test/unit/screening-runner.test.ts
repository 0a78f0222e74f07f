/**
 * ScreeningRunner, built as the worker builds it but on in-memory stand-ins (test/helpers/stage-fakes.ts): fake
 * result writers and a fake PACS, no Redis, no peers, no models run (the jobs start past analyze, or fail before).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UnrecoverableError } from 'bullmq';
import type { DicomWebClient } from '../../src/dicomweb/client.js';
import { DEFAULT_SERIES_RULES } from '../../src/imaging/series-selection.js';
import type { ModelRegistry } from '../../src/inference/model-registry.js';
import type { AnalysisCheckpoint } from '../../src/jobs/analysis-codec.js';
import { type JobState, newJobState, STAGES, type StageName } from '../../src/jobs/job-state.js';
import { type ResultWriters, ScreeningRunner, type ScreeningSettings } from '../../src/jobs/screening.js';
import { checkPipeline } from '../../src/jobs/stage-runner.js';
import { screeningStages } from '../../src/jobs/stages/pipeline.js';
import type { ResultContext } from '../../src/results/context.js';
import { syntheticResult } from '../helpers/result-context.js';
import { FakeJob, MemoryCheckpoints, MemoryOrders } from '../helpers/stage-fakes.js';

const SETTINGS: ScreeningSettings = {
  studyWait: { pollMs: 10, stableMs: 10, checkMs: 100, sleepMs: 100, deadlineMs: 60_000 },
  stageTimeoutMs: 5000,
  stageAttempts: 3,
  backoffMs: 100,
  backoffMaxMs: 1000,
  retrieveConcurrency: 1,
  keySliceCount: 3,
};

const silent = { debug() {}, info() {}, warn() {}, error() {} };

/** A PACS that lists the study `studyUid` with no series at all. */
const emptyPacs = {
  searchStudies: async () => [],
  searchSeries: async () => [],
  searchInstances: async () => [],
  seriesMetadata: async () => [],
} as unknown as DicomWebClient;

function build(o: { writers?: ResultWriters; settings?: Partial<ScreeningSettings>; pacs?: DicomWebClient } = {}) {
  const states = new MemoryCheckpoints();
  const orders = new MemoryOrders();
  const runner = new ScreeningRunner({
    states,
    orders,
    pacs: o.pacs ?? emptyPacs,
    models: {} as ModelRegistry,
    seriesRules: DEFAULT_SERIES_RULES,
    writers: o.writers ?? {},
    links: (jobId) => ({ dicomWebBaseUrl: 'http://ctgate/dicom-web', resultPageUrl: `http://ctgate/jobs/${jobId}` }),
    settings: { ...SETTINGS, ...o.settings },
    log: silent,
  });
  return { states, orders, runner };
}

/** A job checkpointed at `stage` with the outputs of the stages before it and a synthetic analysis. */
function seededAt(states: MemoryCheckpoints, stage: StageName, extra: Partial<JobState> = {}): AnalysisCheckpoint {
  const { context } = syntheticResult();
  const { order: _order, ...analysis } = context;
  const state: JobState = {
    ...newJobState('j1'),
    stage,
    outputs: {
      'wait-for-study': { studyInstanceUid: context.study.studyInstanceUid, instances: 32, matchedBy: 'accessionNumber' },
      retrieve: { seriesInstanceUid: context.series.seriesInstanceUid, slices: 32, reason: 'axial CT' },
      analyze: { verdict: 'positive', probability: 0.93, models: ['m@1'], executionProvider: 'cpu' },
    },
    ...extra,
  };
  states.seed(state, { ...analysis, jobId: 'j1' });
  return analysis;
}

describe('ScreeningRunner on in-memory stand-ins', () => {
  it('runs the stages job-state.ts names, in that order, and its pipeline is wired right', () => {
    const stages = screeningStages({} as never);
    assert.deepEqual(
      stages.map((s) => s.name),
      [...STAGES],
    );
    assert.doesNotThrow(() => checkPipeline(stages));
  });

  it('resumed at write-seg: the writers get the checkpointed analysis and the order, in order, and the job completes', async () => {
    const calls: string[] = [];
    let fhirGotSeg: unknown;
    const seen: ResultContext[] = [];
    const writers: ResultWriters = {
      seg: async (ctx) => {
        calls.push('seg');
        seen.push(ctx);
        return { seriesInstanceUid: '1.2.3.4', sopInstanceUid: '1.2.3.4.1', frames: 2, srSeriesInstanceUid: '1.2.3.5' };
      },
      fhir: async (ctx, seg) => {
        calls.push('fhir');
        seen.push(ctx);
        fhirGotSeg = seg;
        return { diagnosticReportId: 'dr-1', resources: 4 };
      },
      oru: async (ctx) => {
        calls.push('oru');
        seen.push(ctx);
        return { controlId: 'C1', ackCode: 'AA', attempts: 1 };
      },
    };
    const t = build({ writers });
    seededAt(t.states, 'write-seg');
    const job = new FakeJob('j1');
    const r = await t.runner.run(job);
    assert.deepEqual(calls, ['seg', 'fhir', 'oru']);
    assert.equal(r.status, 'completed');
    assert.equal(r.verdict, 'positive');
    assert.equal(r.segSeriesInstanceUid, '1.2.3.4');
    assert.equal(r.srSeriesInstanceUid, '1.2.3.5');
    assert.equal(r.diagnosticReportId, 'dr-1');
    assert.equal(r.oruAckCode, 'AA');
    assert.deepEqual(r.skipped, {});
    assert.deepEqual(fhirGotSeg, { seriesInstanceUid: '1.2.3.4', sopInstanceUid: '1.2.3.4.1', frames: 2, srSeriesInstanceUid: '1.2.3.5' });
    for (const ctx of seen) {
      assert.equal(ctx.jobId, 'j1');
      assert.equal(ctx.order.placerOrderNumber, job.data.order.placerOrderNumber);
      assert.equal(ctx.patientIdentityWarning, undefined);
    }
    assert.equal(t.states.saved('j1')?.stage, 'done');
  });

  it('states a patient identity warning in every result', async () => {
    const seen: ResultContext[] = [];
    const t = build({
      writers: {
        fhir: async (ctx) => {
          seen.push(ctx);
          return { diagnosticReportId: 'dr-1', resources: 1 };
        },
      },
    });
    seededAt(t.states, 'write-fhir');
    const s = t.states.saved('j1') as JobState;
    const warned = { outcome: 'mismatch', action: 'warn', rule: 'r', compared: ['PatientID'], differ: ['PatientName'], notComparable: [] } as const;
    s.outputs.retrieve = {
      ...(s.outputs.retrieve as NonNullable<JobState['outputs']['retrieve']>),
      patientIdentity: { ...warned, compared: [...warned.compared], differ: [...warned.differ], notComparable: [] },
    };
    t.states.seed(s);
    await t.runner.run(new FakeJob('j1'));
    assert.deepEqual(seen[0]?.patientIdentityWarning, { differ: ['PatientName'], notComparable: [] });
  });

  it('records each missing writer as skipped', async () => {
    const t = build();
    seededAt(t.states, 'write-seg');
    const r = await t.runner.run(new FakeJob('j1'));
    assert.deepEqual(r.skipped, {
      'write-seg': 'no PACS writer configured',
      'write-fhir': 'CTGATE_FHIR_BASE_URL is not set',
      'send-oru': 'CTGATE_ORU_HOST is not set',
    });
  });

  it('holds an ORU whose send a dead worker started (deliveryUnknown), and resends it with resend', async () => {
    let sent = 0;
    const oru: ResultWriters['oru'] = async () => {
      sent++;
      return { controlId: 'C1', ackCode: 'AA', attempts: 1 };
    };
    const hold = build({ writers: { oru } });
    seededAt(hold.states, 'send-oru', { oruSending: { controlId: 'C1', at: '2026-12-04T10:00:00.000Z' } });
    await hold.runner.run(new FakeJob('j1'));
    const held = hold.states.saved('j1')?.outputs['send-oru'];
    assert.equal(sent, 0);
    assert.ok(held && 'ackCode' in held && held.ackCode === 'unknown' && /check the EMR for MSH-10 C1/.test(held.deliveryUnknown ?? ''));
    assert.equal(hold.states.saved('j1')?.oruSending, undefined);

    const resend = build({ writers: { oru }, settings: { oruUnconfirmed: 'resend' } });
    seededAt(resend.states, 'send-oru', { oruSending: { controlId: 'C1', at: '2026-12-04T10:00:00.000Z' } });
    await resend.runner.run(new FakeJob('j1'));
    const again = resend.states.saved('j1')?.outputs['send-oru'];
    assert.equal(sent, 1);
    assert.ok(again && 'possibleDuplicate' in again && again.possibleDuplicate === true);
  });

  it('fails wait-for-study for good once the order is past its deadline', async () => {
    const t = build({ settings: { studyWait: { ...SETTINGS.studyWait, deadlineMs: 60_000 } } });
    const job = new FakeJob('j1', { receivedAt: new Date(Date.now() - 120_000).toISOString() });
    await assert.rejects(
      t.runner.run(job),
      (e: Error) => e instanceof UnrecoverableError && /^wait-for-study: the study did not arrive in the PACS within 1 min/.test(e.message),
    );
    assert.equal(t.states.saved('j1')?.lastError?.stage, 'wait-for-study');
  });

  it('fails retrieve for good, with the reason, when no series fits the selection rules', async () => {
    const t = build();
    seededAt(t.states, 'retrieve');
    await assert.rejects(t.runner.run(new FakeJob('j1')), (e: Error) => /^retrieve: no series fits the selection rules: /.test(e.message));
    assert.equal(t.states.saved('j1')?.lastError?.retryable, false);
    assert.equal(t.states.saved('j1')?.lastError?.peer, 'internal');
  });

  it('stops at a cancel request before the next stage and records it', async () => {
    const t = build();
    seededAt(t.states, 'write-seg');
    t.orders.statuses.set('j1', 'cancel-requested');
    const r = await t.runner.run(new FakeJob('j1'));
    assert.equal(r.status, 'cancelled');
    assert.deepEqual(t.orders.cancelled, [{ jobId: 'j1', note: 'stopped before stage write-seg' }]);
  });
});
