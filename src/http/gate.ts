/**
 * The one authentication gate in front of every router. It decides on the request's path in a normalised form
 * (percent-decoding repeated until stable, backslashes and repeated slashes folded, dot segments resolved, `;`
 * parameters dropped, lower case), so no spelling of a path reaches a router without the check that its canonical
 * form needs. Only the probes, the login and the logout are open, and only in their plain spelling; everything
 * else needs a credential (bearer token for /api and /metrics; bearer or the pages' session elsewhere) that carries
 * the permission the method and path need (permissions.ts).
 */
import { posix } from 'node:path';
import type { Middleware } from 'koa';
import { type AuthOptions, requireBearer, requireUser } from './auth.js';
import { refuseAndClose } from './auth-limits.js';
import { type Permission, permissionFor } from './permissions.js';

/** Paths anyone may call: the two probes (no credentials, URLs or patient data in them), the login and logout. */
const OPEN = new Set(['/health', '/ready', '/login', '/logout']);

/**
 * The canonical form of a request path, for deciding what it needs; undefined when it cannot be decoded (the
 * request is refused). Never used to route: the routers see the path as sent and are case-sensitive.
 */
export function normalisePath(raw: string): string | undefined {
  let p = raw;
  for (let round = 0; ; round++) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(p);
    } catch {
      return undefined;
    }
    if (decoded === p) break;
    if (round === 3) return undefined; // encoded four times over: no client does that by accident
    p = decoded;
  }
  p = p.replace(/\\/g, '/').replace(/;[^/]*/g, '');
  if ([...p].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f)) return undefined; // NUL, CR, LF … decoded
  p = posix.normalize(`/${p}`).replace(/\/{2,}/g, '/');
  if (p.length > 1) p = p.replace(/\/+$/, '');
  return p.toLowerCase();
}

/** Open only as written: `/health`, `/health/` (any case, as the routers match), nothing encoded or dotted. */
export function isOpenPath(rawPath: string, metricsOpen: boolean): boolean {
  if (!/^\/[A-Za-z]+\/?$/.test(rawPath)) return false;
  const p = rawPath.replace(/\/$/, '').toLowerCase();
  return OPEN.has(p) || (metricsOpen && p === '/metrics');
}

const bearerOnly = (p: string) => p === '/api' || p.startsWith('/api/') || p === '/metrics';

export interface GateOptions {
  auth: AuthOptions;
  metricsOpen: boolean;
}

/** Koa middleware: authenticates (ctx.state.user) and checks the permission, or answers 400/401/403 itself. */
export function authGate(o: GateOptions): Middleware {
  const bearer = requireBearer(o.auth);
  const user = requireUser(o.auth);
  return async (ctx, next) => {
    if (isOpenPath(ctx.path, o.metricsOpen)) return next();
    // The proxy checks its raw targets itself and names the problem ('bad DICOMweb path'); it still needs the check.
    const path = normalisePath(ctx.path) ?? (ctx.path.startsWith('/dicom-web/') ? '/dicom-web/undecodable' : undefined);
    if (path === undefined) {
      refuseAndClose(ctx);
      ctx.status = 400;
      ctx.body = { error: 'bad request', message: 'the request path cannot be decoded' };
      return;
    }
    const needed: Permission = permissionFor(ctx.method, path);
    const check = bearerOnly(path) ? bearer : user;
    await check(ctx, async () => {
      const u = ctx.state.user as { permissions?: ReadonlySet<Permission> } | undefined;
      if (!u?.permissions?.has(needed)) {
        refuseAndClose(ctx);
        ctx.status = 403;
        ctx.body = { error: 'forbidden', message: `this credential lacks the ${needed} permission` };
        return;
      }
      await next();
    });
  };
}
