/**
 * Operations: GET /ready (open; why the gateway is or is not ready), GET /metrics (Prometheus text, bearer token
 * unless CTGATE_METRICS_OPEN), and the admin job API under /api (bearer, per route): a job's checkpoint, and the retry of a
 * failed job. Mounted by app.ts before its own /api router; each route here carries its own auth, so paths this
 * router does not serve fall through to app.ts's routes untouched.
 */
import Router from '@koa/router';
import type { Middleware } from 'koa';
import { type JobState, STAGES, type StageName } from '../jobs/job-state.js';
import { EXPOSITION_CONTENT_TYPE, type MetricFamily, renderExposition, type ScalarFamily } from '../observability/exposition.js';
import { checkReadiness, ModelFilesCheck } from '../observability/readiness.js';
import { readSharedMetrics, recorderFor } from '../observability/recorder.js';
import { authOf, requireBearer } from './auth.js';
import type { RouterDeps } from './deps.js';

const QUEUE_STATES = ['waiting', 'active', 'delayed', 'prioritized', 'waiting-children', 'completed', 'failed'] as const;

export function opsRoutes(deps: RouterDeps<'config' | 'queue' | 'redis' | 'states'>): Router {
  const router = new Router({ sensitive: true });
  const auth = requireBearer(authOf(deps));
  const models = new ModelFilesCheck(deps.config.worker.modelsManifest);

  router.get('/ready', async (ctx) => {
    const r = await checkReadiness({ redis: deps.redis, pacs: deps.config.pacs, fhir: deps.config.fhir, models, requireAof: deps.config.redisRequireAof });
    ctx.status = r.ready ? 200 : 503;
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { status: r.ready ? 'ready' : 'not ready', failed: r.failed, checks: r.checks };
  });

  const metricsAuth: Middleware = deps.config.metricsOpen ? (_ctx, next) => next() : auth;
  router.get('/metrics', metricsAuth, async (ctx) => {
    const t0 = performance.now();
    const families: MetricFamily[] = [];
    let redisUp = 1;
    try {
      // This process's own increments first, so a scrape right after an order already shows it.
      await recorderFor(deps.redis)
        ?.flush()
        .catch(() => {});
      const [shared, counts] = await Promise.all([readSharedMetrics(deps.redis, deps.config.redisPrefix), deps.queue.getJobCounts(...QUEUE_STATES)]);
      families.push(...shared);
      families.push({
        name: 'ctgate_queue_jobs',
        help: 'Screening jobs in the queue by state, read at scrape time.',
        type: 'gauge',
        samples: QUEUE_STATES.map((state) => ({ labels: { state }, value: counts[state] ?? 0 })),
      });
    } catch (e) {
      redisUp = 0;
      deps.log.warn('metrics.redis-unavailable', { error: (e as Error).message });
    }
    const gauge = (name: string, help: string, value: number): ScalarFamily => ({ name, help, type: 'gauge', samples: [{ labels: {}, value }] });
    families.push(gauge('ctgate_redis_up', 'Whether this scrape could read the shared metrics and queue from Redis (1) or not (0).', redisUp));
    families.push(gauge('ctgate_scrape_duration_seconds', 'Time this scrape took to collect the metrics.', Math.round(performance.now() - t0) / 1000));
    ctx.set('Cache-Control', 'no-store');
    ctx.type = EXPOSITION_CONTENT_TYPE;
    ctx.body = renderExposition(families);
  });

  /** A job's checkpoint: the stage it is at, per-stage attempts and timings, outputs (UIDs, verdict), the last error. */
  router.get('/api/jobs/:id/progress', auth, async (ctx) => {
    const id = ctx.params.id ?? '';
    const [job, checkpoint] = await Promise.all([deps.queue.getJob(id), deps.states.get(id)]);
    if (!job && !checkpoint) return ctx.throw(404, `no job ${id}`);
    ctx.body = {
      jobId: id,
      queueState: job ? await job.getState() : 'removed',
      progress: job?.progress ?? null,
      /** The last error of the stage the job is at, with its peer (pacs, fhir, emr-oru); null when none. */
      lastError: checkpoint?.lastError ?? null,
      /** null until a worker has started the job. */
      checkpoint: checkpoint satisfies JobState | null,
    };
  });

  /**
   * Retries a failed job: from its checkpoint (the stage that failed, with a fresh attempt budget), or with
   * `?from=start` from the first stage (the checkpoint and the stored analysis are dropped first). When the job
   * restarts at wait-for-study, the study deadline counts from the retry, since the order's deadline has passed.
   */
  router.post('/api/jobs/:id/retry', auth, async (ctx) => {
    const id = ctx.params.id ?? '';
    const from = ctx.query.from === undefined ? 'checkpoint' : String(ctx.query.from);
    if (from !== 'start' && from !== 'checkpoint') return ctx.throw(400, 'from must be start or checkpoint');
    const job = await deps.queue.getJob(id);
    if (!job) return ctx.throw(404, `no job ${id}`);
    const state = await job.getState();
    if (state !== 'failed') return ctx.throw(409, `job ${id} is ${state}; only a failed job can be retried`);
    const checkpoint = await deps.states.get(id);
    let stage: StageName | 'done' | 'cancelled' = STAGES[0];
    if (from === 'start') {
      await deps.states.reset(id);
    } else if (checkpoint) {
      stage = checkpoint.stage;
      if (stage !== 'done' && stage !== 'cancelled') {
        checkpoint.attempts[stage] = 0;
        checkpoint.updatedAt = new Date().toISOString();
        await deps.states.put(checkpoint);
      }
    }
    const deadlineRestarted = stage === 'wait-for-study';
    if (deadlineRestarted) await job.updateData({ ...job.data, receivedAt: new Date().toISOString() });
    try {
      await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
    } catch (e) {
      // Another call retried it first, or it was removed meanwhile.
      return ctx.throw(409, `job ${id} could not be retried: ${(e as Error).message}`);
    }
    const now = await job.getState();
    deps.log.info('job.retried', { jobId: id, from, stage, deadlineRestarted });
    ctx.body = { id, retried: true, from, stage, deadlineRestarted, state: now };
  });

  return router;
}
