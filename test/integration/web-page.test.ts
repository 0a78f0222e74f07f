/**
 * The web page in a real browser (headless Chromium through playwright-core) against a real gateway, worker,
 * Orthanc and Redis, with a finished positive job: the login, the job in the list, the study page's verdict,
 * the slice viewer showing the lesion in red (checked on a screenshot's pixels), scrolling by key, button and
 * range; an unauthenticated visit sent to the login; no PHI in any URL the browser asked for, nor in the
 * gateway's log.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { type Browser, chromium, type Page } from 'playwright-core';
import { type Gateway, startGateway } from '../../src/cli/gateway.js';
import { type RunningWorker, startWorker } from '../../src/cli/worker.js';
import { loadConfig } from '../../src/config/index.js';
import { jobIdFor } from '../../src/domain/job.js';
import { maskSlice, toViewerCheckpoint } from '../../src/http/web/slices.js';
import { decodePng } from '../../src/imaging/png.js';
import { JobStateStore } from '../../src/jobs/job-state.js';
import { type Logger, silentLogger } from '../../src/observability/log.js';
import { writeCtSeries } from '../../src/synthetic/dicom-writer.js';
import { generateChestCt } from '../../src/synthetic/phantom.js';
import { TEST_TOKEN } from '../helpers/gateway.js';
import { TestOrthanc } from '../helpers/orthanc.js';
import { deleteKeys, REDIS_URL, requireRedis } from '../helpers/redis.js';
import { sampleOrder } from '../helpers/result-context.js';

const CHROMIUM = process.env.CTGATE_CHROMIUM ?? '/usr/bin/chromium';

/** Pixels clearly red: the lesion overlay (the CT itself is grey, so r ≈ g ≈ b everywhere else). */
function redPixels(png: Buffer): { red: number; total: number } {
  const { width, height, channels, pixels } = decodePng(png);
  assert.ok(channels >= 3, `a colour screenshot (${channels} channels)`);
  let red = 0;
  for (let i = 0; i < width * height; i++) {
    const r = pixels[i * channels] as number;
    const g = pixels[i * channels + 1] as number;
    const b = pixels[i * channels + 2] as number;
    if (r > 100 && r - g > 60 && r - b > 60) red++;
  }
  return { red, total: width * height };
}

