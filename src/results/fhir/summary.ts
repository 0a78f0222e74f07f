import type { Category } from '../../inference/findings.js';
import { identityNote, type ResultContext, resultCategory, sharedAnalysisNote } from '../context.js';

const fixed = (v: number, digits: number) => v.toFixed(digits);
const pct = (v: number) => (v > 0 && v < 0.05 ? '<0.1' : fixed(v, 1));

/** Where the lesions are, in words: "bilateral", "right lung only", or nothing without lesion. */
function distribution(ctx: ResultContext): string | undefined {
  const f = ctx.analysis.findings;
  if (!f || f.lesionVolumeMl <= 0) return undefined;
  if (f.bilateral) return 'bilateral';
  return f.lesionVolumeMlBySide.right > 0 ? 'right lung only' : 'left lung only';
}

/** The first words of the conclusion per category. */
export const CATEGORY_HEADS: Record<Exclude<Category, 'not-assessable'>, string> = {
  'covid-19-like': 'COVID-19 pneumonia pattern likely',
  'other-opacity': 'lung opacity, not COVID-19-like (another cause such as other pneumonia, tumour or scarring is possible)',
  'no-significant-opacity': 'no significant lung opacity, COVID-19 pneumonia pattern not detected',
};

/**
 * The one line a clinician reads in the chart, e.g. "AI screening (not for clinical use): COVID-19 pneumonia
 * pattern likely — probability 0.93, lesions 23.5 mL, 0.6 % of lung, bilateral".
 */
export function conclusionLine(ctx: ResultContext, prefix: string): string {
  const { analysis: a } = ctx;
  const category = resultCategory(a);
  if (category === 'not-assessable') return `${prefix}: not assessable — ${a.reason?.trim() || 'no reason recorded'}`;
  const head = CATEGORY_HEADS[category];
  const parts: string[] = [];
  if (a.probability !== null) parts.push(`probability ${fixed(a.probability, 2)}`);
  const f = a.findings;
  if (f && f.lesionVolumeMl > 0) {
    parts.push(`lesions ${fixed(f.lesionVolumeMl, 1)} mL`, `${pct(f.lungInvolvementPercent.total)} % of lung`);
    const where = distribution(ctx);
    if (where) parts.push(where);
  } else if (f) parts.push('no lesions found');
  return parts.length ? `${prefix}: ${head} — ${parts.join(', ')}` : `${prefix}: ${head}`;
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);

/** A one-page, self-contained HTML summary (key image inline) for EMR viewers that render presentedForm. */
export function summaryHtml(ctx: ResultContext, conclusion: string): string {
  const { analysis: a, order, study } = ctx;
  const f = a.findings;
  const rows: [string, string][] = [
    ['Patient', `${order.patient.name.family}, ${order.patient.name.given.join(' ')}`],
    ['Patient ID', order.patient.identifiers.map((i) => `${i.value} (${i.authority})`).join(', ')],
    ['Accession', study.accessionNumber ?? order.accessionNumber ?? ''],
    ['Study date', study.studyDate ?? ''],
    ['Verdict', a.verdict],
    ['Category', resultCategory(a)],
    ['Probability', a.probability === null ? '—' : `${fixed(a.probability, 3)} (threshold ${fixed(a.threshold, 3)})`],
  ];
  if (f) {
    rows.push(
      ['Lesion volume', `${fixed(f.lesionVolumeMl, 1)} mL (left ${fixed(f.lesionVolumeMlBySide.left, 1)}, right ${fixed(f.lesionVolumeMlBySide.right, 1)})`],
      [
        'Lung involvement',
        `${pct(f.lungInvolvementPercent.total)} % (left ${pct(f.lungInvolvementPercent.left)} %, right ${pct(f.lungInvolvementPercent.right)} %)`,
      ],
      ['Lesions', `${f.lesionCount}${f.bilateral ? ', bilateral' : ''}`],
    );
  }
  if (a.verdict === 'not-assessable') rows.push(['Reason', a.reason ?? '']);
  rows.push(['Models', a.models.map((m) => `${m.name} ${m.version}`).join(', ')], ['Completed', a.completedAt]);
  const shared = sharedAnalysisNote(ctx);
  if (shared) rows.push(['Shared analysis', shared]);
  const identity = identityNote(ctx);
  if (identity) rows.unshift(['Patient identity', identity]);
  const key = ctx.keyImages[0];
  const img = key
    ? `<figure><img alt="Key image with lesion overlay" src="data:image/png;base64,${Buffer.from(key.png).toString('base64')}"><figcaption>Slice ${key.sliceIndex + 1}, lesion ${fixed(key.lesionAreaMm2, 0)} mm²</figcaption></figure>`
    : '';
  const link = ctx.links.resultPageUrl ? `<p><a href="${escapeHtml(ctx.links.resultPageUrl)}">Open the result in ctgate</a></p>` : '';
  return [
    '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>AI chest CT screening</title>',
    '<style>body{font-family:sans-serif;max-width:42em;margin:1em auto}th{text-align:left;padding-right:1em}img{max-width:100%}.c{font-weight:bold}</style></head><body>',
    '<h1>AI chest CT screening</h1>',
    `<p class="c">${escapeHtml(conclusion)}</p>`,
    `<table>${rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join('')}</table>`,
    img,
    link,
    '<p><small>Preliminary automated result. A physician must review the images; the algorithm misses small ground-glass lesions and can confuse other viral pneumonia.</small></p>',
    '</body></html>',
  ].join('\n');
}
