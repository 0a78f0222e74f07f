/**
 * The pages' routes over fake dependencies (no Redis, no PACS): login and logout, the session guarding every page,
 * the job list and study page with PHI in bodies only, key images, and server-rendered slices with the red
 * lesion overlay, 404 for an unknown job and 400 for a bad slice index.
 */
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import Koa from 'koa';
import request from 'supertest';
import type { Config } from '../../src/config/index.js';
import type { HttpDeps } from '../../src/http/app.js';
import { SESSION_COOKIE_INSECURE, secureCookies } from '../../src/http/auth.js';
import { webPages } from '../../src/http/web/pages.js';
import { maskSlice, toViewerCheckpoint } from '../../src/http/web/slices.js';
import { decodePng } from '../../src/imaging/png.js';
import { decodeCheckpoint, encodeCheckpoint } from '../../src/jobs/analysis-codec.js';
import type { JobState } from '../../src/jobs/job-state.js';
import type { Logger } from '../../src/observability/log.js';
import { syntheticResult } from '../helpers/result-context.js';
import { MemorySessionStore } from '../helpers/sessions.js';

const TOKEN = 'web-pages-token-0123456789';
const JOB = 'ord-0123456789abcdef0123456789abcdef';
const FAILED = 'ord-fffff56789abcdef0123456789abcdef';

/** RGB pixels of one of our own PNGs (8-bit RGB). */
function decodeRgb(png: Buffer): { width: number; height: number; rgb: Buffer } {
  const d = decodePng(png);
  assert.equal(d.channels, 3, 'truecolour');
  return { width: d.width, height: d.height, rgb: Buffer.from(d.pixels) };
}

const isRed = (r: number, g: number, b: number) => r > 100 && r > g + 60 && r > b + 60;

