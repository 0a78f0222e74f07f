/**
 * The stage runner (src/jobs/stage-runner.ts) with trivial operators, an in-memory checkpoint store, in-memory order
 * status and a fake job handle: no Redis, no peers.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DelayedError, UnrecoverableError } from 'bullmq';
import type { AnalysisCheckpoint } from '../../src/jobs/analysis-codec.js';
import { LockLostError, newJobState, type StageName } from '../../src/jobs/job-state.js';
import { JobGoneError } from '../../src/jobs/stage-errors.js';
import type { Operator, StageContext, StageDone } from '../../src/jobs/stage-operator.js';
import { checkPipeline, StageRunner, type StageRunnerSettings } from '../../src/jobs/stage-runner.js';
import { FakeJob, MemoryCheckpoints, MemoryOrders, redisDown } from '../helpers/stage-fakes.js';

const SETTINGS: StageRunnerSettings = { stageTimeoutMs: 5000, stageAttempts: 3, backoffMs: 100, backoffMaxMs: 1000, redisOutageMs: 300 };
const ANALYSIS = { jobId: 'j1', marker: 'analysis' } as unknown as AnalysisCheckpoint;

/** An operator named `name` that logs its run to `events` and gives `done` (or what `run` gives). */
function op(
  name: StageName,
  events: string[],
  o: Partial<Pick<Operator, 'takes' | 'gives' | 'countsAttempts' | 'timeout' | 'recover'>> & { run?: (ctx: StageContext<never>) => Promise<StageDone> } = {},
): Operator {
  return {
    name,
    takes: o.takes ?? [],
    gives: o.gives ?? [],
    reads: [],
    ...(o.countsAttempts !== undefined ? { countsAttempts: o.countsAttempts } : {}),
    ...(o.timeout ? { timeout: o.timeout } : {}),
    ...(o.recover ? { recover: o.recover } : {}),
    async run(ctx) {
      events.push(`run:${name}`);
      return o.run ? o.run(ctx as StageContext<never>) : {};
    },
  };
}

function setup(ops: (events: string[]) => Operator[], settings: Partial<StageRunnerSettings> = {}) {
  const events: string[] = [];
  const states = new MemoryCheckpoints(events);
  const orders = new MemoryOrders();
  const job = new FakeJob('j1');
  const runner = new StageRunner(ops(events), { states, orders, settings: { ...SETTINGS, ...settings }, log: silent });
  return { events, states, orders, job, runner };
}

const silent = { debug() {}, info() {}, warn() {}, error() {} };

