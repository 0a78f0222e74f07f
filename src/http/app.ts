import Router from '@koa/router';
import type { Redis } from 'ioredis';
import Koa from 'koa';
import type { Config } from '../config/index.js';
import type { Logger } from '../observability/log.js';
import { MappingsError } from '../orders/mappings.js';
import type { MessageKind } from '../orders/store.js';
import { AuditLog, auditWrites } from './audit.js';
import type { AuthOptions } from './auth.js';
import { authStores } from './auth-limits.js';
import type { HttpDeps } from './deps.js';
import { dicomWebProxy } from './dicomweb-proxy.js';
import { authGate } from './gate.js';
import { securityHeaders } from './headers.js';
import { OidcVerifier } from './oidc.js';
import { opsRoutes } from './ops.js';
import { viewerRoutes } from './viewer.js';
import { sendErrorPage, webPages } from './web/pages.js';

export type { HttpDeps };

const KINDS: MessageKind[] = ['dead-letter', 'ignored'];
const JOB_STATES = ['waiting', 'active', 'delayed', 'prioritized', 'completed', 'failed'] as const;
type JobState = (typeof JOB_STATES)[number];

function intParam(v: unknown, def: number, max: number): number {
  const n = Number(v);
  return Number.isInteger(n) && n >= 0 ? Math.min(n, max) : def;
}

/** The gate's auth: the API tokens with their permissions, plus the OIDC verifier (one key cache) when configured. */
export function authOptions(config: Config, apiToken: string, log?: Logger, redis?: Redis): AuthOptions {
  const a = config.access;
  return {
    // Server-side sessions and the failed-sign-in limits, in Redis (auth-limits.ts, sessions.ts).
    ...(redis ? authStores(config, redis, log) : {}),
    apiToken,
    apiTokenPermissions: a?.apiTokenPermissions,
    tokens: a?.tokens,
    oidcRoles: a?.oidcRoles,
    log,
    oidc: config.oidc ? new OidcVerifier(config.oidc, { log }) : undefined,
  };
}

/** Every router, in the order they are mounted behind the gate; routes match case-sensitively (gate.ts). */
export function appRouters(deps: HttpDeps & { auth: AuthOptions }, audit: AuditLog): Router[] {
  return [...coreRoutes(deps, audit), opsRoutes(deps), dicomWebProxy(deps), viewerRoutes(deps), webPages(deps)];
}

export function createApp(input: HttpDeps): Koa {
  const deps = { ...input, auth: input.auth ?? authOptions(input.config, input.apiToken, input.log, input.redis) };
  const audit = new AuditLog(deps.redis, deps.config.redisPrefix, deps.log);
  const app = new Koa();

  app.use(async (ctx, next) => {
    const started = performance.now();
    try {
      await next();
    } catch (e) {
      const err = e as { status?: number; expose?: boolean; message: string };
      const status = err.status ?? 500;
      const message = status >= 500 ? 'internal error' : err.message;
      const browser = !/^\/(api|dicom-web)(\/|$)/.test(ctx.path) && ctx.accepts('json', 'html') === 'html';
      if (browser) sendErrorPage(ctx, status, status >= 500 ? 'Something went wrong on the server; the error is logged. Try again shortly.' : message);
      else {
        ctx.status = status;
        ctx.body = { error: message };
      }
      if (ctx.status >= 500) deps.log.error('http.error', { path: ctx.path, error: err.message });
    }
    deps.log.debug('http.request', { method: ctx.method, path: ctx.path, status: ctx.status, ms: Math.round(performance.now() - started) });
  });

  app.use(securityHeaders(deps.config.publicUrl));
  // The audit log sees refused writes too (who: anonymous), so it sits before the gate.
  app.use(auditWrites(audit));
  app.use(authGate({ auth: deps.auth, metricsOpen: deps.config.metricsOpen }));
  for (const router of appRouters(deps, audit)) app.use(router.routes()).use(router.allowedMethods());
  return app;
}

