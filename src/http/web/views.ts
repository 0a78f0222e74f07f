/**
 * The pages as pure functions of what they show (no I/O): the job list, the study page with its slice viewer,
 * the login form and error pages. Every value from an order goes through `html`, which escapes it.
 */

import type { Order } from '../../domain/order.js';
import type { JobState, StageName } from '../../jobs/job-state.js';
import { STAGES } from '../../jobs/job-state.js';
import type { Analysis } from '../../results/context.js';
import { type Html, html, raw } from './html.js';

export const BANNER = 'AI screening — not for clinical use';

const CSS = `
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;background:#f4f6f9}
header{display:flex;align-items:center;gap:1.2rem;padding:.6rem 1.2rem;background:#1d2430;color:#fff}
header a{color:#fff;text-decoration:none;font-weight:600}
header form{margin-left:auto}
header button{background:none;border:1px solid #8a94a6;color:#fff;border-radius:4px;padding:.2rem .7rem;cursor:pointer}
.banner{background:#fff3cd;color:#664d03;border-bottom:1px solid #e8d48b;padding:.45rem 1.2rem;font-weight:600}
main{padding:1rem 1.2rem;max-width:1200px}
h1{font-size:1.3rem;margin:.2rem 0 1rem}
h2{font-size:1.05rem;margin:1.4rem 0 .5rem}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{padding:.35rem .55rem;border-bottom:1px solid #e2e6ec;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600;font-size:.85rem}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.nowrap{white-space:nowrap}
.muted{color:#677185}
.filters a{margin-right:.8rem}
.filters a.on{font-weight:700;text-decoration:none;color:#1d2430}
.state{display:inline-block;padding:0 .45rem;border-radius:3px;font-size:.8rem;background:#e2e6ec}
.state-failed{background:#f8d7da;color:#842029}.state-completed{background:#d1e7dd;color:#0f5132}.state-active{background:#cfe2ff;color:#084298}
.verdict{font-size:1.15rem;font-weight:700;padding:.7rem 1rem;border-radius:6px;margin:.5rem 0 1rem;background:#fff;border-left:6px solid #8a94a6}
.notice{padding:.5rem 1rem;border-radius:6px;margin:.5rem 0;background:#eef4fb;border-left:6px solid #3b6ea8}
.verdict-positive{border-color:#c0392b}.verdict-negative{border-color:#2e8b57}.verdict-not-assessable{border-color:#c08a00}
.error{background:#f8d7da;color:#842029;padding:.7rem 1rem;border-radius:6px;margin:.5rem 0 1rem}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;background:#fff;padding:.7rem 1rem;border-radius:6px;margin:0}
dl.facts dt{color:#677185}dl.facts dd{margin:0}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:1rem}
.keys{display:flex;gap:.8rem;flex-wrap:wrap}
.keys figure{margin:0;background:#fff;padding:.4rem;border-radius:6px}
.keys img{display:block;width:200px;height:auto;image-rendering:pixelated;background:#000}
.keys figcaption{font-size:.8rem}
#viewer{background:#111;color:#ddd;padding:.8rem;border-radius:6px;display:inline-block}
#slice-img{display:block;width:512px;max-width:100%;height:auto;image-rendering:pixelated;background:#000}
.controls{display:flex;align-items:center;gap:.6rem;margin-top:.6rem}
.controls a,.controls button{color:#fff;background:#3b4658;border:0;border-radius:4px;padding:.25rem .7rem;text-decoration:none;cursor:pointer;font:inherit}
.controls input[type=range]{flex:1;min-width:200px}
form.login{background:#fff;padding:1.2rem;border-radius:6px;max-width:420px}
form.login input{width:100%;padding:.45rem;margin:.3rem 0 .8rem;font:inherit}
form.login button{padding:.45rem 1.2rem;font:inherit}
progress{width:80px;vertical-align:middle}
`;

export interface PageOptions {
  title: string;
  nonce: string;
  body: Html;
  /** Reload the page every n seconds (a meta refresh: works without script). */
  refreshSeconds?: number;
  /** Show the header with navigation and the logout button. */
  signedIn?: boolean;
  script?: string;
}