describe('stage runner', () => {
  it('runs the stages in order and checkpoints the next stage after each', async () => {
    const t = setup((ev) => [op('wait-for-study', ev), op('retrieve', ev), op('analyze', ev)]);
    const state = await t.runner.run(t.job, 'tok');
    assert.equal(state.stage, 'done');
    assert.ok(state.finishedAt);
    const runsAndStageCheckpoints = t.events.filter((e) => e.startsWith('run:') || /^put:(retrieve|analyze|done)\b/.test(e));
    assert.deepEqual(dedupeRuns(runsAndStageCheckpoints), ['run:wait-for-study', 'put:retrieve', 'run:retrieve', 'put:analyze', 'run:analyze', 'put:done']);
    assert.deepEqual(state.attempts, { 'wait-for-study': 1, retrieve: 1, analyze: 1 });
    assert.deepEqual(Object.keys(state.timingsMs), ['wait-for-study', 'retrieve', 'analyze']);
    assert.equal(t.job.progress.at(-1)?.percent, 100);
  });

  it('records each stage output in the checkpoint', async () => {
    const t = setup((ev) => [
      op('wait-for-study', ev, { run: async () => ({ output: { studyInstanceUid: '1.2', instances: 3, matchedBy: 'accessionNumber' } }) }),
    ]);
    const state = await t.runner.run(t.job);
    assert.equal(state.outputs['wait-for-study']?.studyInstanceUid, '1.2');
    assert.equal(t.states.saved('j1')?.outputs['wait-for-study']?.instances, 3);
  });

  it('resumes at the checkpointed stage: finished stages do not run again', async () => {
    const t = setup((ev) => [op('wait-for-study', ev), op('retrieve', ev), op('analyze', ev)]);
    t.states.seed({ ...newJobState('j1'), stage: 'analyze', attempts: { retrieve: 1 } });
    await t.runner.run(t.job);
    assert.deepEqual(
      t.events.filter((e) => e.startsWith('run:')),
      ['run:analyze'],
    );
  });

  it('records lastError and gives the job back with backoff on a retryable failure', async () => {
    const t = setup((ev) => [
      op('retrieve', ev, {
        run: async () => {
          throw Object.assign(new Error('PACS busy'), { retryable: true });
        },
      }),
    ]);
    t.states.seed({ ...newJobState('j1'), stage: 'retrieve', attempts: { retrieve: 1 } });
    const before = Date.now();
    await assert.rejects(t.runner.run(t.job), DelayedError);
    const s = t.states.saved('j1');
    assert.equal(s?.lastError?.message, 'PACS busy');
    assert.equal(s?.lastError?.stage, 'retrieve');
    assert.equal(s?.lastError?.retryable, true);
    assert.equal(s?.attempts.retrieve, 2);
    // backoff for attempt 2: 100 * 2
    assert.ok((t.job.delayedUntil[0] ?? 0) - before >= 200);
  });

  it('fails for good on a permanent failure, or a retryable one on its last attempt', async () => {
    const permanent = setup((ev) => [
      op('wait-for-study', ev, {
        run: async () => {
          throw Object.assign(new Error('no usable series'), { retryable: false });
        },
      }),
    ]);
    await assert.rejects(
      permanent.runner.run(permanent.job),
      (e: Error) => e instanceof UnrecoverableError && e.message === 'wait-for-study: no usable series',
    );
    const last = setup((ev) => [
      op('retrieve', ev, {
        run: async () => {
          throw new Error('still busy');
        },
      }),
    ]);
    last.states.seed({ ...newJobState('j1'), stage: 'retrieve', attempts: { retrieve: 2 } });
    await assert.rejects(last.runner.run(last.job), /retrieve: still busy/);
    assert.equal(last.job.delayedUntil.length, 0);
  });

  it('fails a stage started stageAttempts times without finishing, saying so', async () => {
    const t = setup((ev) => [op('retrieve', ev), op('write-fhir', ev)]);
    t.states.seed({ ...newJobState('j1'), stage: 'write-fhir', attempts: { 'write-fhir': 3 } });
    await assert.rejects(
      t.runner.run(t.job),
      (e: Error) =>
        e instanceof UnrecoverableError && /^write-fhir: the stage was started 3 times without finishing \(the worker died in it each time\)/.test(e.message),
    );
    assert.match(t.states.saved('j1')?.lastError?.message ?? '', /started 3 times without finishing/);
    assert.ok(!t.events.includes('run:write-fhir'));
  });

  it('counts no attempts for a stage that says so', async () => {
    const t = setup((ev) => [op('wait-for-study', ev, { countsAttempts: false })]);
    const s = await t.runner.run(t.job);
    assert.deepEqual(s.attempts, {});
  });

  it('stops before the next stage on a cancel request, marks the order cancelled and releases what the job holds', async () => {
    let released = 0;
    const t = setup((ev) => [
      op('wait-for-study', ev, {
        run: async (ctx) => {
          ctx.onGiveUp(async () => {
            released++;
          });
          t.orders.statuses.set('j1', 'cancel-requested');
          return {};
        },
      }),
      op('retrieve', ev),
    ]);
    const s = await t.runner.run(t.job);
    assert.equal(s.stage, 'cancelled');
    assert.equal(t.states.saved('j1')?.stage, 'cancelled');
    assert.deepEqual(t.orders.cancelled, [{ jobId: 'j1', note: 'stopped before stage retrieve' }]);
    assert.ok(!t.events.includes('run:retrieve'));
    assert.equal(released, 1);
  });

  it('fails a stage attempt that outlasts the stage timeout (retryable)', async () => {
    const t = setup((ev) => [op('analyze', ev, { run: () => new Promise((r) => setTimeout(() => r({}), 500)) })], { stageTimeoutMs: 30 });
    t.states.seed({ ...newJobState('j1'), stage: 'analyze' });
    await assert.rejects(t.runner.run(t.job), DelayedError);
    assert.equal(t.states.saved('j1')?.lastError?.message, 'stage analyze timed out after 30 ms');
  });

  it("leaves an operator with timeout 'none' unbounded, and times the steps of one with 'steps'", async () => {
    const slow = () => new Promise<StageDone>((r) => setTimeout(() => r({}), 60));
    const none = setup((ev) => [op('wait-for-study', ev, { timeout: 'none', run: slow })], { stageTimeoutMs: 30 });
    assert.equal((await none.runner.run(none.job)).stage, 'done');
    const steps = setup((ev) => [op('wait-for-study', ev, { timeout: 'steps', run: (ctx) => ctx.timed(slow()) })], { stageTimeoutMs: 30 });
    await assert.rejects(steps.runner.run(steps.job), DelayedError);
    assert.match(steps.states.saved('j1')?.lastError?.message ?? '', /timed out after 30 ms/);
  });

  it('skips to the stage a stage names, saving the analysis it gives with the checkpoint', async () => {
    let seen: unknown;
    const t = setup((ev) => [
      op('retrieve', ev, { gives: ['series', 'analysis'], run: async () => ({ gives: { analysis: ANALYSIS }, skipTo: 'write-fhir' }) }),
      op('analyze', ev, { takes: ['series'], gives: ['analysis'] }),
      op('write-seg', ev, { takes: ['analysis'] }),
      op('write-fhir', ev, {
        takes: ['analysis'],
        run: async (ctx) => {
          seen = (ctx as unknown as StageContext<'analysis'>).inputs.analysis;
          return {};
        },
      }),
    ]);
    t.states.seed({ ...newJobState('j1'), stage: 'retrieve' });
    const s = await t.runner.run(t.job);
    assert.equal(s.stage, 'done');
    assert.deepEqual(
      t.events.filter((e) => e.startsWith('run:')),
      ['run:retrieve', 'run:write-fhir'],
    );
    assert.equal(seen, ANALYSIS);
    assert.ok(t.events.includes('putWithAnalysis:write-fhir'));
    assert.equal(t.states.analyses.get('j1'), ANALYSIS);
  });

  it('hands values over in memory; after a resume it recovers them (series) or reads the checkpoint (analysis)', async () => {
    const series = { retrieved: { marker: 'volume' } } as never;
    let recovered = 0;
    const inputsSeen: unknown[] = [];
    const pipeline = (ev: string[]) => [
      op('retrieve', ev, {
        gives: ['series'],
        run: async () => ({ gives: { series } }),
        recover: async () => {
          recovered++;
          return series;
        },
      }),
      op('analyze', ev, {
        takes: ['series'],
        gives: ['analysis'],
        run: async (ctx) => {
          inputsSeen.push((ctx as unknown as StageContext<'series'>).inputs.series);
          return { gives: { analysis: ANALYSIS } };
        },
      }),
      op('write-seg', ev, {
        takes: ['analysis'],
        run: async (ctx) => {
          inputsSeen.push((ctx as unknown as StageContext<'analysis'>).inputs.analysis);
          return {};
        },
      }),
    ];
    const fresh = setup(pipeline);
    fresh.states.seed({ ...newJobState('j1'), stage: 'retrieve' });
    await fresh.runner.run(fresh.job);
    assert.equal(recovered, 0);
    assert.deepEqual(inputsSeen, [series, ANALYSIS]);

    inputsSeen.length = 0;
    const resumedAtAnalyze = setup(pipeline);
    resumedAtAnalyze.states.seed({ ...newJobState('j1'), stage: 'analyze' });
    await resumedAtAnalyze.runner.run(resumedAtAnalyze.job);
    assert.equal(recovered, 1);

    inputsSeen.length = 0;
    const resumedAtWrite = setup(pipeline);
    resumedAtWrite.states.seed({ ...newJobState('j1'), stage: 'write-seg' }, ANALYSIS);
    await resumedAtWrite.runner.run(resumedAtWrite.job);
    assert.deepEqual(inputsSeen, [ANALYSIS]);

    const lost = setup(pipeline);
    lost.states.seed({ ...newJobState('j1'), stage: 'write-seg' });
    await assert.rejects(lost.runner.run(lost.job), /write-seg: the analysis checkpoint is missing/);
  });

  it('gives the job back without counting the attempt when a stage asks to wait in the queue', async () => {
    const t = setup((ev) => [op('retrieve', ev, { run: (ctx) => ctx.requeue(1000) })]);
    t.states.seed({ ...newJobState('j1'), stage: 'retrieve', attempts: { retrieve: 1 } });
    await assert.rejects(t.runner.run(t.job), DelayedError);
    assert.equal(t.states.saved('j1')?.attempts.retrieve, 1);
    assert.equal(t.job.delayedUntil.length, 1);
  });

  it('stops without touching the job when its lock is lost (DelayedError, no delay of its own)', async () => {
    const t = setup((ev) => [op('wait-for-study', ev), op('retrieve', ev)]);
    t.states.failPut = () => new LockLostError('j1');
    await assert.rejects(t.runner.run(t.job, 'tok'), DelayedError);
    assert.equal(t.job.delayedUntil.length, 0);
    assert.ok(!t.events.includes('run:retrieve'));
  });

  it('rides out a short Redis outage of a checkpoint read', async () => {
    const t = setup((ev) => [op('wait-for-study', ev)], { redisOutageMs: 5000 });
    let failures = 2;
    t.states.failGet = () => (failures-- > 0 ? redisDown() : undefined);
    assert.equal((await t.runner.run(t.job)).stage, 'done');
  });

  it('gives the job back without counting an attempt when Redis stays away', async () => {
    const t = setup((ev) => [
      op('analyze', ev, {
        run: async (ctx) => {
          t.states.failGet = () => redisDown();
          setTimeout(() => {
            t.states.failGet = undefined;
          }, 1000);
          await ctx.redis('read something', () => t.states.get('other'));
          return {};
        },
      }),
    ]);
    t.states.seed({ ...newJobState('j1'), stage: 'analyze', attempts: { analyze: 1 } });
    await assert.rejects(t.runner.run(t.job), DelayedError);
    assert.equal(t.job.delayedUntil.length, 1);
    const s = t.states.saved('j1');
    assert.equal(s?.attempts.analyze, 1, 'the attempt was taken back');
    assert.equal(s?.lastError, undefined);
    assert.equal(s?.stage, 'analyze');

    const dropped = setup((ev) => [
      op('analyze', ev, {
        run: async () => {
          throw redisDown();
        },
      }),
    ]);
    dropped.states.seed({ ...newJobState('j1'), stage: 'analyze', attempts: { analyze: 1 } });
    await assert.rejects(dropped.runner.run(dropped.job), DelayedError);
    assert.equal(dropped.states.saved('j1')?.attempts.analyze, 1);
  });

  it('stops at the next stage boundary once the job is gone from the queue', async () => {
    const t = setup((ev) => [
      op('wait-for-study', ev, {
        run: async (ctx) => {
          t.job.gone = true;
          ctx.progress(0.5);
          await new Promise((r) => setImmediate(r));
          return {};
        },
      }),
      op('retrieve', ev),
    ]);
    await assert.rejects(t.runner.run(t.job), JobGoneError);
    assert.ok(!t.events.includes('run:retrieve'));
  });

  it('refuses a pipeline whose stage takes a value or reads an output no earlier stage gives', () => {
    const ev: string[] = [];
    assert.throws(() => checkPipeline([op('analyze', ev, { takes: ['series'] })]), /analyze takes series/);
    assert.doesNotThrow(() => checkPipeline([op('retrieve', ev, { gives: ['series'] }), op('analyze', ev, { takes: ['series'] })]));
    const readsLater = { ...op('retrieve', ev), reads: ['write-seg'] as const };
    assert.throws(() => checkPipeline([readsLater, op('write-seg', ev)]), /retrieve reads the output of write-seg/);
  });
});

/** Consecutive duplicates dropped (a stage is checkpointed more than once on its way). */
function dedupeRuns(events: string[]): string[] {
  return events.filter((e, i) => e !== events[i - 1]);
}
