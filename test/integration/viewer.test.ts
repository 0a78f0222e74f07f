/**
 * OHIF v3 (npm @ohif/app) at ctgate's /viewer, in headless Chromium, against a real gateway and Orthanc holding a
 * synthetic CT study plus ctgate's own results for it (from `ctgate analyze` with the trained models): SEG, the
 * Comprehensive 3D SR, the key images and their key object selection. A signed-in user sees the study in the list,
 * opens it, and finds the SEG, SR, key-image and KOS series beside the CT; the SEG shows as a coloured overlay;
 * the SR opens and shows its measurements, drawn on their key slice. Every console error and CSP refusal is
 * collected (and written to CTGATE_VIEWER_DIAG, when set, with screenshots).
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Browser, chromium, type Page } from 'playwright-core';
import { type AnalyzeIo, analyzeCommand } from '../../src/cli/analyze.js';
import { ohifDist } from '../../src/http/viewer.js';
import { decodePng } from '../../src/imaging/png.js';
import { readSeg } from '../../src/results/seg/read.js';
import { writeCtSeries, writeSeriesToDir } from '../../src/synthetic/dicom-writer.js';
import { generateChestCt } from '../../src/synthetic/phantom.js';
import { startTestGateway, TEST_TOKEN, type TestGateway } from '../helpers/gateway.js';
import { TestOrthanc } from '../helpers/orthanc.js';
import { unlessPresent } from '../helpers/requires.js';

const CHROMIUM = process.env.CTGATE_CHROMIUM ?? '/usr/bin/chromium';
const DIAG = process.env.CTGATE_VIEWER_DIAG;

function io(): AnalyzeIo & { stderr: () => string } {
  let err = '';
  return { out: () => {}, err: (t) => (err += t), tty: false, stderr: () => err };
}

/** Pixels clearly warm (orange/red, not grey nor the viewport's blue markings): a SEG overlay or a key image's lesion. */
function colouredPixels(png: Buffer): number {
  const { width, height, channels, pixels } = decodePng(png);
  let n = 0;
  for (let i = 0; i < width * height; i++) {
    const r = pixels[i * channels] as number;
    const b = pixels[i * channels + 2] as number;
    if (r > 150 && r - b > 60) n++;
  }
  return n;
}

