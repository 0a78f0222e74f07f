/**
 * /viewer: the OHIF v3 viewer (npm `@ohif/app`, its prebuilt `dist/`) served by the gateway itself, with a data
 * source that is ctgate's own /dicom-web proxy: same origin, so no CORS, and the pages' session cookie (or a bearer
 * token) is what lets both the viewer and its DICOMweb requests through. A signed-in user sees the PACS's study
 * list, opens a CT, and finds ctgate's SEG, SR and key-image series beside it.
 *
 * - The build assumes it is served at `/`: index.html's links, `window.PUBLIC_URL`, each webpack runtime's public
 *   path (`__webpack_require__.p = "/"`) and the stylesheets' `url(/…)` are rewritten to /viewer/ (once per file,
 *   kept in memory).
 * - `app-config.js` is generated per request (the data source's roots are ctgate's public URL + /dicom-web).
 * - Its own Content-Security-Policy, on /viewer only, found by trying each source away in the Chromium test:
 *   `'unsafe-eval'` (loading a SEG builds ndarray constructors with `new Function`: without it OHIF logs
 *   "Segmentation … failed to load; EvalError" and shows no overlay), `'wasm-unsafe-eval'` (the WebAssembly image
 *   codecs for compressed transfer syntaxes), `style-src 'unsafe-inline'` (React's inline styles are refused
 *   otherwise). Workers only from 'self' (onnxruntime-web's blob: proxy worker, used by OHIF's AI-assisted tools,
 *   is not allowed); img-src adds data: and blob: (thumbnails); nothing from any other origin.
 * - Unknown paths under /viewer/ get index.html (the viewer's own router: /viewer/viewer?StudyInstanceUIDs=…).
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, extname, join, normalize, sep } from 'node:path';
import Router from '@koa/router';
import type { Context } from 'koa';
import { authOf, requireUser } from './auth.js';
import type { RouterDeps } from './deps.js';
import { PROXY_PREFIX } from './proxy/paths.js';

export const VIEWER_PREFIX = '/viewer';

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.html': 'text/html; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.jpg': 'image/jpeg',
  '.gif': 'image/gif',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
  '.ttf': 'font/ttf',
  '.txt': 'text/plain; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
};

/** Where `@ohif/app`'s build lies, or undefined when the package is not installed. */
export function ohifDist(): string | undefined {
  try {
    const pkg = createRequire(import.meta.url).resolve('@ohif/app/package.json');
    const dist = join(dirname(pkg), 'dist');
    return existsSync(join(dist, 'index.html')) ? dist : undefined;
  } catch {
    return undefined;
  }
}

/** The viewer's CSP: what OHIF needs and no more (see the module comment); the nonce is for index.html's inline scripts. */
export function viewerCsp(nonce: string): string {
  return [
    "default-src 'self'",
    `script-src 'self' 'nonce-${nonce}' 'unsafe-eval' 'wasm-unsafe-eval'`,
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "font-src 'self'",
    "connect-src 'self'",
    "worker-src 'self'",
    "object-src 'none'",
    "frame-src 'none'",
    "frame-ancestors 'none'",
    "base-uri 'self'",
    "form-action 'self'",
  ].join('; ');
}

/** OHIF's configuration (window.config) with one DICOMweb data source: ctgate's proxy at `dicomWebRoot`. */
export function viewerConfig(dicomWebRoot: string): Record<string, unknown> {
  return {
    name: 'ctgate',
    routerBasename: VIEWER_PREFIX,
    extensions: [],
    modes: [],
    customizationService: {},
    showStudyList: true,
    maxNumberOfWebWorkers: 2,
    showWarningMessageForCrossOrigin: false,
    showCPUFallbackMessage: true,
    showLoadingIndicator: true,
    strictZSpacingForVolumeViewport: true,
    showErrorDetails: 'always',
    investigationalUseDialog: { option: 'never' },
    defaultDataSourceName: 'ctgate',
    dataSources: [
      {
        namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
        sourceName: 'ctgate',
        configuration: {
          friendlyName: 'ctgate (PACS through the ctgate gateway)',
          name: 'ctgate',
          wadoUriRoot: dicomWebRoot,
          qidoRoot: dicomWebRoot,
          wadoRoot: dicomWebRoot,
          qidoSupportsIncludeField: true,
          imageRendering: 'wadors',
          thumbnailRendering: 'wadors',
          enableStudyLazyLoad: true,
          supportsFuzzyMatching: false,
          supportsWildcard: true,
          staticWado: false,
          singlepart: 'bulkdata,video',
          bulkDataURI: { enabled: true, relativeResolution: 'studies' },
          omitQuotationForMultipartRequest: true,
        },
      },
    ],
  };
}

