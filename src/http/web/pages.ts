/**
 * The web pages people look at: the login, the job list and a study page per job (verdict, findings, key images
 * and a slice viewer with the lesion overlay). Server-rendered HTML with a strict Content-Security-Policy (a
 * nonce per response for the one inline style and script); no external assets.
 *
 * PHI: patient name and identifiers appear in page bodies only. URLs carry job ids (a hash) and slice numbers,
 * nothing else; the request log records paths; nothing here logs an order field.
 */
import { randomBytes } from 'node:crypto';
import Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import type { JobState } from '../../jobs/job-state.js';
import type { ScreeningJob } from '../../jobs/queue.js';
import { authOf, readCookie, requireUser, safeNextPath, sessionCookie, sessionCookieName, staticTokenUser } from '../auth.js';
import { refuseAndClose, tooManyFailures } from '../auth-limits.js';
import type { RouterDeps } from '../deps.js';
import { credentialFingerprint } from '../sessions.js';
import type { Html } from './html.js';
import { SliceCache, SliceOutOfRange } from './slices.js';
import { errorPage, type JobRow, jobListPage, loginPage, type StudyView, studyPage } from './views.js';

const LIST_STATES = ['waiting', 'active', 'delayed', 'prioritized', 'completed', 'failed'] as const;
const LIST_LIMIT = 100;
const JOB_ID = /^[A-Za-z0-9_.:-]{1,128}$/;
const FORM_LIMIT = 8 * 1024;

export interface WebOptions {
  /** Pause after a wrong token at the login (slows guessing); default 300 ms. */
  loginFailureDelayMs?: number;
  /** Job list refresh period; default 10 s. */
  refreshSeconds?: number;
}

function securityHeaders(ctx: Context, nonce: string): void {
  ctx.set(
    'Content-Security-Policy',
    `default-src 'none'; img-src 'self'; style-src 'nonce-${nonce}'; script-src 'nonce-${nonce}'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'`,
  );
  ctx.set('X-Content-Type-Options', 'nosniff');
  ctx.set('X-Frame-Options', 'DENY');
  // Links out (FHIR server, DICOMweb) get no referrer; same-origin requests keep theirs and their Origin header.
  ctx.set('Referrer-Policy', 'same-origin');
  // Pages carry PHI: not to be kept by the browser or anything between.
  ctx.set('Cache-Control', 'no-store');
}

function send(ctx: Context, status: number, body: (nonce: string) => Html): void {
  const nonce = randomBytes(16).toString('base64');
  securityHeaders(ctx, nonce);
  ctx.status = status;
  ctx.type = 'text/html; charset=utf-8';
  ctx.body = body(nonce).value;
}

/** An error as an HTML page, for a browser that asked for a page (the API and the proxy answer JSON). */
export function sendErrorPage(ctx: Context, status: number, message: string): void {
  send(ctx, status, (nonce) => errorPage({ nonce, status, message }));
}

function sendPng(ctx: Context, png: Uint8Array, maxAgeSeconds: number): void {
  ctx.set('X-Content-Type-Options', 'nosniff');
  ctx.set('Cache-Control', `private, max-age=${maxAgeSeconds}`);
  ctx.type = 'image/png';
  ctx.body = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
}

