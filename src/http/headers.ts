/**
 * Headers every answer carries: `nosniff` and no referrer everywhere; `Cache-Control: no-store` on everything that
 * can hold patient data (the API, the DICOMweb proxy, the pages and their images: everything but the viewer's
 * static files), replacing whatever a handler or the PACS said; HSTS when ctgate is reached over https.
 */
import type { Middleware } from 'koa';

/** The viewer's own files (scripts, styles, fonts) may be cached; its generated config and everything else may not. */
const CACHEABLE = /^\/viewer\/(?!app-config\.js$)[^?]*\.(?:js|mjs|css|wasm|woff2?|ttf|svg|png|ico|json|map)$/;

export function securityHeaders(publicUrl: string): Middleware {
  const https = publicUrl.toLowerCase().startsWith('https:');
  return async (ctx, next) => {
    ctx.set('X-Content-Type-Options', 'nosniff');
    ctx.set('Referrer-Policy', 'no-referrer');
    if (https) ctx.set('Strict-Transport-Security', 'max-age=31536000; includeSubDomains');
    const cacheable = CACHEABLE.test(ctx.path);
    if (!cacheable) ctx.set('Cache-Control', 'no-store');
    await next();
    // A handler may have set its own (key images said max-age=300): patient data is never stored by a cache.
    if (!cacheable && !ctx.res.headersSent) {
      ctx.set('Cache-Control', 'no-store');
      ctx.remove('Expires');
    }
  };
}