describe('OHIF viewer at /viewer (Chromium, gateway, Orthanc)', { skip: unlessPresent(ohifDist() ? false : '@ohif/app is not installed') }, () => {
  const orthanc = new TestOrthanc();
  let gw: TestGateway;
  let browser: Browser;
  let launching: Promise<Browser> | undefined;
  let base = '';
  let root = '';
  let page: Page;
  let studyUid = '';
  /** Instance numbers of the CT slices that have a SEG frame with lesion in it. */
  const segSlices = new Map<number, number>();
  let sliceCount = 0;
  /** Instance number of the first key slice: the one the SR's (merged) measurement is drawn on. */
  let firstKeyInstance = 0;
  const problems: string[] = [];
  const failed: string[] = [];

  async function diag(name: string): Promise<void> {
    if (!DIAG) return;
    await mkdir(DIAG, { recursive: true });
    await page.screenshot({ path: join(DIAG, `${name}.png`) }).catch(() => {});
    await writeFile(
      join(DIAG, `${name}.txt`),
      (await page
        .locator('body')
        .textContent()
        .catch(() => '')) ?? '',
    );
    await writeFile(join(DIAG, 'console.txt'), [...problems, '--- failed requests', ...failed].join('\n'));
  }

  before(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`Chromium is not installed at ${CHROMIUM}: apt-get install -y chromium (or set CTGATE_CHROMIUM)`);
    launching = chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--use-gl=swiftshader', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist'],
    });
    launching.catch(() => {});
    await orthanc.start();
    gw = await startTestGateway({ CTGATE_PACS_URL: orthanc.dicomweb, CTGATE_HTTP_HOST: '127.0.0.1' });
    base = `http://127.0.0.1:${gw.httpPort}`;

    // A synthetic positive study and ctgate's results for it, as `ctgate analyze` writes them.
    root = await mkdtemp(join(tmpdir(), 'ctgate-viewer-'));
    // The trained models (models/): a SEG with the lesions only, so some slices have frames and some not.
    const manifest = 'models/manifest.json';
    const p = generateChestCt({ seed: 501, kind: 'covid', size: [128, 128, 52], spacing: [2.6, 2.6, 5] });
    const series = writeCtSeries(p.volume, {
      seed: 501,
      accessionNumber: 'ACC-VIEW-1',
      patientId: 'MRN-VIEW-1',
      patientName: 'VIEWER^TEST',
      seriesDescription: 'synthetic chest CT',
    });
    studyUid = series.studyInstanceUid;
    sliceCount = series.files.length;
    const study = join(root, 'study');
    await writeSeriesToDir(study, series);
    const out = join(root, 'out');
    const log = io();
    assert.equal(await analyzeCommand([study, '--out', out, '--manifest', manifest, '--threads', '2', '--providers', 'cpu'], log), 0, log.stderr());
    const results = (await readdir(out)).filter((f) => f.endsWith('.dcm'));
    assert.ok(
      results.includes('seg.dcm') && results.includes('report-sr.dcm') && results.includes('key-objects.dcm') && results.some((f) => /^key-\d/.test(f)),
      results.join(' '),
    );
    const numberOf = new Map(series.files.map((f) => [f.sopInstanceUid, f.instanceNumber]));
    const findings = JSON.parse(await readFile(join(out, 'findings.json'), 'utf8')) as { keySlices: { sopInstanceUid: string }[] };
    firstKeyInstance = numberOf.get(findings.keySlices[0]?.sopInstanceUid ?? '') ?? 0;
    assert.ok(firstKeyInstance > 0, 'a first key slice in the series');
    for (const fr of readSeg(new Uint8Array(await readFile(join(out, 'seg.dcm')))).frames) {
      const n = numberOf.get(fr.sourceSopInstanceUid ?? '');
      const lesion = fr.pixels.reduce((a, v) => a + (v > 0 ? 1 : 0), 0);
      if (n !== undefined && lesion > 0) segSlices.set(n, lesion);
    }
    await orthanc.client().store(series.files.map((f) => f.bytes));
    await orthanc.client().store(await Promise.all(results.map(async (f) => new Uint8Array(await readFile(join(out, f))))));
    browser = await launching;
  });

  after(async () => {
    await launching?.then(
      (b) => b.close(),
      () => {},
    );
    await gw?.cleanup();
    await orthanc.stop();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('sends a visitor without a session to the login, then shows the study list', async () => {
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning' || /Content Security Policy|Refused to/i.test(m.text()))
        problems.push(`${m.type()}: ${m.text()} (${m.location().url})`);
    });
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    context.on('response', (r) => {
      if (r.status() >= 400) failed.push(`${r.status()} ${r.url()}`);
    });
    page.on('requestfailed', (r) => failed.push(`failed ${r.url()} ${r.failure()?.errorText ?? ''}`));
    const anon = await context.request.get(`${base}/viewer/app-config.js`);
    assert.equal(anon.status(), 401, 'no viewer file without a session');
    // A link to a study (as the demo and the study page give): the login, then back to that study.
    const deep = `/viewer/viewer?StudyInstanceUIDs=${studyUid}`;
    await page.goto(`${base}${deep}`);
    assert.equal(page.url(), `${base}/login?next=${encodeURIComponent(deep)}`);
    await page.fill('#token', TEST_TOKEN);
    await Promise.all([page.waitForURL(`${base}${deep}`), page.click('button[type=submit]')]);
    await page.goto(`${base}/viewer/`);
    // The config names ctgate's own proxy; the looser CSP is the viewer's only, the pages keep theirs.
    const config = await context.request.get(`${base}/viewer/app-config.js`);
    assert.equal(config.status(), 200);
    assert.ok((await config.text()).includes(`"qidoRoot": "${base}/dicom-web"`));
    const csp = (await context.request.get(`${base}/viewer/`)).headers()['content-security-policy'] ?? '';
    assert.match(csp, /script-src 'self' 'nonce-[^']+' 'unsafe-eval' 'wasm-unsafe-eval'/);
    assert.match(csp, /frame-ancestors 'none'/);
    const pageCsp = (await context.request.get(`${base}/jobs`)).headers()['content-security-policy'] ?? '';
    assert.doesNotMatch(pageCsp, /unsafe/, 'the pages keep their strict CSP');
    await page
      .getByText('ACC-VIEW-1')
      .first()
      .waitFor({ timeout: 60_000 })
      .catch(async (e) => {
        await diag('study-list');
        throw e;
      });
    await diag('study-list');
    const text = (await page.locator('body').textContent()) ?? '';
    assert.match(text, /VIEWER, TEST/, 'the patient');
    assert.match(text, /CT\\KO\\OT\\SEG\\SR/, 'the modalities: the CT, our key object selection (KO), key images (OT), SEG and SR');
  });

  /** The viewport: the largest canvas on the page, as a screenshot. */
  async function viewport(): Promise<Buffer> {
    const i = await page.evaluate(() => {
      const cs = [...document.querySelectorAll('canvas')];
      let best = -1;
      let area = 0;
      cs.forEach((c, k) => {
        const r = c.getBoundingClientRect();
        if (r.width * r.height > area) {
          area = r.width * r.height;
          best = k;
        }
      });
      return best;
    });
    assert.ok(i >= 0, 'a canvas');
    return page.locator('canvas').nth(i).screenshot();
  }

  it('opens the study: the CT shows, the series list names our SEG, SR and key images, and the SEG is an overlay', async () => {
    await page.goto(`${base}/viewer/viewer?StudyInstanceUIDs=${studyUid}`);
    // The first-visit tour, if it comes.
    const skip = page.getByText('Skip all');
    await skip.waitFor({ timeout: 20_000 }).then(
      () => skip.click(),
      () => {},
    );
    const seg = page.getByText('AI lesion segmentation (NOT FOR CLINICAL USE)').first();
    await seg.waitFor({ timeout: 60_000 }).catch(async (e) => {
      await diag('viewer');
      throw e;
    });
    await page.getByText('synthetic chest CT').first().waitFor();
    await page.getByText('AI key images (NOT FOR CLINICAL USE)').first().waitFor();
    await page.getByText('AI measurements (NOT FOR CLINICAL USE)').first().waitFor();
    await page.getByText('AI key image selection (NOT FOR CLINICAL USE)').first().waitFor();
    await page.waitForTimeout(2000);
    await diag('viewer');
    const ct = await viewport();
    const { width, height } = decodePng(ct);
    assert.ok(width > 300 && height > 300, `a viewport (${width} × ${height})`);
    const grey = colouredPixels(ct);

    // Double-click the SEG: OHIF shows it over its CT and asks whether to open (hydrate) it.
    await seg.dblclick();
    const yes = page.getByRole('button', { name: 'Yes' });
    await yes.waitFor({ timeout: 30_000 }).catch(async (e) => {
      await diag('seg-clicked');
      throw e;
    });
    await yes.click();
    await page.waitForTimeout(5000);
    await diag('seg-loaded');

    // Slice by slice from the top: colour exactly on the slices (by instance number, as OHIF shows it) whose SEG frame has lesion.
    for (let i = 0; i < sliceCount + 4; i++) await page.keyboard.press('ArrowUp');
    const seen = new Map<number, number>();
    for (let i = 0; i < sliceCount + 2; i++) {
      await page.waitForTimeout(250);
      const m = /I:\s*(\d+)\s*\(\d+\/\d+\)/.exec((await page.locator('body').textContent()) ?? '');
      const c = m ? colouredPixels(await viewport()) : 0;
      if (m) seen.set(Number(m[1]), c);
      if (DIAG && c > Math.max(0, ...seen.values()) - 1 && c > 0) await page.screenshot({ path: join(DIAG, 'seg-lesion-slice.png') });
      await page.keyboard.press('ArrowDown');
    }
    const line = [...seen].sort((a, b) => a[0] - b[0]).map(([n, c]) => `${n}${segSlices.has(n) ? `[${segSlices.get(n)}]` : ''}:${c}`);
    problems.push(`info: warm pixels by instance number ([lesion pixels in its SEG frame]): ${line.join(' ')}`);
    await diag('seg-slices');
    assert.equal(seen.size, sliceCount, `every slice visited: ${line.join(' ')}`);
    assert.ok(segSlices.size > 0 && segSlices.size < sliceCount, `slices with and without SEG frames: ${line.join(' ')}`);
    assert.ok(grey < 20, `the CT alone is grey (${grey} warm pixels)`);
    // A voxel is several screen pixels across: every slice with lesion in its frame shows the overlay, no other does.
    for (const [n, c] of seen) {
      if (segSlices.has(n)) assert.ok(c > 20, `overlay on slice ${n}: ${line.join(' ')}`);
      else assert.ok(c < 20, `no overlay on slice ${n} (no SEG frame): ${line.join(' ')}`);
    }
  });

  it('shows the key images, with their red lesion overlay', async () => {
    await page.getByText('AI key images (NOT FOR CLINICAL USE)').first().dblclick();
    await page.waitForTimeout(4000);
    await diag('key-images');
    const key = colouredPixels(await viewport());
    problems.push(`info: key image coloured pixels ${key}`);
    assert.ok(key > 100, `a key image with its red lesion overlay (${key} warm pixels)`);
  });

  /** Pixels clearly green (OHIF draws SR annotations in green): the outline and the labels of a measurement. */
  function greenPixels(png: Buffer): number {
    const { width, height, channels, pixels } = decodePng(png);
    let n = 0;
    for (let i = 0; i < width * height; i++) {
      const r = pixels[i * channels] as number;
      const g = pixels[i * channels + 1] as number;
      const b = pixels[i * channels + 2] as number;
      if (g > 150 && g - r > 60 && g - b > 60) n++;
    }
    return n;
  }

  it('opens the measurement report on its first key slice, with the outline and the values drawn, without a script error', async () => {
    const before = problems.length;
    const labelled = () =>
      page
        .waitForFunction(() => /Volume: [\d.]+ ml/.test(document.body.textContent ?? ''), undefined, { timeout: 30_000, polling: 500 })
        .then(() => true)
        .catch(() => false);
    await page.getByText('AI measurements (NOT FOR CLINICAL USE)').first().dblclick();
    await page.waitForTimeout(6000);
    // OHIF 3.13 sometimes shows the SR's slice without drawing the measurement (in about half the runs here, after the
    // key images were opened in the same viewport, no error logged): a pointer move over the viewport, then a fresh
    // page with the SR opened first. Every check below is still made on what is then shown.
    if (!(await labelled())) {
      const box = await page.locator('canvas').first().boundingBox();
      if (box) await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
      // Up to four fresh pages: on a loaded 2-core CI machine one recovery was not always enough (a CI run of 2026-12-05).
      for (let attempt = 0; attempt < 4 && !(await labelled()); attempt++) {
        problems.push(`info: SR measurement not drawn; fresh page ${attempt + 1}`);
        await page.reload();
        await page.getByText('AI measurements (NOT FOR CLINICAL USE)').first().waitFor({ timeout: 60_000 });
        await page.waitForTimeout(3000);
        await page.getByText('AI measurements (NOT FOR CLINICAL USE)').first().dblclick();
        await page.waitForTimeout(6000);
      }
    }
    await diag('sr');
    const sr = problems.slice(before).filter((p) => /pageerror|TypeError|ReferencedSOPSequence/.test(p));
    assert.deepEqual(sr, [], problems.slice(before).join('\n'));
    // One merged measurement (every group shares the tracking UID): drawn on the slice of the first SCOORD, the
    // first key slice, with the lesion group's values as its labels.
    const text = (await page.locator('body').textContent()) ?? '';
    const shown = /I:\s*(\d+)\s*\(\d+\/\d+\)/.exec(text);
    assert.equal(Number(shown?.[1]), firstKeyInstance, `the SR viewport shows the first key slice (${shown?.[0]})`);
    assert.match(text, /Volume: [\d.]+ ml/, 'its lesion volume');
    assert.match(text, /Number of lesions: [\d.]+/, 'its lesion count');
    const green = greenPixels(await viewport());
    problems.push(`info: SR viewport green pixels ${green}`);
    assert.ok(green > 200, `the outline and labels drawn (${green} green pixels)`);
  });

  it('logged no CSP refusal nor script error', () => {
    const bad = problems.filter((p) => /Content Security Policy|Refused to|pageerror|EvalError|WebAssembly/i.test(p));
    assert.deepEqual(bad, [], problems.join('\n'));
    assert.deepEqual(
      failed.filter((f) => !/ERR_ABORTED/.test(f)),
      [],
      'no request failed',
    );
  });
});