describe('web page in Chromium (gateway, worker, Orthanc, Redis)', () => {
  const orthanc = new TestOrthanc();
  const prefix = `ctgate-test-${randomBytes(4).toString('hex')}`;
  const phi = { family: "O'Hara <b>Webtest</b>", given: 'Ada', mrn: 'MRN-WEB-7731', accession: 'ACC-WEB-881', placer: 'PLC-WEB-991', birth: '1961-02-03' };
  const logLines: string[] = [];
  const capture = (level: string) => (event: string, fields?: Record<string, unknown>) => {
    logLines.push(JSON.stringify({ level, event, ...fields }));
  };
  const gatewayLog: Logger = { debug: capture('debug'), info: capture('info'), warn: capture('warn'), error: capture('error') };
  let gw: Gateway;
  let worker: RunningWorker | undefined;
  let browser: Browser;
  let launching: Promise<Browser> | undefined;
  let base = '';
  let jobId = '';
  let states: JobStateStore;
  const urls: string[] = [];
  const problems: string[] = [];

  const env = (extra: Record<string, string> = {}): Record<string, string> => ({
    CTGATE_REDIS_URL: REDIS_URL,
    CTGATE_REDIS_PREFIX: prefix,
    CTGATE_PACS_URL: orthanc.dicomweb,
    CTGATE_API_TOKEN: TEST_TOKEN,
    CTGATE_MAPPINGS_FILE: 'mappings/orders.yaml',
    // The shared test Redis runs with appendonly no (see redis-persistence.test.ts).
    CTGATE_REDIS_REQUIRE_AOF: 'false',
    CTGATE_STUDY_POLL_MS: '200',
    CTGATE_STUDY_STABLE_MS: '300',
    CTGATE_STUDY_CHECK_MS: '5000',
    CTGATE_STUDY_SLEEP_MS: '500',
    CTGATE_STAGE_BACKOFF_MS: '300',
    CTGATE_STAGE_ATTEMPTS: '5',
    CTGATE_MODEL_THREADS: '2',
    CTGATE_LOG_LEVEL: 'error',
    ...extra,
  });

  before(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`Chromium is not installed at ${CHROMIUM}: apt-get install -y chromium (or set CTGATE_CHROMIUM)`);
    await requireRedis();
    // Launched while the rest starts; after() closes it whatever fails below.
    launching = chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    launching.catch(() => {});
    await orthanc.start();
    // The worker below runs in this process and holds the event loop for seconds while the models run: the
    // gateway's Redis commands get a timeout longer than that.
    gw = await startGateway(
      loadConfig(
        env({ CTGATE_HTTP_HOST: '127.0.0.1', CTGATE_HTTP_PORT: '0', CTGATE_MLLP_PORT: '0', CTGATE_LOG_LEVEL: 'debug', CTGATE_REDIS_TIMEOUT_MS: '20000' }),
      ),
      gatewayLog,
    );
    base = `http://127.0.0.1:${gw.httpPort}`;
    states = new JobStateStore(gw.redis, prefix, 1);

    // A positive study in the PACS, and its order in the queue: the worker runs it to the end.
    const p = generateChestCt({ seed: 501, kind: 'covid', size: [128, 128, 52], spacing: [2.6, 2.6, 5] });
    // The study's patient is the order's (patient identity check), in DICOM's upper-case PN form.
    const series = writeCtSeries(p.volume, {
      seed: 501,
      accessionNumber: phi.accession,
      patientId: phi.mrn,
      patientName: `${phi.family.toUpperCase()}^${phi.given.toUpperCase()}`,
      patientBirthDate: phi.birth.replaceAll('-', ''),
    });
    await orthanc.client().store(series.files.map((f) => f.bytes));
    worker = await startWorker(loadConfig(env()), silentLogger);
    const order = sampleOrder({
      accessionNumber: phi.accession,
      placerOrderNumber: phi.placer,
      patient: {
        identifiers: [{ value: phi.mrn, authority: 'GENHOSP', type: 'MR' }],
        name: { family: phi.family, given: [phi.given] },
        birthDate: phi.birth,
        sex: 'female',
      },
    });
    jobId = jobIdFor(order.sender, phi.placer);
    await gw.queue.add('screen', { order, receivedAt: new Date().toISOString(), messageControlId: 'MSG-WEB-1' }, { jobId, attempts: 2 });
    browser = await launching;
    const deadline = Date.now() + 120_000;
    for (;;) {
      const s = await gw.queue.getJobState(jobId);
      if (s === 'completed') break;
      if (s === 'failed' || Date.now() > deadline) throw new Error(`job ${s}: ${JSON.stringify(await states.get(jobId))}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    await worker.stop();
    worker = undefined;
  });

  after(async () => {
    await launching?.then(
      (b) => b.close(),
      () => {},
    );
    await worker?.stop();
    await gw?.stop();
    await orthanc.stop();
    await deleteKeys(prefix);
  });

  let page: Page;

  async function sliceShown(k: number): Promise<void> {
    await page.waitForFunction(
      (k) => {
        const img = document.getElementById('slice-img') as HTMLImageElement | null;
        return !!img && img.dataset.k === String(k) && img.src.endsWith(`/slices/${k}.png`) && img.complete && img.naturalWidth > 0;
      },
      k,
      { timeout: 10_000 },
    );
  }

  it('sends an unauthenticated visitor to the login page', async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 1400 } });
    page = await context.newPage();
    page.on('request', (r) => urls.push(r.url()));
    page.on('console', (m) => {
      if (m.type() === 'error' || /Content Security Policy|Refused to/i.test(m.text())) problems.push(m.text());
    });
    page.on('pageerror', (e) => problems.push(e.message));
    await page.goto(`${base}/jobs/${jobId}`);
    assert.equal(page.url(), `${base}/login?next=%2Fjobs%2F${jobId}`);
    assert.equal(await page.locator('h1').textContent(), 'Log in');
    const img = await context.request.get(`${base}/jobs/${jobId}/slices/0.png`, { maxRedirects: 0 });
    assert.equal(img.status(), 401, 'an image without a session is refused');
  });

  it('logs in with the token and comes back to the study page', async () => {
    await page.fill('#token', 'not-the-token-at-all');
    await page.click('button[type=submit]');
    assert.match((await page.locator('.error').textContent()) ?? '', /not accepted/);
    await page.fill('#token', TEST_TOKEN);
    await Promise.all([page.waitForURL(`${base}/jobs/${jobId}`), page.click('button[type=submit]')]);
    const cookies = await page.context().cookies();
    const session = cookies.find((c) => c.name === '__Host-ctgate_session');
    assert.ok(session, 'a session cookie');
    assert.equal(session.secure, true, 'Secure (__Host-): Chromium keeps it on http://127.0.0.1');
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Strict');
  });

  it('lists the job with its patient (as text), state, verdict and probability', async () => {
    await page.goto(`${base}/jobs`);
    const row = page.locator(`tr[data-job="${jobId}"]`);
    await row.waitFor();
    const text = (await row.textContent()) ?? '';
    assert.ok(text.includes(`${phi.family}, ${phi.given}`), `patient name shown as written: ${text}`);
    assert.ok(text.includes(phi.mrn));
    assert.match(text, /completed/);
    assert.match(text, /positive/);
    assert.match(text, /0\.\d{3}/);
    assert.equal(await page.locator('#jobs b').count(), 0, 'the name’s <b> is text, not markup');
    await page.goto(`${base}/jobs?state=failed`);
    assert.equal(await page.locator(`tr[data-job="${jobId}"]`).count(), 0, 'the filter by state');
    await page.goto(`${base}/jobs`);
    await Promise.all([page.waitForURL(`${base}/jobs/${jobId}`), row.locator('a').first().click()]);
  });

  it('shows the verdict in plain words under the banner, with the findings and the key slices', async () => {
    assert.equal(await page.locator('.banner').textContent(), 'AI screening — not for clinical use');
    assert.match((await page.locator('#verdict').textContent()) ?? '', /^Positive — the AI found lung lesions with a COVID-19-like pattern\.$/);
    const findings = (await page.locator('#findings').textContent()) ?? '';
    assert.match(findings, /operating threshold 0\.\d{3}/);
    assert.match(findings, /Lesion volume\d+\.\d mL/);
    assert.match(findings, /Bilateral(yes|no)/);
    assert.ok((await page.locator('#key-images img').count()) > 0, 'key images');
    assert.ok(
      await page
        .locator('#key-images img')
        .first()
        .evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth > 0),
    );
    assert.match((await page.locator('#seg-link').getAttribute('href')) ?? '', /\/dicom-web\/studies\/[\d.]+\/series\/[\d.]+$/);
    assert.match((await page.locator('#viewer-link').getAttribute('href')) ?? '', /^\/viewer\/viewer\?StudyInstanceUIDs=[\d.]+$/);
  });

  it('shows a key slice with the lesion overlay in red, and scrolls by key, button and slider', async () => {
    const cp = toViewerCheckpoint((await states.getAnalysis(jobId)) ?? assert.fail('no analysis'));
    const key = cp.keyImages[0]?.sliceIndex ?? assert.fail('no key slice');
    const [nx, ny, nz] = cp.size;
    await sliceShown(key);
    const viewer = page.locator('#slice-img');
    await viewer.scrollIntoViewIfNeeded();
    const shot = redPixels(await viewer.screenshot());
    assert.ok(shot.red > 20, `red overlay pixels in the screenshot of key slice ${key}: ${shot.red} of ${shot.total}`);

    // Keyboard: one slice on.
    const k1 = key + 1 < nz ? key + 1 : key - 1;
    await page.keyboard.press(k1 > key ? 'ArrowRight' : 'ArrowLeft');
    await sliceShown(k1);
    assert.equal(
      await page.locator('#slice-label').textContent(),
      `slice ${k1 + 1} / ${nz}${cp.keyImages.some((k) => k.sliceIndex === k1) ? ' · key slice' : ''}`,
    );
    // Slider: to a slice without lesion, which shows no red.
    const empty = Array.from({ length: nz }, (_, k) => k).find((k) => maskSlice(cp.maskBits as Uint8Array, nx * ny, k).every((v) => v === 0));
    assert.ok(empty !== undefined, 'a slice without lesion');
    await page.locator('#slice-range').fill(String(empty));
    await sliceShown(empty);
    assert.equal(redPixels(await viewer.screenshot()).red, 0, `no red on slice ${empty}`);
    // Buttons.
    const step = empty + 1 < nz ? 1 : -1;
    await page.click(step > 0 ? '#next' : '#prev');
    await sliceShown(empty + step);
    assert.equal(page.url(), `${base}/jobs/${jobId}?k=${empty + step}#viewer`, 'the address follows the slice (job id and slice number only)');
  });

  it('answers 404 for an unknown job and 400 for a bad slice index', async () => {
    const r404 = await page.goto(`${base}/jobs/ord-00000000000000000000000000000000`);
    assert.equal(r404?.status(), 404);
    const r400 = await page.context().request.get(`${base}/jobs/${jobId}/slices/100000.png`);
    assert.equal(r400.status(), 400);
  });

  it('logs out: the pages send the browser to the login again', async () => {
    await page.goto(`${base}/jobs`);
    await Promise.all([page.waitForURL(`${base}/login`), page.click('header form button')]);
    await page.goto(`${base}/jobs`);
    assert.equal(page.url(), `${base}/login?next=%2Fjobs`);
  });

  it('put no PHI in any URL the browser asked for, nor in the gateway log; no CSP violation or script error', () => {
    assert.ok(urls.length > 10, `${urls.length} requests seen`);
    const needles = [phi.family, 'Hara', 'Webtest', phi.given, phi.mrn, phi.accession, phi.placer, phi.birth, '19610203'];
    for (const u of urls) {
      const decoded = decodeURIComponent(u);
      for (const n of needles) assert.ok(!decoded.includes(n), `${n} in ${u}`);
      assert.match(
        u.slice(base.length),
        /^\/(logout|login(\?next=%2Fjobs(%2Ford-[0-9a-f]+)?)?|jobs(\?state=[a-z]+)?|jobs\/ord-[0-9a-f]+(\?k=\d+(#viewer)?)?|jobs\/ord-[0-9a-f]+\/(slices|key-images)\/\d+\.png)$/,
        `an address of the pages: ${u}`,
      );
    }
    assert.ok(logLines.length > 0, 'the gateway logged');
    for (const line of logLines) for (const n of needles) assert.ok(!line.includes(n), `${n} logged: ${line}`);
    assert.ok(!logLines.some((l) => l.includes(TEST_TOKEN)), 'the token is not logged');
    assert.deepEqual(
      problems.filter((p) => !/status of 40[014]/.test(p)),
      [],
    );
  });
});