/** /health (open) and the admin API under /api: jobs, messages, replay, mappings reload, the audit log. */
function coreRoutes(deps: HttpDeps, audit: AuditLog): Router[] {
  const open = new Router({ sensitive: true });
  const api = new Router({ prefix: '/api', sensitive: true });
  open.get('/health', async (ctx) => {
    let redis = 'down';
    try {
      redis = (await deps.redis.ping()) === 'PONG' ? 'up' : 'down';
    } catch {
      redis = 'down';
    }
    ctx.status = redis === 'up' ? 200 : 503;
    ctx.body = { status: redis === 'up' ? 'ok' : 'degraded', redis };
  });

  api.get('/jobs', async (ctx) => {
    const state = String(ctx.query.state ?? 'waiting') as JobState;
    if (!JOB_STATES.includes(state)) return ctx.throw(400, `state must be one of ${JOB_STATES.join(', ')}`);
    const offset = intParam(ctx.query.offset, 0, 1_000_000);
    const limit = intParam(ctx.query.limit, 50, 500) || 50;
    const [jobs, counts] = await Promise.all([deps.queue.getJobs([state], offset, offset + limit - 1), deps.queue.getJobCounts()]);
    // A waiting or retrying job's last error (with its peer: pacs, fhir, emr-oru) from the worker's checkpoint.
    const cps = await deps.states.getMany(jobs.map((j) => j.id ?? ''));
    ctx.body = {
      counts,
      items: jobs.map((j, i) => ({
        id: j.id,
        state,
        receivedAt: j.data.receivedAt,
        orderControl: j.data.order.orderControl,
        procedure: j.data.order.procedure.code,
        priority: j.data.order.priority,
        sender: j.data.order.sender,
        attemptsMade: j.attemptsMade,
        failedReason: j.failedReason,
        stage: cps[i]?.stage,
        lastError: cps[i]?.lastError ?? null,
      })),
    };
  });

  api.get('/jobs/:id', async (ctx) => {
    const job = await deps.queue.getJob(ctx.params.id ?? '');
    const record = await deps.store.getOrder(ctx.params.id ?? '');
    if (!job && !record) return ctx.throw(404, 'no such job');
    ctx.body = {
      id: ctx.params.id,
      state: job ? await job.getState() : 'removed',
      status: record?.status,
      history: record?.history ?? [],
      order: job?.data.order ?? record?.order,
      attemptsMade: job?.attemptsMade,
      failedReason: job?.failedReason,
    };
  });

  api.get('/messages', async (ctx) => {
    const kind = String(ctx.query.kind ?? 'dead-letter') as MessageKind;
    if (!KINDS.includes(kind)) return ctx.throw(400, `kind must be one of ${KINDS.join(', ')}`);
    const offset = intParam(ctx.query.offset, 0, 1_000_000);
    const limit = intParam(ctx.query.limit, 50, 500) || 50;
    ctx.body = await deps.store.listMessages(kind, offset, limit);
  });

  api.get('/messages/:id', async (ctx) => {
    const msg = await deps.store.getMessage(ctx.params.id ?? '');
    if (!msg) return ctx.throw(404, 'no such message');
    ctx.body = msg;
  });

  /** Re-runs intake on a stored message with the current mappings (after an operator fixed them). */
  api.post('/messages/:id/replay', async (ctx) => {
    const id = ctx.params.id ?? '';
    const msg = await deps.store.getMessage(id);
    if (!msg) return ctx.throw(404, 'no such message');
    const result = await deps.intake.handle(Buffer.from(msg.raw, 'utf8'), { remoteAddress: `replay:${msg.remoteAddress}`, replay: true });
    if (result.outcome === 'error') return ctx.throw(503, result.reason);
    await deps.store.recordReplay(id, { at: new Date().toISOString(), ackCode: result.ackCode, outcome: result.outcome });
    deps.log.info('message.replayed', { id, outcome: result.outcome, ack: result.ackCode });
    ctx.body = { id, ackCode: result.ackCode, outcome: result.outcome, jobIds: result.jobIds, reason: result.reason };
  });

  /** After editing mappings: validate and load them without a restart (the old ones stay on error). */
  api.post('/mappings/reload', async (ctx) => {
    try {
      deps.reloadMappings();
    } catch (e) {
      if (!(e instanceof MappingsError)) throw e;
      ctx.status = 400;
      ctx.body = { error: 'invalid mappings; the previous mappings stay in force', problems: e.problems };
      return;
    }
    ctx.body = { reloaded: true };
  });

  /** The audit log, newest first (jobs:admin, by the gate). */
  api.get('/audit', async (ctx) => {
    ctx.body = { items: await audit.list(intParam(ctx.query.limit, 100, 1000) || 100) };
  });

  return [open, api];
}
