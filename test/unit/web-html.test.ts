/**
 * The pages' HTML: escaping by construction (every order field, which comes from the EMR, shown as text and never
 * as markup), the verdict in plain words with the banner, failed and not-assessable jobs with their reasons.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { escapeHtml, html, raw } from '../../src/http/web/html.js';
import { BANNER, jobListPage, loginPage, type StudyView, studyPage, verdictWords } from '../../src/http/web/views.js';
import type { JobState } from '../../src/jobs/job-state.js';
import { sampleOrder } from '../helpers/result-context.js';

/** A copy of `v` with every string replaced by a script tag naming where it sits. */
function poison<T>(v: T, path = 'order'): T {
  if (typeof v === 'string') return `<script>alert("${path}")</script>'"&` as T;
  if (Array.isArray(v)) return v.map((x, i) => poison(x, `${path}.${i}`)) as T;
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, poison(x, `${path}.${k}`)])) as T;
  return v;
}

function stringPaths(v: unknown, path = 'order'): string[] {
  if (typeof v === 'string') return [path];
  if (Array.isArray(v)) return v.flatMap((x, i) => stringPaths(x, `${path}.${i}`));
  if (v && typeof v === 'object') return Object.entries(v).flatMap(([k, x]) => stringPaths(x, `${path}.${k}`));
  return [];
}

const finished: JobState = {
  jobId: 'ord-0123',
  stage: 'done',
  attempts: { retrieve: 1, analyze: 1 },
  timingsMs: { 'wait-for-study': 400, retrieve: 800, analyze: 7200 },
  outputs: { analyze: { verdict: 'positive', probability: 0.93, models: ['covid-resnet@0.1.0'], executionProvider: 'cpu' } },
  startedAt: '2026-11-27T10:00:00.000Z',
  updatedAt: '2026-11-27T10:00:09.000Z',
  finishedAt: '2026-11-27T10:00:09.000Z',
};

const analysis: NonNullable<StudyView['analysis']> = {
  verdict: 'positive',
  category: 'covid-19-like',
  probability: 0.931,
  threshold: 0.613,
  findings: {
    lesionVolumeMl: 42.25,
    lesionVolumeMlBySide: { left: 20, right: 22.25 },
    lungVolumeMl: { left: 2000, right: 2200, total: 4200 },
    lungInvolvementPercent: { left: 1, right: 1.0113, total: 1.006 },
    lesionCount: 3,
    bilateral: true,
    peripheralShare: 0.8,
    keySlices: [{ index: 12, lesionAreaMm2: 300 }],
  },
  models: [
    { name: 'lesion-unetpp', version: '0.1.0' },
    { name: 'covid-resnet', version: '0.1.0' },
  ],
  executionProvider: 'cpu',
  completedAt: '2026-11-27T10:00:08.000Z',
};

function view(over: Partial<StudyView> = {}): StudyView & { nonce: string } {
  return {
    nonce: 'n0nce',
    id: 'ord-0123',
    state: 'completed',
    order: sampleOrder(),
    receivedAt: '2026-11-27T09:59:00.000Z',
    checkpoint: finished,
    analysis,
    keyImages: [{ sliceIndex: 12, lesionAreaMm2: 300 }],
    sliceCount: 32,
    slice: 12,
    viewer: true,
    links: {
      segUrl: 'https://ctgate.example/dicom-web/studies/1.2/series/1.3',
      fhirReportId: 'dr-1',
      fhirReportUrl: 'https://fhir.example/DiagnosticReport/dr-1',
    },
    ...over,
  };
}

