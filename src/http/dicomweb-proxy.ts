import http, { type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import https from 'node:https';
import { pipeline } from 'node:stream/promises';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import Router from '@koa/router';
import type { Context } from 'koa';
import type { PacsConfig } from '../config/index.js';
import { authOf, requireUser } from './auth.js';
import type { RouterDeps } from './deps.js';
import { checkTarget, PROXY_PREFIX } from './proxy/paths.js';
import { ReplaceStream } from './proxy/rewrite.js';
import { proxyAgents, staleSocket } from './proxy/upstream.js';

/**
 * /dicom-web: a DICOMweb proxy in front of the configured PACS, so a viewer (OHIF) sees the CT and ctgate's SEG
 * through one ctgate endpoint with ctgate's auth. QIDO-RS and WADO-RS (GET/HEAD) and STOW-RS (POST) pass through,
 * streamed both ways with back-pressure: the upstream response is piped to the client and a STOW body is piped
 * upstream chunk by chunk, so nothing is held beyond a socket buffer and the longest URL being rewritten.
 *
 * - Only the DICOMweb path grammar passes (see proxy/paths.ts); anything else is 400 before it reaches the PACS.
 * - The PACS credentials are added here; the client's Authorization header (ctgate's token) never goes upstream.
 * - The PACS's DICOMweb root in JSON/XML answers (RetrieveURL in STOW answers, BulkDataURI in metadata) and in
 *   Location headers is rewritten to ctgate's public root, as the body streams (proxy/rewrite.ts): no buffering.
 * - Errors: no PACS configured 503; PACS unreachable 502; no answer within CTGATE_PACS_TIMEOUT_MS 504; PACS 401
 *   (ctgate's PACS credentials refused) 502; any other PACS status passes through with its (rewritten) body.
 */

export interface ProxyOptions {
  /** Largest STOW-RS body passed on, in bytes; default config.pacs.proxyMaxStowBytes, else 2 GiB. */
  maxStowBytes?: number;
}

const DEFAULT_MAX_STOW = 2 * 2 ** 30;

/** Request headers a DICOMweb client may need the PACS to see. Everything else stays here (hop-by-hop, auth, cookies). */
const REQUEST_HEADERS = [
  'accept',
  'accept-charset',
  'accept-language',
  'content-type',
  'content-length',
  'range',
  'if-range',
  'if-match',
  'if-none-match',
  'if-modified-since',
  'if-unmodified-since',
  'cache-control',
  'pragma',
];

/** Response headers passed back (Location and Content-Location rewritten). Not hop-by-hop ones, not WWW-Authenticate. */
const RESPONSE_HEADERS = [
  'content-type',
  'content-length',
  'content-encoding',
  'content-range',
  'accept-ranges',
  'etag',
  'last-modified',
  'vary',
  'content-disposition',
  'content-language',
  'retry-after',
  'warning',
  'location',
  'content-location',
];

class ProxyError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    message: string,
  ) {
    super(message);
  }
}

/** The client went away before the PACS answered: nothing to answer. */
class ClientGone extends Error {}

function fail(ctx: Context, status: number, error: string, message: string): void {
  ctx.status = status;
  ctx.body = { error, message };
}

/** The media type, or for multipart its `type` parameter: does the body carry JSON/XML/text worth rewriting? */
function isTextual(contentType: string): boolean {
  const media = (contentType.split(';')[0] ?? '').trim().toLowerCase();
  let inner = media;
  if (media.startsWith('multipart/')) {
    const m = /;\s*type\s*=\s*(?:"([^"]*)"|([^;\s]*))/i.exec(contentType);
    inner = (m?.[1] ?? m?.[2] ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
  }
  return /^text\/|[/+](?:json|xml)$/.test(inner);
}

function basicOrBearer(auth: PacsConfig['auth']): string | undefined {
  if (auth.kind === 'basic') return `Basic ${Buffer.from(`${auth.user}:${auth.password}`).toString('base64')}`;
  if (auth.kind === 'bearer') return `Bearer ${auth.token}`;
  return undefined;
}

