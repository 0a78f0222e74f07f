/**
 * The audit log: every write and every replay made over HTTP (replay, retry, mappings reload, STOW through the
 * proxy, login, logout), with who (the credential's name: `api-token`, `token:<name>`, `oidc:<subject id>`), what
 * (method and route pattern, the job or message id, never a patient's data or a DICOM UID), the answer's status,
 * the caller's address, and when. Kept in a Redis stream (`<prefix>:audit`, capped) that every gateway process
 * shares and GET /api/audit reads (jobs:admin), and written as an `audit` log line.
 */
import type { Redis } from 'ioredis';
import type { Middleware } from 'koa';
import type { Logger } from '../observability/log.js';

export interface AuditEntry {
  at: string;
  who: string;
  /** How the caller authenticated: bearer, session, oidc; `anonymous` for a refused login. */
  via: string;
  /** e.g. `POST /api/messages/:id/replay`. */
  action: string;
  /** The route's ids (job or message id), when it has any. */
  target?: string;
  status: number;
  ip: string;
}

const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const MAX_ENTRIES = 100_000;

export class AuditLog {
  readonly key: string;
  constructor(
    private readonly redis: Redis,
    prefix: string,
    private readonly log: Logger,
  ) {
    this.key = `${prefix}:audit`;
  }

  /** Writes the entry to the stream and the log; a Redis failure is logged (the line still carries the entry). */
  async record(e: AuditEntry): Promise<void> {
    this.log.info('audit', { ...e });
    try {
      await this.redis.xadd(this.key, 'MAXLEN', '~', String(MAX_ENTRIES), '*', 'entry', JSON.stringify(e));
    } catch (err) {
      this.log.warn('audit.store-failed', { error: (err as Error).message });
    }
  }

  /** The newest entries first. */
  async list(count: number): Promise<(AuditEntry & { id: string })[]> {
    const rows = await this.redis.xrevrange(this.key, '+', '-', 'COUNT', count);
    return rows.map(([id, fields]) => ({ id, ...(JSON.parse(fields[1] ?? '{}') as AuditEntry) }));
  }
}

/** Records every request with a write method, after it is answered, whoever made it and whatever the outcome. */
export function auditWrites(audit: AuditLog): Middleware {
  return async (ctx, next) => {
    if (!WRITE_METHODS.has(ctx.method)) return next();
    try {
      await next();
    } finally {
      const user = ctx.state.user as { who?: string; via?: string } | undefined;
      const route = (ctx as { _matchedRoute?: string | RegExp })._matchedRoute;
      const action = `${ctx.method} ${typeof route === 'string' ? route : ctx.path.startsWith('/dicom-web') ? '/dicom-web (STOW-RS)' : 'unrouted'}`;
      const params = (ctx as { params?: Record<string, string> }).params ?? {};
      const target = Object.values(params).filter((v) => /^[\w.:-]{1,128}$/.test(v) && !/^[0-9.]+$/.test(v))[0];
      await audit.record({
        at: new Date().toISOString(),
        who: user?.who ?? 'anonymous',
        via: user?.via ?? 'none',
        action,
        target,
        status: ctx.status,
        ip: ctx.ip,
      });
    }
  };
}