describe('web pages (fake queue, checkpoints and PACS)', () => {
  const { context } = syntheticResult({
    seed: 11,
    kind: 'covid',
    order: { patient: { ...syntheticResult().context.order.patient, name: { family: 'Doe<script>', given: ['Jane'] } } },
  });
  const checkpoint = decodeCheckpoint(encodeCheckpoint({ ...context, order: undefined } as never));
  const [nx, ny] = context.series.geometry.size;
  const logged: string[] = [];
  const log: Logger = {
    debug: (e, f) => logged.push(JSON.stringify({ e, f })),
    info: (e, f) => logged.push(JSON.stringify({ e, f })),
    warn: (e, f) => logged.push(JSON.stringify({ e, f })),
    error: (e, f) => logged.push(JSON.stringify({ e, f })),
  };
  const state: JobState = {
    jobId: JOB,
    stage: 'done',
    attempts: { analyze: 1 },
    timingsMs: { retrieve: 500, analyze: 4000 },
    outputs: {
      'wait-for-study': { studyInstanceUid: context.study.studyInstanceUid, instances: 32, matchedBy: 'accession' },
      analyze: { verdict: 'positive', probability: 0.93, models: ['covid-resnet@0.1.0'], executionProvider: 'cpu' },
      'write-seg': { seriesInstanceUid: '1.2.3.4.5', sopInstanceUid: '1.2.3.4.5.1', frames: 9 },
      'write-fhir': { diagnosticReportId: 'dr-abc', resources: 5 },
    },
    startedAt: '2026-11-27T10:00:00.000Z',
    updatedAt: '2026-11-27T10:00:05.000Z',
    finishedAt: '2026-11-27T10:00:05.000Z',
  };
  const failedState: JobState = {
    ...state,
    jobId: FAILED,
    stage: 'wait-for-study',
    outputs: {},
    finishedAt: undefined,
    lastError: { stage: 'wait-for-study', message: 'the study did not arrive within 60 minutes', retryable: false, at: 'x' },
  };
  const job = (id: string, order = context.order) => ({
    id,
    data: { order, receivedAt: '2026-11-27T09:59:00.000Z', messageControlId: 'M1' },
    progress: { stage: 'done', percent: 100 },
    timestamp: id === JOB ? 2 : 1,
    failedReason: id === FAILED ? 'the study did not arrive' : undefined,
    getState: async () => (id === JOB ? 'completed' : 'failed'),
  });
  const jobs: Record<string, ReturnType<typeof job>> = { [JOB]: job(JOB), [FAILED]: job(FAILED) };
  const frames: string[] = [];
  const deps = {
    config: { publicUrl: 'http://ctgate.test', fhir: { baseUrl: 'https://fhir.test/r4' } } as Config,
    apiToken: TOKEN,
    // Plain http on a host other than loopback: the cookie cannot be Secure, so it is ctgate_session (no __Host-).
    auth: { apiToken: TOKEN, sessions: new MemorySessionStore({ ttlSeconds: 28800, idleSeconds: 3600, secureCookie: secureCookies('http://ctgate.test') }) },
    log,
    states: {
      get: async (id: string) => (id === JOB ? state : id === FAILED ? failedState : null),
      getMany: async (ids: string[]) => ids.map((id) => (id === JOB ? state : id === FAILED ? failedState : null)),
      getAnalysis: async (id: string) => (id === JOB ? checkpoint : null),
    },
    queue: {
      getJobs: async (types: string[]) => [...(types.includes('completed') ? [jobs[JOB]] : []), ...(types.includes('failed') ? [jobs[FAILED]] : [])],
      getJobCounts: async () => ({ completed: 1, failed: 1, waiting: 0 }),
      getJob: async (id: string) => jobs[id],
    },
    pacs: {
      retrieveFrame: async (_study: string, _series: string, sop: string) => {
        frames.push(sop);
        // A uniform lung-like frame: stored 300 → −724 HU.
        const px = new Uint16Array(nx * ny).fill(300);
        return { bytes: Buffer.from(px.buffer), transferSyntax: '1.2.840.10008.1.2.1' };
      },
    },
  } as unknown as HttpDeps;

  let server: Server;
  let cookie = '';
  before(() => {
    const app = new Koa();
    const r = webPages(deps, { loginFailureDelayMs: 1 });
    app.use(r.routes()).use(r.allowedMethods());
    server = app.listen(0);
  });
  after(() => server.close());

  const html = (path: string) => request(server).get(path).set('Accept', 'text/html').set('Cookie', cookie);

  it('sends a browser to the login and back to where it was going', async () => {
    const res = await request(server).get(`/jobs/${JOB}`).set('Accept', 'text/html').expect(302);
    assert.equal(res.headers.location, `/login?next=%2Fjobs%2F${JOB}`);
    const form = await request(server).get(`/login?next=%2Fjobs%2F${JOB}`).expect(200);
    assert.match(form.text, new RegExp(`name="next" value="/jobs/${JOB}"`));
    assert.match(form.headers['content-security-policy'] ?? '', /script-src 'nonce-[^']+'; /);
  });

  it('refuses a wrong token, and a login posted from another site', async () => {
    const bad = await request(server).post('/login').type('form').send({ token: 'nope' }).expect(401);
    assert.match(bad.text, /not accepted/);
    assert.equal(bad.headers['set-cookie'], undefined);
    await request(server).post('/login').set('Origin', 'https://evil.example').type('form').send({ token: TOKEN }).expect(403);
    await request(server).post('/login').set('Sec-Fetch-Site', 'cross-site').type('form').send({ token: TOKEN }).expect(403);
  });

  it('logs in with the token: a session cookie, then the page it was going to', async () => {
    const res = await request(server)
      .post('/login')
      .set('Origin', 'http://ctgate.test')
      .type('form')
      .send({ token: TOKEN, next: `/jobs/${JOB}` })
      .expect(303);
    assert.equal(res.headers.location, `/jobs/${JOB}`);
    const set = String(res.headers['set-cookie']);
    assert.match(set, new RegExp(`^${SESSION_COOKIE_INSECURE}=[\\w-]{43}; Path=/; Max-Age=28800; HttpOnly; SameSite=Strict$`));
    cookie = set.split(';')[0] as string;
    assert.ok(!logged.some((l) => l.includes(TOKEN)), 'the token is not logged');
  });

  it('lists the jobs with patient, verdict, probability, state and timings; PHI only in the body', async () => {
    const res = await html('/jobs').expect(200);
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.match(res.text, /http-equiv="refresh" content="10"/);
    assert.ok(res.text.includes('Doe&lt;script&gt;, Jane'));
    assert.match(res.text, new RegExp(`href="/jobs/${JOB}"`));
    assert.match(res.text, /class="verdict-cell">positive</);
    assert.match(res.text, /0\.930/);
    assert.match(res.text, /4\.5 s/);
    assert.match(res.text, /the study did not arrive within 60 minutes/);
    const failedOnly = await html('/jobs?state=failed').expect(200);
    assert.ok(!failedOnly.text.includes(`data-job="${JOB}"`));
    assert.ok(failedOnly.text.includes(`data-job="${FAILED}"`));
    await html('/jobs?state=bogus').expect(400);
  });

  it('shows the study page with the verdict, findings, links and the viewer', async () => {
    const res = await html(`/jobs/${JOB}`).expect(200);
    assert.match(res.text, /AI screening — not for clinical use/);
    assert.match(res.text, /id="verdict">Positive/);
    assert.match(res.text, /operating threshold 0\.613/);
    assert.match(res.text, /href="https:\/\/fhir\.test\/r4\/DiagnosticReport\/dr-abc"/);
    assert.ok(res.text.includes(`href="http://ctgate.test/dicom-web/studies/${context.study.studyInstanceUid}/series/1.2.3.4.5"`));
    const first = context.keyImages[0]?.sliceIndex as number;
    assert.ok(res.text.includes(`id="slice-img" src="/jobs/${JOB}/slices/${first}.png"`));
    assert.ok((await html(`/jobs/${JOB}?k=3`).expect(200)).text.includes(`/slices/3.png`), '?k= opens the viewer there');
    const failed = await html(`/jobs/${FAILED}`).expect(200);
    assert.match(failed.text, /The job failed at stage wait-for-study\.<\/strong> the study did not arrive within 60 minutes/);
  });

  it('answers 404 for an unknown job, 400 for a bad slice index', async () => {
    await html('/jobs/ord-unknown').expect(404);
    await html('/jobs/..%2f..%2fetc').expect(404);
    await html('/jobs/ord-unknown/slices/0.png').expect(404);
    await html(`/jobs/${JOB}/slices/-1.png`).expect(400);
    await html(`/jobs/${JOB}/slices/1e3.png`).expect(400);
    await html(`/jobs/${JOB}/slices/${context.series.slices.length}.png`).expect(400);
    await html(`/jobs/${JOB}/key-images/9.png`).expect(404);
  });

  it('renders a key slice from the PACS frame with the lesion in red, and caches it', async () => {
    const k = context.keyImages[0]?.sliceIndex as number;
    const res = await request(server).get(`/jobs/${JOB}/slices/${k}.png`).set('Cookie', cookie).buffer(true).expect(200).expect('Content-Type', 'image/png');
    const img = decodeRgb(res.body as Buffer);
    assert.deepEqual([img.width, img.height], [nx, ny]);
    const mask = maskSlice(toViewerCheckpoint(checkpoint).maskBits as Uint8Array, nx * ny, k);
    let red = 0;
    let wrong = 0;
    for (let p = 0; p < nx * ny; p++) {
      const r = isRed(img.rgb[p * 3] as number, img.rgb[p * 3 + 1] as number, img.rgb[p * 3 + 2] as number);
      if (r) red++;
      if (r !== (mask[p] === 1)) wrong++;
    }
    assert.ok(red > 0, 'lesion pixels in red');
    assert.equal(wrong, 0, 'red exactly where the mask is');
    const before = frames.length;
    await request(server).get(`/jobs/${JOB}/slices/${k}.png`).set('Cookie', cookie).expect(200);
    assert.equal(frames.length, before, 'served from the cache');
    const key = await request(server).get(`/jobs/${JOB}/key-images/0.png`).set('Cookie', cookie).buffer(true).expect(200);
    assert.deepEqual(new Uint8Array(key.body as Buffer), context.keyImages[0]?.png);
  });

  it('logs no patient data, and logs out', async () => {
    assert.ok(!logged.some((l) => l.includes('Doe') || l.includes('MRN')), logged.join('\n'));
    await html('/jobs').expect(200);
    const res = await request(server).post('/logout').set('Cookie', cookie).expect(303);
    assert.equal(res.headers.location, '/login');
    assert.match(String(res.headers['set-cookie']), new RegExp(`^${SESSION_COOKIE_INSECURE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict`));
    // The session ended on the server: the same cookie, sent again, opens nothing.
    const replay = await html('/jobs').expect(302);
    assert.equal(replay.headers.location, '/login?next=%2Fjobs');
    await request(server).get(`/jobs/${JOB}/slices/0.png`).set('Cookie', cookie).expect(401);
  });
});