export function dicomWebProxy(deps: RouterDeps<'config'>, opts: ProxyOptions = {}): Router {
  const router = new Router({ sensitive: true });
  const pacs = deps.config.pacs;
  const maxStow = opts.maxStowBytes ?? pacs?.proxyMaxStowBytes ?? DEFAULT_MAX_STOW;
  const upstream = pacs ? new URL(pacs.url.replace(/\/+$/, '')) : undefined;
  const upstreamPath = upstream ? upstream.pathname.replace(/\/+$/, '') : '';
  const upstreamBase = upstream ? `${upstream.origin}${upstreamPath}` : '';
  const authorization = pacs ? basicOrBearer(pacs.auth) : undefined;
  const configuredPublic = deps.config.publicUrl.replace(/\/+$/, '');
  const stowOn = deps.config.access?.proxyStow ?? false;

  /** ctgate's public origin; when publicUrl names an ephemeral port (0, tests), the origin the client used. */
  const publicOrigin = (ctx: Context): string => {
    const u = new URL(configuredPublic);
    if (u.port === '0') return `${ctx.protocol}://${ctx.host}`;
    return configuredPublic;
  };

  /** Pairs of (PACS spelling, ctgate spelling), also JSON-escaped ("\/"), longest first at one position. */
  const rewrites = (ctx: Context): [string, string][] => {
    if (!upstream) return [];
    const pub = publicOrigin(ctx);
    const pairs: [string, string][] = [
      [upstreamBase, `${pub}${PROXY_PREFIX}`],
      // Anything else on the PACS's origin still must not reveal it (and then points at ctgate, which refuses it).
      [upstream.origin, pub],
    ];
    return [...pairs, ...pairs.map(([a, b]) => [a.replaceAll('/', '\\/'), b.replaceAll('/', '\\/')] as [string, string])];
  };

  const rewriteUrl = (ctx: Context, value: string): string => {
    for (const [from, to] of rewrites(ctx)) if (value.startsWith(from)) return to + value.slice(from.length);
    // A path-only Location on the PACS's DICOMweb root.
    if (upstreamPath && value.startsWith(`${upstreamPath}/`)) return PROXY_PREFIX + value.slice(upstreamPath.length);
    return value;
  };

  /** Sends the request upstream; resolves with the response head, rejects with ProxyError or ClientGone. */
  const send = (ctx: Context, path: string, headers: OutgoingHttpHeaders, stow: boolean, timeoutMs: number): Promise<IncomingMessage> => {
    const u = upstream as URL;
    const lib = u.protocol === 'https:' ? https : http;
    const agent = u.protocol === 'https:' ? proxyAgents.https : proxyAgents.http;
    const attempt = (staleLeft: number): Promise<IncomingMessage> =>
      new Promise((resolve, reject) => {
        let settled = false;
        const settle = (e: Error | undefined, res?: IncomingMessage) => {
          if (settled) return;
          settled = true;
          if (e) reject(e);
          else resolve(res as IncomingMessage);
        };
        const req = lib.request({ protocol: u.protocol, hostname: u.hostname, port: u.port, path, method: ctx.method, headers, agent });
        // Idle timeout: no byte either way for timeoutMs (connecting, waiting for the answer, or a stalled body).
        req.setTimeout(timeoutMs, () => req.destroy(new ProxyError(504, 'PACS timeout', `the PACS did not answer within ${timeoutMs} ms`)));
        req.on('response', (res) => settle(undefined, res));
        req.on('error', (e) => {
          if (!settled && !stow && staleLeft > 0 && staleSocket(req, e)) {
            settled = true;
            resolve(attempt(staleLeft - 1));
            return;
          }
          settle(e);
        });
        // The client gave up: so does the upstream request (and the response body, if it was streaming).
        const onClose = () => {
          if (!ctx.res.writableFinished) {
            req.destroy();
            settle(new ClientGone());
          }
        };
        ctx.res.once('close', onClose);
        req.once('close', () => ctx.res.off('close', onClose));
        if (!stow) {
          req.end();
          return;
        }
        // STOW body: chunk by chunk with back-pressure, counting bytes against the limit.
        let bytes = 0;
        const body = ctx.req;
        body.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          if (bytes > maxStow) {
            body.pause();
            body.removeAllListeners('data');
            req.destroy();
            settle(new ProxyError(413, 'STOW body too large', `the STOW-RS body exceeds ${maxStow} bytes`));
            return;
          }
          if (!req.write(chunk)) body.pause();
        });
        req.on('drain', () => body.resume());
        body.on('end', () => req.end());
        body.on('aborted', () => {
          req.destroy();
          settle(new ClientGone());
        });
      });
    return attempt(2);
  };

  const handle = async (ctx: Context): Promise<void> => {
    const method = ctx.method;
    if (method !== 'GET' && method !== 'HEAD' && method !== 'POST') {
      ctx.set('Allow', 'GET, HEAD, POST');
      return fail(ctx, 405, 'method not allowed', 'the DICOMweb proxy answers GET, HEAD and POST (STOW-RS)');
    }
    const target = checkTarget(ctx.req.url ?? '');
    if (!target.ok) return fail(ctx, 400, 'bad DICOMweb path', target.reason);
    if (!pacs || !upstream) return fail(ctx, 503, 'no PACS configured', 'ctgate has no PACS to proxy to (set CTGATE_PACS_URL)');
    if (method === 'POST') {
      if (!stowOn) {
        ctx.set('Connection', 'close');
        return fail(ctx, 403, 'STOW-RS switched off', 'writing to the PACS through ctgate is off (CTGATE_PROXY_STOW)');
      }
      if (!target.stow) {
        ctx.set('Allow', 'GET, HEAD');
        return fail(ctx, 405, 'method not allowed', 'STOW-RS (POST) goes to /dicom-web/studies or /dicom-web/studies/{StudyInstanceUID}');
      }
      const type = ctx.get('content-type');
      if (!/^multipart\/related\s*;/i.test(type) || !/;\s*boundary=/i.test(type)) {
        return fail(ctx, 415, 'unsupported media type', 'STOW-RS needs Content-Type: multipart/related; type="application/dicom"; boundary=…');
      }
      const length = Number(ctx.get('content-length') || '0');
      if (length > maxStow) {
        // Answer at once and drop the connection rather than read the body.
        ctx.set('Connection', 'close');
        return fail(ctx, 413, 'STOW body too large', `the STOW-RS body (${length} bytes) exceeds ${maxStow} bytes`);
      }
    }

    const headers: OutgoingHttpHeaders = {};
    for (const h of REQUEST_HEADERS) {
      const v = ctx.req.headers[h];
      if (v !== undefined) headers[h] = v;
    }
    // Uncompressed from the PACS: JSON is rewritten as it streams, and loopback/LAN gains nothing from gzip here.
    headers['accept-encoding'] = 'identity';
    if (authorization) headers.authorization = authorization;
    const path = `${upstreamPath}${target.path}${target.query}`;

    let res: IncomingMessage;
    try {
      res = await send(ctx, path, headers, method === 'POST', pacs.timeoutMs);
    } catch (e) {
      if (e instanceof ClientGone) {
        ctx.respond = false;
        return;
      }
      if (e instanceof ProxyError) {
        if (e.status === 413) ctx.set('Connection', 'close');
        deps.log.warn('dicomweb-proxy.failed', { path: target.path, status: e.status, error: e.message });
        return fail(ctx, e.status, e.error, e.message);
      }
      const code = (e as { code?: string }).code ?? 'connection failed';
      deps.log.warn('dicomweb-proxy.unreachable', { path: target.path, error: (e as Error).message });
      return fail(ctx, 502, 'PACS unreachable', `ctgate could not reach the PACS (${code})`);
    }

    const status = res.statusCode ?? 502;
    if (status === 401 || status === 407) {
      res.resume();
      deps.log.error('dicomweb-proxy.pacs-auth-refused', { path: target.path, status });
      return fail(ctx, 502, 'PACS refused ctgate', "the PACS refused ctgate's credentials (check CTGATE_PACS_USER/PASSWORD or CTGATE_PACS_TOKEN)");
    }
    const out: OutgoingHttpHeaders = {};
    for (const h of RESPONSE_HEADERS) {
      const v = res.headers[h];
      if (v !== undefined) out[h] = v;
    }
    for (const h of ['location', 'content-location']) {
      const v = out[h];
      if (typeof v === 'string') out[h] = rewriteUrl(ctx, v);
    }
    const stages: NodeJS.ReadWriteStream[] = [];
    if (isTextual(String(res.headers['content-type'] ?? ''))) {
      const enc = String(res.headers['content-encoding'] ?? 'identity').toLowerCase();
      if (enc === 'gzip' || enc === 'x-gzip') stages.push(createGunzip());
      else if (enc === 'deflate') stages.push(createInflate());
      else if (enc === 'br') stages.push(createBrotliDecompress());
      else if (enc !== 'identity') {
        res.resume();
        return fail(ctx, 502, 'PACS answer not readable', `the PACS answered with Content-Encoding ${enc}`);
      }
      stages.push(new ReplaceStream(rewrites(ctx)));
      delete out['content-encoding'];
      delete out['content-length'];
    }

    ctx.respond = false;
    try {
      ctx.status = status;
    } catch {
      // A status Koa does not know: the log line shows 404, the client gets the PACS's status.
    }
    ctx.res.writeHead(status, out);
    if (method === 'HEAD' || status === 204 || status === 304) {
      res.resume();
      ctx.res.end();
      return;
    }
    try {
      await pipeline([res, ...stages, ctx.res]);
    } catch (e) {
      // Headers are gone: all that is left is to cut both sides (pipeline did) and note why.
      deps.log.debug('dicomweb-proxy.stream-ended', { path: target.path, error: (e as Error).message });
    }
  };

  // Bearer token or the web page's session cookie (a viewer opened from ctgate's pages). A cross-site STOW cannot
  // ride the cookie: multipart/related is not a CORS-simple content type, so a browser preflights it.
  const auth = requireUser(authOf(deps));
  router.all(/^\/dicom-web(?:\/.*)?$/, auth, handle);
  return router;
}