export function page(o: PageOptions): Html {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
${o.refreshSeconds ? html`<meta http-equiv="refresh" content="${o.refreshSeconds}">` : ''}
<title>${o.title} · ctgate</title>
<style nonce="${o.nonce}">${raw(CSS)}</style>
</head>
<body>
<header><a href="/jobs">ctgate</a>${
    o.signedIn ? html`<a href="/jobs">Jobs</a><form method="post" action="/logout"><button type="submit">Log out</button></form>` : ''
  }</header>
<div class="banner" role="note">${BANNER}</div>
<main>
${o.body}
</main>
${o.script ? html`<script nonce="${o.nonce}">${raw(o.script)}</script>` : ''}
</body>
</html>
`;
}

/** `sso`: OIDC is on; the page says a bearer token from the organisation's sign-on also opens the pages. */
export function loginPage(o: { nonce: string; next?: string; error?: string; sso?: boolean }): Html {
  return page({
    title: 'Log in',
    nonce: o.nonce,
    body: html`<h1>Log in</h1>
${o.error ? html`<p class="error" role="alert">${o.error}</p>` : ''}
${
  o.sso
    ? html`<p>Enter the ctgate access token, or sign in through a proxy/viewer that sends your organisation's bearer token (single sign-on). This page has no sign-on button of its own.</p>`
    : ''
}
<form class="login" method="post" action="/login" autocomplete="off">
<label for="token">Access token</label>
<input id="token" name="token" type="password" required autofocus>
${o.next ? html`<input type="hidden" name="next" value="${o.next}">` : ''}
<button type="submit">Log in</button>
</form>`,
  });
}

export function errorPage(o: { nonce: string; status: number; message: string; signedIn?: boolean }): Html {
  return page({
    title: `Error ${o.status}`,
    nonce: o.nonce,
    signedIn: o.signedIn,
    body: html`<h1>${o.status === 404 ? 'Not found' : `Error ${o.status}`}</h1><p>${o.message}</p><p><a href="/jobs">Back to the jobs</a></p>`,
  });
}

// ---- formatting ---------------------------------------------------------------------------------------------------

export function formatTime(iso: string | number | undefined): string {
  if (iso === undefined || iso === '') return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

export function formatMs(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms)) return '';
  return ms < 1000 ? `${Math.round(ms)} ms` : ms < 120_000 ? `${(ms / 1000).toFixed(1)} s` : `${(ms / 60_000).toFixed(1)} min`;
}

export function formatProbability(p: number | null | undefined): string {
  return typeof p === 'number' && Number.isFinite(p) ? p.toFixed(3) : '—';
}

export function patientName(order: Order | undefined): string {
  if (!order) return '';
  const n = order.patient.name;
  return [n.family, n.given.join(' ')].filter((s) => s).join(', ');
}

export function mrn(order: Order | undefined): string {
  if (!order) return '';
  const ids = order.patient.identifiers;
  const mr = ids.find((i) => i.type === 'MR') ?? ids[0];
  return mr ? mr.value : '';
}

const VERDICT_WORDS: Record<string, string> = {
  positive: 'Positive — the AI found lung lesions with a COVID-19-like pattern',
  negative: 'Negative — the AI found no COVID-19-like pattern',
  'not-assessable': 'Not assessable — the AI could not assess this study',
};

/** A negative in full, by what the AI saw (src/inference/findings.ts, Category): opacity of another kind is not normal. */
const CATEGORY_WORDS: Record<string, string> = {
  'other-opacity':
    'Negative for a COVID-19-like pattern — but the AI found lung opacity of another kind (other pneumonia, tumour, nodule or scarring are possible)',
  'no-significant-opacity': 'Negative — the AI found no COVID-19-like pattern and no significant lung opacity',
};

export function verdictWords(verdict: string | undefined, category?: string): string {
  if (!verdict) return 'No result yet';
  if (verdict === 'negative' && category && CATEGORY_WORDS[category]) return CATEGORY_WORDS[category];
  return VERDICT_WORDS[verdict] ?? verdict;
}

const STATE_NAMES = ['all', 'waiting', 'active', 'delayed', 'prioritized', 'completed', 'failed'] as const;

// ---- job list -----------------------------------------------------------------------------------------------------

export interface JobRow {
  id: string;
  /** BullMQ state: waiting, active, delayed, prioritized, completed, failed. */
  state: string;
  stage?: string;
  percent?: number;
  receivedAt?: string;
  order?: Order;
  verdict?: string;
  probability?: number | null;
  models?: string[];
  totalMs?: number;
  failedReason?: string;
  /** A waiting or retrying job's last error and whose it is. */
  lastError?: { peer?: string; message: string };
}

const PEER_WORDS: Record<string, string> = { pacs: 'PACS', 'pacs-dimse': 'PACS (DIMSE)', fhir: 'FHIR server', 'emr-oru': 'EMR (ORU)', model: 'models' };

/** The peer of a job's lastError in words. */
function peerWords(peer: string): string {
  return PEER_WORDS[peer] ?? 'ctgate';
}

export function jobListPage(o: { nonce: string; rows: JobRow[]; filter: string; counts: Record<string, number>; refreshSeconds: number }): Html {
  const total = Object.values(o.counts).reduce((s, n) => s + n, 0);
  const filters = STATE_NAMES.map((s) => {
    const n = s === 'all' ? total : (o.counts[s] ?? 0);
    const href = s === 'all' ? '/jobs' : `/jobs?state=${s}`;
    return html`<a href="${href}" class="${o.filter === s ? 'on' : ''}">${s} (${n})</a>`;
  });
  const rows = o.rows.map(
    (r) => html`<tr data-job="${r.id}">
<td>${formatTime(r.receivedAt)}</td>
<td><a href="/jobs/${r.id}">${patientName(r.order) || r.id}</a><div class="muted">MRN ${mrn(r.order)}</div></td>
<td>${r.order?.accessionNumber ?? ''}</td>
<td><span class="state state-${r.state}">${r.state}</span>${r.failedReason ? html`<div class="muted">${r.failedReason}</div>` : ''}${
      r.lastError && !r.failedReason
        ? html`<div class="error last-error" data-peer="${r.lastError.peer ?? ''}">${r.lastError.peer ? `${peerWords(r.lastError.peer)}: ` : ''}${r.lastError.message}</div>`
        : ''
    }</td>
<td class="nowrap">${r.stage ?? ''}${r.percent !== undefined ? html` <progress max="100" value="${r.percent}">${r.percent} %</progress> ${r.percent} %` : ''}</td>
<td class="verdict-cell">${r.verdict ?? ''}</td>
<td class="num">${r.verdict ? formatProbability(r.probability) : ''}</td>
<td class="num">${formatMs(r.totalMs)}</td>
<td class="muted">${(r.models ?? []).join(', ')}</td>
</tr>`,
  );
  return page({
    title: 'Jobs',
    nonce: o.nonce,
    signedIn: true,
    refreshSeconds: o.refreshSeconds,
    body: html`<h1>Screening jobs</h1>
<p class="filters">${filters}</p>
<table id="jobs">
<thead><tr><th>Received</th><th>Patient</th><th>Accession</th><th>State</th><th>Stage</th><th>Verdict</th><th>Probability</th><th>Time</th><th>Models</th></tr></thead>
<tbody>${rows.length ? rows : html`<tr><td colspan="9" class="muted">No jobs${o.filter === 'all' ? '' : ` in state ${o.filter}`}.</td></tr>`}</tbody>
</table>
<p class="muted">Refreshes every ${o.refreshSeconds} s. Newest first; up to 100 jobs.</p>`,
  });
}

// ---- study page ---------------------------------------------------------------------------------------------------

export interface StudyView {
  id: string;
  /** BullMQ state, or 'removed' when only the checkpoint is left. */
  state: string;
  progress?: { stage?: string; percent?: number };
  order?: Order;
  receivedAt?: string;
  checkpoint: JobState | null;
  failedReason?: string;
  analysis?: Omit<Analysis, 'lesionMask'>;
  keyImages: { sliceIndex: number; lesionAreaMm2: number }[];
  /** Slices of the analysed series (0 when there is no analysis). */
  sliceCount: number;
  /** The slice the viewer opens at. */
  slice: number;
  /** Server-rendered slices need the PACS. */
  viewer: boolean;
  /** viewerUrl: the study in OHIF at /viewer (with the SEG, SR and key images beside the CT). */
  links: { fhirReportId?: string; fhirReportUrl?: string; segUrl?: string; viewerUrl?: string };
}

function fact(label: string, value: Html | string | number | undefined): Html {
  return value === undefined || value === '' ? html`` : html`<dt>${label}</dt><dd>${value}</dd>`;
}

function patientFacts(order: Order | undefined, receivedAt: string | undefined): Html {
  if (!order) return html`<p class="muted">The order is no longer in the queue.</p>`;
  const p = order.patient;
  return html`<dl class="facts" id="patient">
${fact('Patient', patientName(order))}
${fact('Identifiers', p.identifiers.map((i) => `${i.value} (${[i.type, i.authority].filter((s) => s).join(', ')})`).join('; '))}
${fact('Birth date', p.birthDate)}
${fact('Sex', p.sex)}
${fact('Accession', order.accessionNumber)}
${fact('Placer order', order.placerOrderNumber)}
${fact('Filler order', order.fillerOrderNumber)}
${fact('Procedure', `${order.procedure.text} (${order.procedure.code})`)}
${fact('Priority', order.priority)}
${fact('Ordered by', order.orderingProvider ? `${order.orderingProvider.family}, ${order.orderingProvider.given} (${order.orderingProvider.id})` : undefined)}
${fact('Ordered at', formatTime(order.orderDateTime))}
${fact('Received', formatTime(receivedAt))}
${fact('Sender', `${order.sender.application} / ${order.sender.facility}`)}
</dl>`;
}

function statusFacts(v: StudyView): Html {
  const st = v.checkpoint;
  const stage = st?.stage ?? v.progress?.stage;
  return html`<dl class="facts" id="status">
${fact('Job', v.id)}
${fact('State', html`<span class="state state-${v.state}">${v.state}</span>`)}
${fact('Stage', stage ? `${stage}${v.progress?.percent !== undefined ? ` (${v.progress.percent} %)` : ''}` : undefined)}
${fact('Started', formatTime(st?.startedAt))}
${fact('Finished', formatTime(st?.finishedAt))}
${fact(
  'Stage times',
  STAGES.filter((s) => st?.timingsMs[s] !== undefined)
    .map((s: StageName) => `${s} ${formatMs(st?.timingsMs[s])}${(st?.attempts[s] ?? 1) > 1 ? ` (${st?.attempts[s]} attempts)` : ''}`)
    .join(' · '),
)}
</dl>`;
}

function findingsFacts(a: Omit<Analysis, 'lesionMask'>): Html {
  const f = a.findings;
  const pct = (n: number) => `${n.toFixed(1)} %`;
  return html`<dl class="facts" id="findings">
${fact('Probability', html`<span id="probability">${formatProbability(a.probability)}</span> (operating threshold ${formatProbability(a.threshold)})`)}
${f ? fact('Lesion volume', `${f.lesionVolumeMl.toFixed(1)} mL`) : ''}
${f ? fact('Right lung involved', pct(f.lungInvolvementPercent.right)) : ''}
${f ? fact('Left lung involved', pct(f.lungInvolvementPercent.left)) : ''}
${f ? fact('Both lungs together', pct(f.lungInvolvementPercent.total)) : ''}
${f ? fact('Lesions', String(f.lesionCount)) : ''}
${f ? fact('Bilateral', f.bilateral ? 'yes' : 'no') : ''}
${f && f.peripheralShare !== null ? fact('Peripheral share', `${Math.round(f.peripheralShare * 100)} %`) : ''}
${fact('Models', a.models.map((m) => `${m.name} ${m.version}`).join(', '))}
${fact('Ran on', a.executionProvider)}
${fact('Completed', formatTime(a.completedAt))}
</dl>`;
}

export function studyPage(v: StudyView & { nonce: string }): Html {
  const a = v.analysis;
  const st = v.checkpoint;
  const finished = v.state === 'completed' || v.state === 'failed' || v.state === 'removed' || st?.stage === 'done' || st?.stage === 'cancelled';
  const failure =
    v.state === 'failed'
      ? html`<div class="error" id="failure" role="alert"><strong>The job failed${st?.lastError ? html` at stage ${st.lastError.stage}` : ''}.</strong> ${
          st?.lastError?.message ?? v.failedReason ?? 'no reason recorded'
        }</div>`
      : st?.lastError && !finished
        ? html`<div class="error" id="retrying" data-peer="${st.lastError.peer ?? ''}">${
            st.lastError.stage === 'wait-for-study' && st.lastError.peer === 'pacs' ? 'Waiting for the study' : html`Retrying stage ${st.lastError.stage}`
          }${st.lastError.peer ? html` — ${peerWords(st.lastError.peer)}` : ''}: ${st.lastError.message}${
            st.lastError.since && st.lastError.since !== st.lastError.at
              ? html` <span class="muted">(since ${formatTime(st.lastError.since)}, last ${formatTime(st.lastError.at)})</span>`
              : ''
          }</div>`
        : '';
  const verdict = a
    ? html`<div class="verdict verdict-${a.verdict}" id="verdict">${verdictWords(a.verdict, a.category)}${a.verdict === 'not-assessable' && a.reason ? html`: <span id="reason">${a.reason}</span>` : ''}.</div>`
    : html`<div class="verdict" id="verdict">${st?.stage === 'cancelled' ? 'Cancelled — no result' : v.state === 'failed' ? 'No result — the job failed' : 'No result yet'}</div>`;
  const shared = st?.outputs.analyze?.reusedFrom;
  const oru = st?.outputs['send-oru'];
  const notices = [
    shared
      ? html`<div class="notice" id="shared-analysis">The analysis is shared with order ${shared.placerOrderNumber}${
          shared.accessionNumber ? ` (accession ${shared.accessionNumber})` : ''
        }, made ${formatTime(shared.analyzedAt)} (same series, same model versions): the SEG, key images and report in the PACS are that order's (<a href="/jobs/${shared.jobId}">its job</a>).</div>`
      : '',
    st?.waitingFor && !finished
      ? html`<div class="notice" id="waiting-for">Waiting for <a href="/jobs/${st.waitingFor.jobId}">job ${st.waitingFor.jobId}</a>, which is analysing the same series (since ${formatTime(st.waitingFor.since)}); its analysis will be shared.</div>`
      : '',
    oru && 'deliveryUnknown' in oru && oru.deliveryUnknown ? html`<div class="error" id="oru-delivery-unknown">${oru.deliveryUnknown}</div>` : '',
  ];
  const links = [
    v.links.fhirReportUrl
      ? html`<li><a id="fhir-link" href="${v.links.fhirReportUrl}" rel="noreferrer">FHIR DiagnosticReport ${v.links.fhirReportId}</a></li>`
      : v.links.fhirReportId
        ? html`<li>FHIR DiagnosticReport ${v.links.fhirReportId}</li>`
        : '',
    v.links.segUrl ? html`<li><a id="seg-link" href="${v.links.segUrl}" rel="noreferrer">DICOM SEG series (DICOMweb)</a></li>` : '',
    v.links.viewerUrl ? html`<li><a id="viewer-link" href="${v.links.viewerUrl}">The study in the viewer (OHIF)</a></li>` : '',
  ];
  const keyImages = v.keyImages.map(
    (k, n) => html`<figure>
<a href="/jobs/${v.id}?k=${k.sliceIndex}#viewer" data-k="${k.sliceIndex}" class="key-link"><img src="/jobs/${v.id}/key-images/${n}.png" alt="key slice ${k.sliceIndex + 1} with the lesion in red"></a>
<figcaption>Slice ${k.sliceIndex + 1} · lesion ${k.lesionAreaMm2.toFixed(0)} mm²</figcaption>
</figure>`,
  );
  const viewer =
    a && v.sliceCount > 0
      ? v.viewer
        ? html`<h2 id="viewer-title">Slices</h2>
<div id="viewer" data-base="/jobs/${v.id}/slices/" data-count="${v.sliceCount}" data-k="${v.slice}" data-keys="${v.keyImages.map((k) => k.sliceIndex).join(',')}">
<img id="slice-img" src="/jobs/${v.id}/slices/${v.slice}.png" alt="CT slice in the lung window, lesion in red" width="512" data-k="${v.slice}">
<div class="controls">
<a id="prev" href="/jobs/${v.id}?k=${Math.max(0, v.slice - 1)}#viewer" aria-label="previous slice">◀ Prev</a>
<input id="slice-range" type="range" min="0" max="${v.sliceCount - 1}" value="${v.slice}" aria-label="slice">
<a id="next" href="/jobs/${v.id}?k=${Math.min(v.sliceCount - 1, v.slice + 1)}#viewer" aria-label="next slice">Next ▶</a>
<span id="slice-label">slice ${v.slice + 1} / ${v.sliceCount}</span>
</div>
<p class="muted">Keys: ← → or ↑ ↓ one slice, Page Up/Down ten, Home/End; the mouse wheel over the image scrolls.</p>
</div>`
        : html`<p class="muted">The slice viewer needs the PACS (CTGATE_PACS_URL is not set on the gateway).</p>`
      : '';
  return page({
    title: `Job ${v.id}`,
    nonce: v.nonce,
    signedIn: true,
    refreshSeconds: finished ? undefined : 5,
    script: viewer && v.viewer ? VIEWER_JS : undefined,
    body: html`<h1>Chest CT screening</h1>
${verdict}
${failure}
${notices}
<div class="grid">
<section><h2>Patient and order</h2>${patientFacts(v.order, v.receivedAt)}</section>
<section><h2>Job</h2>${statusFacts(v)}</section>
</div>
${a ? html`<h2>Findings</h2>${findingsFacts(a)}` : ''}
${links.some((l) => l !== '') ? html`<h2>Results elsewhere</h2><ul id="links">${links}</ul>` : ''}
${keyImages.length ? html`<h2>Key slices</h2><div class="keys" id="key-images">${keyImages}</div>` : ''}
${viewer}`,
  });
}