describe('web: HTML escaping', () => {
  it('escapes the five HTML specials and the backtick', () => {
    assert.equal(escapeHtml(`<a href="x" onclick='y'>&\``), '&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&#96;');
  });

  it('html escapes interpolations, joins arrays, drops null/undefined/false, keeps Html as it is', () => {
    const inner = html`<b>${'<i>'}</b>`;
    assert.equal(html`<p>${inner}${['<', raw('<br>')]}${null}${undefined}${false}${0}</p>`.value, '<p><b>&lt;i&gt;</b>&lt;<br>0</p>');
  });

  it('shows every order field of the study page and the job list as text, never as markup', () => {
    const order = poison(sampleOrder());
    const pages = [
      studyPage(view({ order })).value,
      jobListPage({
        nonce: 'n',
        rows: [{ id: 'ord-1', state: 'completed', order, verdict: 'positive', probability: 0.9 }],
        filter: 'all',
        counts: {},
        refreshSeconds: 10,
      }).value,
    ];
    for (const page of pages) {
      assert.doesNotMatch(page, /<script>alert/, 'no injected script element');
      assert.doesNotMatch(page, /alert\("/, 'no unescaped quote inside the injected text');
      for (const m of page.matchAll(/<script\b[^>]*>/g)) assert.equal(m[0], '<script nonce="n0nce">', 'only the viewer script, with its nonce');
    }
    // Every field the study page shows is there, escaped (the ones left out are protocol details, not for people).
    const shown = stringPaths(order).filter((p) => pages[0]?.includes(`&lt;script&gt;alert(&quot;${p}&quot;)&lt;/script&gt;&#39;&quot;&amp;`));
    const expected = [
      'order.patient.name.family',
      'order.patient.name.given.0',
      'order.patient.identifiers.0.value',
      'order.patient.identifiers.0.authority',
      'order.patient.identifiers.0.type',
      'order.patient.birthDate',
      'order.patient.sex',
      'order.accessionNumber',
      'order.placerOrderNumber',
      'order.fillerOrderNumber',
      'order.procedure.text',
      'order.procedure.code',
      'order.priority',
      'order.orderingProvider.id',
      'order.orderingProvider.family',
      'order.orderingProvider.given',
      'order.orderDateTime',
      'order.sender.application',
      'order.sender.facility',
    ];
    for (const p of expected) assert.ok(shown.includes(p), `${p} shown escaped`);
    for (const p of ['order.patient.name.family', 'order.patient.identifiers.0.value', 'order.accessionNumber']) {
      assert.ok(pages[1]?.includes(`&lt;script&gt;alert(&quot;${p}&quot;)`), `${p} in the list`);
    }
  });

  it('escapes the failure reason, the not-assessable reason and the login "next" value', () => {
    const evil = '<img src=x onerror=alert(1)>';
    const failed = studyPage(
      view({
        state: 'failed',
        analysis: undefined,
        checkpoint: { ...finished, stage: 'retrieve', lastError: { stage: 'retrieve', message: evil, retryable: false, at: '2026-11-27T10:00:00Z' } },
      }),
    ).value;
    assert.ok(failed.includes('&lt;img src=x onerror=alert(1)&gt;'));
    assert.doesNotMatch(failed, /<img src=x/);
    const na = studyPage(view({ analysis: { ...analysis, verdict: 'not-assessable', reason: evil, probability: null, findings: null } })).value;
    assert.doesNotMatch(na, /<img src=x/);
    assert.doesNotMatch(loginPage({ nonce: 'n', next: '"><script>x</script>' }).value, /<script>x/);
  });
});

describe('web: study page', () => {
  it('puts the banner, the verdict in words, probability and threshold, findings, key images, viewer and links on the page', () => {
    const page = studyPage(view()).value;
    assert.ok(page.includes(BANNER));
    assert.match(page, /id="verdict">Positive — the AI found lung lesions with a COVID-19-like pattern\./);
    assert.match(page, /<span id="probability">0\.931<\/span> \(operating threshold 0\.613\)/);
    assert.match(page, /Lesion volume<\/dt><dd>42\.3 mL/);
    assert.match(page, /Right lung involved<\/dt><dd>1\.0 %/);
    assert.match(page, /Lesions<\/dt><dd>3</);
    assert.match(page, /Bilateral<\/dt><dd>yes</);
    assert.match(page, /src="\/jobs\/ord-0123\/key-images\/0\.png"/);
    assert.match(page, /id="slice-img" src="\/jobs\/ord-0123\/slices\/12\.png"/);
    assert.match(page, /id="slice-range" type="range" min="0" max="31" value="12"/);
    assert.match(page, /href="https:\/\/fhir\.example\/DiagnosticReport\/dr-1"/);
    assert.match(page, /href="https:\/\/ctgate\.example\/dicom-web\/studies\/1\.2\/series\/1\.3"/);
    assert.doesNotMatch(page, /http-equiv="refresh"/, 'a finished job does not reload (it would reset the viewer)');
    assert.doesNotMatch(page, /style="/, 'no style attributes (the CSP allows only the nonce’d style element)');
    assert.doesNotMatch(page, /\son[a-z]+=/, 'no inline event handlers');
  });

  it('says why a job failed, at which stage', () => {
    const page = studyPage(
      view({
        state: 'failed',
        analysis: undefined,
        keyImages: [],
        sliceCount: 0,
        checkpoint: {
          ...finished,
          stage: 'wait-for-study',
          lastError: { stage: 'wait-for-study', message: 'no study in the PACS', retryable: false, at: 'x' },
        },
      }),
    ).value;
    assert.match(page, /id="failure"[^>]*><strong>The job failed at stage wait-for-study\.<\/strong> no study in the PACS/);
    assert.match(page, /No result — the job failed/);
    assert.doesNotMatch(page, /id="viewer"/);
  });

  it('says why a study is not assessable', () => {
    const page = studyPage(view({ analysis: { ...analysis, verdict: 'not-assessable', reason: 'no lungs found', probability: null, findings: null } })).value;
    assert.match(page, /Not assessable — the AI could not assess this study: <span id="reason">no lungs found<\/span>/);
  });

  it('reloads a running job and shows its stage', () => {
    const page = studyPage(
      view({
        state: 'active',
        analysis: undefined,
        keyImages: [],
        sliceCount: 0,
        progress: { stage: 'analyze', percent: 40 },
        checkpoint: { ...finished, stage: 'analyze' },
      }),
    ).value;
    assert.match(page, /http-equiv="refresh" content="5"/);
    assert.match(page, /analyze \(40 %\)/);
    assert.match(page, /No result yet/);
  });

  it('names verdicts in words', () => {
    assert.match(verdictWords('negative'), /no COVID-19-like pattern/);
    assert.equal(verdictWords(undefined), 'No result yet');
    // A negative with opacity of another kind must not read as normal, nor as COVID-19.
    assert.match(verdictWords('negative', 'other-opacity'), /lung opacity of another kind/);
    assert.doesNotMatch(verdictWords('negative', 'other-opacity'), /^Positive/);
    assert.match(verdictWords('negative', 'no-significant-opacity'), /no significant lung opacity/);
    assert.match(verdictWords('positive', 'covid-19-like'), /COVID-19-like pattern/);
  });
});
