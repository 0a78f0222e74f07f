import { createHash, timingSafeEqual } from 'node:crypto';
import type { Middleware } from 'koa';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Bearer-token auth; compares digests so the check takes the same time whatever the token. */
export function requireBearer(token: string): Middleware {
  const expected = digest(token);
  return async (ctx, next) => {
    const m = /^Bearer\s+(.+)$/i.exec(ctx.get('authorization'));
    if (!m?.[1] || !timingSafeEqual(digest(m[1].trim()), expected)) {
      ctx.set('WWW-Authenticate', 'Bearer realm="ctgate"');
      ctx.status = 401;
      ctx.body = { error: 'unauthorized', message: 'send Authorization: Bearer <CTGATE_API_TOKEN>' };
      return;
    }
    await next();
  };
}