/** The slice scroller: prev/next, range, keys and wheel; neighbours are fetched ahead. No inline handlers (CSP). */
const VIEWER_JS = `(() => {
  const v = document.getElementById('viewer');
  if (!v) return;
  const img = document.getElementById('slice-img');
  const range = document.getElementById('slice-range');
  const label = document.getElementById('slice-label');
  const prev = document.getElementById('prev');
  const next = document.getElementById('next');
  const base = v.dataset.base;
  const n = Number(v.dataset.count);
  const keys = new Set((v.dataset.keys || '').split(',').filter((s) => s !== '').map(Number));
  const ahead = new Map();
  let k = Number(v.dataset.k);
  const src = (i) => base + i + '.png';
  const fetchAhead = (i) => {
    if (i < 0 || i >= n || ahead.has(i)) return;
    const im = new Image();
    im.src = src(i);
    ahead.set(i, im);
    if (ahead.size > 24) ahead.delete(ahead.keys().next().value);
  };
  const show = (i) => {
    i = Math.max(0, Math.min(n - 1, Math.round(i)));
    if (i === k && img.dataset.k === String(i)) return;
    k = i;
    img.src = src(k);
    img.dataset.k = String(k);
    v.dataset.k = String(k);
    range.value = String(k);
    label.textContent = 'slice ' + (k + 1) + ' / ' + n + (keys.has(k) ? ' · key slice' : '');
    prev.href = '?k=' + Math.max(0, k - 1) + '#viewer';
    next.href = '?k=' + Math.min(n - 1, k + 1) + '#viewer';
    history.replaceState(null, '', '?k=' + k + '#viewer');
    fetchAhead(k + 1);
    fetchAhead(k - 1);
  };
  prev.addEventListener('click', (e) => { e.preventDefault(); show(k - 1); });
  next.addEventListener('click', (e) => { e.preventDefault(); show(k + 1); });
  range.addEventListener('input', () => show(Number(range.value)));
  for (const a of document.querySelectorAll('a.key-link')) {
    a.addEventListener('click', (e) => { e.preventDefault(); show(Number(a.dataset.k)); v.scrollIntoView({ block: 'nearest' }); });
  }
  document.addEventListener('keydown', (e) => {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const t = e.target;
    if (t && t !== range && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA')) return;
    const step = { ArrowLeft: -1, ArrowUp: -1, ArrowRight: 1, ArrowDown: 1, PageUp: -10, PageDown: 10 }[e.key];
    if (step !== undefined) { e.preventDefault(); show(k + step); }
    else if (e.key === 'Home') { e.preventDefault(); show(0); }
    else if (e.key === 'End') { e.preventDefault(); show(n - 1); }
  });
  img.addEventListener('wheel', (e) => { e.preventDefault(); show(k + (e.deltaY > 0 ? 1 : -1)); }, { passive: false });
  label.textContent = 'slice ' + (k + 1) + ' / ' + n + (keys.has(k) ? ' · key slice' : '');
  fetchAhead(k + 1);
  fetchAhead(k - 1);
})();`;