/** An application/x-www-form-urlencoded body, at most `limit` bytes. */
async function readForm(ctx: Context, limit = FORM_LIMIT): Promise<URLSearchParams | null> {
  if (!ctx.is('application/x-www-form-urlencoded')) return null;
  const chunks: Buffer[] = [];
  let size = 0;
  if (Number(ctx.get('content-length') || 0) > limit) {
    refuseAndClose(ctx);
    ctx.throw(413, 'form too large');
  }
  for await (const chunk of ctx.req) {
    size += (chunk as Buffer).length;
    if (size > limit) {
      refuseAndClose(ctx);
      ctx.throw(413, 'form too large');
    }
    chunks.push(chunk as Buffer);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

/**
 * A state-changing POST must come from these pages: SameSite=Strict already keeps the session cookie off
 * cross-site requests; this also refuses a cross-site form (Origin or Sec-Fetch-Site say so), which stops a
 * login CSRF too.
 */
function sameOrigin(ctx: Context, publicUrl: string): boolean {
  const site = ctx.get('sec-fetch-site');
  if (site && site !== 'same-origin' && site !== 'none') return false;
  const origin = ctx.get('origin');
  // No Origin: a client that is not a browser, or an old one (no cookie of ours rides on a cross-site POST anyway).
  if (!origin) return true;
  // A browser sends Origin: null where the referrer policy hides the referrer; Sec-Fetch-Site (which no page can
  // set) then still says where the form came from.
  if (origin === 'null') return site === 'same-origin';
  let pub = '';
  try {
    pub = new URL(publicUrl).origin;
  } catch {}
  // Not ctx.origin: Koa 3 answers that from the Origin header itself.
  return origin === `${ctx.protocol}://${ctx.host}` || origin === pub;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function rowOf(job: ScreeningJob, state: string, cp: JobState | null): JobRow {
  const progress = (typeof job.progress === 'object' && job.progress ? job.progress : {}) as { stage?: string; percent?: number };
  const analyze = cp?.outputs.analyze;
  const total = cp ? Object.values(cp.timingsMs).reduce((s: number, ms) => s + (ms ?? 0), 0) : undefined;
  return {
    id: job.id ?? '',
    state,
    stage: cp?.stage ?? progress.stage,
    percent: typeof progress.percent === 'number' ? progress.percent : undefined,
    receivedAt: job.data.receivedAt,
    order: job.data.order,
    verdict: analyze?.verdict,
    probability: analyze?.probability,
    models: analyze?.models,
    totalMs: total || undefined,
    failedReason: state === 'failed' ? (cp?.lastError?.message ?? job.failedReason) : undefined,
    lastError:
      state !== 'failed' && state !== 'completed' && cp?.lastError && cp.stage !== 'done'
        ? { peer: cp.lastError.peer, message: cp.lastError.message }
        : undefined,
  };
}

export function webPages(deps: RouterDeps<'config' | 'pacs' | 'queue' | 'states'>, opts: WebOptions = {}): Router {
  const router = new Router({ sensitive: true });
  const auth = authOf(deps);
  const sessions = auth.sessions;
  const user: Middleware = requireUser(auth);
  const slices = new SliceCache((id) => deps.states.getAnalysis(id), deps.pacs);
  const refresh = opts.refreshSeconds ?? 10;
  // With OIDC on, the login page says that a bearer token from the organisation's sign-on also opens the pages
  // (sent by a proxy or viewer); ctgate runs no browser sign-on flow of its own.
  const sso = deps.config.oidc !== undefined;

  const notFound = (ctx: Context, message = 'There is no such job.') => send(ctx, 404, (nonce) => errorPage({ nonce, status: 404, message, signedIn: true }));

  router.get('/', (ctx) => {
    ctx.redirect('/jobs');
  });

  router.get('/login', (ctx) => {
    send(ctx, 200, (nonce) => loginPage({ nonce, next: safeNextPath(ctx.query.next), sso }));
  });

  router.post('/login', async (ctx) => {
    if (!sameOrigin(ctx, deps.config.publicUrl)) {
      send(ctx, 403, (nonce) => errorPage({ nonce, status: 403, message: 'The login form must be sent from this site.' }));
      return;
    }
    // An address over the limit of failed sign-ins: 429, the token not looked at (nor the form read).
    const wait = (await auth.failures?.blockedFor(ctx.ip)) ?? 0;
    if (wait > 0) return tooManyLogins(ctx, wait);
    const form = await readForm(ctx);
    const next = safeNextPath(form?.get('next') ?? undefined);
    const token = form?.get('token') ?? '';
    const who = token ? staticTokenUser(token, auth) : undefined;
    if (!who) {
      deps.log.info('web.login-refused', {});
      const over = (await auth.failures?.failed(ctx.ip)) ?? 0;
      if (over > 0) return tooManyLogins(ctx, over);
      await sleep(opts.loginFailureDelayMs ?? 300);
      send(ctx, 401, (nonce) => loginPage({ nonce, next, sso, error: 'That token is not accepted.' }));
      return;
    }
    if (!sessions) {
      send(ctx, 503, (nonce) => errorPage({ nonce, status: 503, message: 'This gateway keeps no sessions; send the token as a bearer token.' }));
      return;
    }
    let made: Awaited<ReturnType<typeof sessions.create>>;
    try {
      made = await sessions.create({ who: who.who, permissions: [...who.permissions], fingerprint: credentialFingerprint(token) });
    } catch (e) {
      deps.log.warn('web.login-unavailable', { error: (e as Error).message });
      ctx.set('Retry-After', '5');
      send(ctx, 503, (nonce) => errorPage({ nonce, status: 503, message: 'Sessions cannot be stored right now (Redis is not answering). Try again shortly.' }));
      return;
    }
    const { secureCookie, ttlSeconds } = sessions.settings;
    ctx.set('Set-Cookie', sessionCookie(made.id, { secure: secureCookie, maxAgeSeconds: ttlSeconds }));
    ctx.set('Cache-Control', 'no-store');
    deps.log.info('web.login', { who: who.who });
    ctx.status = 303;
    ctx.redirect(next ?? '/jobs');
  });

  const tooManyLogins = (ctx: Context, seconds: number) => {
    tooManyFailures(ctx, seconds);
    send(ctx, 429, (nonce) => loginPage({ nonce, sso, error: `Too many failed sign-ins from this address. Try again in ${Math.ceil(seconds / 60)} min.` }));
  };

  // Ends the session in Redis (every gateway process refuses the cookie from then on) and clears the cookie.
  const logout = async (ctx: Context) => {
    const secure = sessions?.settings.secureCookie ?? true;
    ctx.set('Set-Cookie', sessionCookie('', { secure, maxAgeSeconds: 0 }));
    ctx.set('Cache-Control', 'no-store');
    const id = readCookie(ctx.get('cookie'), sessionCookieName(secure));
    if (id && sessions) {
      try {
        await sessions.delete(id);
      } catch (e) {
        deps.log.warn('web.logout-unavailable', { error: (e as Error).message });
        const ends = Math.ceil(sessions.settings.idleSeconds / 60);
        const message = `You are logged out in this browser, but the server could not end the session (Redis is not answering); it ends by itself within ${ends} min.`;
        send(ctx, 503, (nonce) => errorPage({ nonce, status: 503, message }));
        return;
      }
    }
    ctx.status = 303;
    ctx.redirect('/login');
  };
  // Logging out needs no protection against CSRF (the worst a forged one does is log someone out); the page's
  // button POSTs, and GET /logout works from a bookmark.
  router.get('/logout', logout);
  router.post('/logout', logout);

  router.get('/jobs', user, async (ctx) => {
    const filter = String(ctx.query.state ?? 'all');
    const types = filter === 'all' ? LIST_STATES : LIST_STATES.filter((s) => s === filter);
    if (types.length === 0) {
      send(ctx, 400, (nonce) => errorPage({ nonce, status: 400, message: `state must be one of all, ${LIST_STATES.join(', ')}`, signedIn: true }));
      return;
    }
    const [perState, counts] = await Promise.all([
      Promise.all(types.map(async (s) => (await deps.queue.getJobs([s], 0, LIST_LIMIT - 1)).map((job) => ({ job, state: s as string })))),
      deps.queue.getJobCounts(...LIST_STATES),
    ]);
    const jobs = perState
      .flat()
      .filter(({ job }) => job?.id)
      .sort((a, b) => b.job.timestamp - a.job.timestamp)
      .slice(0, LIST_LIMIT);
    const cps = await deps.states.getMany(jobs.map(({ job }) => job.id as string));
    const rows = jobs.map(({ job, state }, i) => rowOf(job, state, cps[i] ?? null));
    send(ctx, 200, (nonce) => jobListPage({ nonce, rows, filter, counts, refreshSeconds: refresh }));
  });

  router.get('/jobs/:id', user, async (ctx) => {
    const id = ctx.params.id ?? '';
    if (!JOB_ID.test(id)) return notFound(ctx);
    const [job, cp, viewerCp] = await Promise.all([deps.queue.getJob(id), deps.states.get(id), slices.checkpoint(id)]);
    if (!job && !cp) return notFound(ctx);
    const state = job ? await job.getState() : 'removed';
    const progress = (job && typeof job.progress === 'object' && job.progress ? job.progress : undefined) as StudyView['progress'];
    const count = viewerCp?.slices.length ?? 0;
    const keyImages = viewerCp?.keyImages.map((k) => ({ sliceIndex: k.sliceIndex, lesionAreaMm2: k.lesionAreaMm2 })) ?? [];
    const asked = /^\d{1,6}$/.test(String(ctx.query.k ?? '')) ? Number(ctx.query.k) : undefined;
    const slice = asked !== undefined && asked < count ? asked : (keyImages[0]?.sliceIndex ?? Math.floor(count / 2));
    const seg = cp?.outputs['write-seg'];
    const fhir = cp?.outputs['write-fhir'];
    const study = viewerCp?.studyInstanceUid ?? cp?.outputs['wait-for-study']?.studyInstanceUid;
    const fhirReportId = fhir && 'diagnosticReportId' in fhir ? fhir.diagnosticReportId : undefined;
    const fhirBase = deps.config.fhir?.baseUrl.replace(/\/+$/, '');
    const view: StudyView = {
      id,
      state,
      progress,
      order: job?.data.order,
      receivedAt: job?.data.receivedAt,
      checkpoint: cp,
      failedReason: job?.failedReason,
      analysis: viewerCp?.analysis,
      keyImages,
      sliceCount: count,
      slice,
      viewer: slices.canRender,
      links: {
        fhirReportId,
        fhirReportUrl: fhirReportId && fhirBase ? `${fhirBase}/DiagnosticReport/${encodeURIComponent(fhirReportId)}` : undefined,
        segUrl:
          seg && 'seriesInstanceUid' in seg && study
            ? `${deps.config.publicUrl.replace(/\/+$/, '')}/dicom-web/studies/${encodeURIComponent(study)}/series/${encodeURIComponent(seg.seriesInstanceUid)}`
            : undefined,
        viewerUrl: study ? `/viewer/viewer?StudyInstanceUIDs=${encodeURIComponent(study)}` : undefined,
      },
    };
    send(ctx, 200, (nonce) => studyPage({ ...view, nonce }));
  });

  router.get('/jobs/:id/key-images/:n.png', user, async (ctx) => {
    const id = ctx.params.id ?? '';
    if (!JOB_ID.test(id)) return notFound(ctx);
    const cp = await slices.checkpoint(id);
    if (!cp) return notFound(ctx, 'This job has no analysis.');
    const n = /^\d{1,3}$/.test(ctx.params.n ?? '') ? Number(ctx.params.n) : -1;
    const img = cp.keyImages[n];
    if (!img) return notFound(ctx, 'There is no such key image.');
    sendPng(ctx, img.png, 300);
  });

  router.get('/jobs/:id/slices/:k.png', user, async (ctx) => {
    const id = ctx.params.id ?? '';
    if (!JOB_ID.test(id)) return notFound(ctx);
    const raw = ctx.params.k ?? '';
    if (!/^\d{1,6}$/.test(raw)) {
      send(ctx, 400, (nonce) => errorPage({ nonce, status: 400, message: 'The slice index must be a whole number.', signedIn: true }));
      return;
    }
    const cp = await slices.checkpoint(id);
    if (!cp) return notFound(ctx, 'This job has no analysis.');
    const k = Number(raw);
    if (k >= cp.slices.length) {
      send(ctx, 400, (nonce) => errorPage({ nonce, status: 400, message: `The series has slices 0 to ${cp.slices.length - 1}.`, signedIn: true }));
      return;
    }
    if (!slices.canRender) {
      send(ctx, 503, (nonce) => errorPage({ nonce, status: 503, message: 'No PACS is configured on the gateway.', signedIn: true }));
      return;
    }
    let png: Uint8Array;
    try {
      png = await slices.slice(cp, k);
    } catch (e) {
      if (e instanceof SliceOutOfRange) {
        send(ctx, 400, (nonce) => errorPage({ nonce, status: 400, message: e.message, signedIn: true }));
        return;
      }
      // The PACS's message names UIDs and statuses, no patient data.
      deps.log.warn('web.slice-failed', { jobId: id, slice: k, error: (e as Error).message });
      send(ctx, 502, (nonce) => errorPage({ nonce, status: 502, message: 'The PACS did not deliver this slice.', signedIn: true }));
      return;
    }
    sendPng(ctx, png, 300);
  });

  return router;
}