/** index.html for /viewer/: links and PUBLIC_URL under the prefix, a nonce on each inline script. */
export function rewriteIndex(html: string, nonce: string): string {
  return html
    .replace(/window\.PUBLIC_URL="\/"/g, `window.PUBLIC_URL="${VIEWER_PREFIX}/"`)
    .replace(/\b(href|src)="\/(?!\/)/g, `$1="${VIEWER_PREFIX}/`)
    .replace(/<script>/g, `<script nonce="${nonce}">`);
}

const PUBLIC_PATH = '__webpack_require__.p = "/";';

export interface ViewerOptions {
  /** The build to serve; default @ohif/app's dist. */
  dist?: string;
}

export function viewerRoutes(deps: RouterDeps<'config'>, opts: ViewerOptions = {}): Router {
  const router = new Router({ sensitive: true });
  const dist = opts.dist ?? ohifDist();
  /** The .js/.css files rewritten (ten in 3.13, ≈ 25 MB), and those that need nothing. */
  const rewritten = new Map<string, Buffer>();
  const plain = new Set<string>();
  let index: Promise<string> | undefined;
  const configuredPublic = deps.config.publicUrl.replace(/\/+$/, '');
  // As the proxy does: ctgate's public URL, or (an ephemeral port 0, tests) the origin the browser used.
  const publicOrigin = (ctx: Context): string => (new URL(configuredPublic).port === '0' ? `${ctx.protocol}://${ctx.host}` : configuredPublic);

  const sendIndex = async (ctx: Context) => {
    if (!dist) return ctx.throw(503, 'the viewer is not installed (npm package @ohif/app)');
    index ??= readFile(join(dist, 'index.html'), 'utf8');
    const nonce = randomBytes(16).toString('base64');
    ctx.set('Content-Security-Policy', viewerCsp(nonce));
    ctx.set('X-Content-Type-Options', 'nosniff');
    ctx.set('X-Frame-Options', 'DENY');
    ctx.set('Referrer-Policy', 'same-origin');
    ctx.set('Cache-Control', 'no-store');
    ctx.type = 'text/html; charset=utf-8';
    ctx.body = rewriteIndex(await index, nonce);
  };

  const auth = requireUser(authOf(deps));
  // A regular expression: a string path would also match /viewer/ (the router's trailing-slash tolerance).
  router.get(/^\/viewer$/, auth, (ctx) => {
    ctx.status = 302;
    ctx.redirect(`${VIEWER_PREFIX}/`);
  });
  router.get(`${VIEWER_PREFIX}/app-config.js`, auth, (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    ctx.set('X-Content-Type-Options', 'nosniff');
    ctx.type = 'text/javascript; charset=utf-8';
    ctx.body = `window.config = ${JSON.stringify(viewerConfig(`${publicOrigin(ctx)}${PROXY_PREFIX}`), null, 2)};\n`;
  });
  router.get(/^\/viewer\/.*$/, auth, async (ctx) => {
    if (!dist) return ctx.throw(503, 'the viewer is not installed (npm package @ohif/app)');
    let rel: string;
    try {
      rel = decodeURIComponent(ctx.path.slice(VIEWER_PREFIX.length + 1));
    } catch {
      return ctx.throw(400, 'malformed path');
    }
    const ext = extname(rel).toLowerCase();
    if (rel === '' || rel === 'index.html' || !ext || !TYPES[ext]) return sendIndex(ctx);
    const file = normalize(join(dist, rel));
    if (!file.startsWith(dist + sep) || rel.includes('\0')) return ctx.throw(404, 'not found');
    const st = await stat(file).catch(() => undefined);
    if (!st?.isFile()) return ctx.throw(404, 'not found');
    ctx.set('Content-Security-Policy', viewerCsp(randomBytes(16).toString('base64')));
    ctx.set('X-Content-Type-Options', 'nosniff');
    ctx.set('Cache-Control', 'private, max-age=3600');
    ctx.type = TYPES[ext] as string;
    if ((ext === '.js' || ext === '.css') && !plain.has(file)) {
      let body = rewritten.get(file);
      if (!body) {
        const s = (await readFile(file)).toString('latin1');
        const r =
          ext === '.js' ? s.split(PUBLIC_PATH).join(`__webpack_require__.p = "${VIEWER_PREFIX}/";`) : s.replace(/url\(\/(?!\/)/g, `url(${VIEWER_PREFIX}/`);
        if (r === s) plain.add(file);
        else {
          body = Buffer.from(r, 'latin1');
          rewritten.set(file, body);
        }
      }
      if (body) {
        ctx.body = body;
        return;
      }
    }
    ctx.length = st.size;
    ctx.body = createReadStream(file);
  });
  return router;
}
