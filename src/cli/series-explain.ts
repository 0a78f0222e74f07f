import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { DicomWebClient, type PacsAuth } from '../dicomweb/client.js';
import { num, TAG } from '../dicomweb/dicom-json.js';
import { PacsError } from '../dicomweb/errors.js';
import { seriesCandidates } from '../dicomweb/series-candidates.js';
import { findStudy } from '../dicomweb/study-finder.js';
import { DEFAULT_SERIES_RULES, loadSeriesRules, normalTiltDeg, type SeriesCandidate, SeriesRulesError, selectSeries } from '../imaging/series-selection.js';

export const SERIES_EXPLAIN_USAGE = `usage:
  ctgate series explain --pacs URL [--user U --password P | --token T] (--study UID | --accession ACC)
                        [--rules mappings/series.yaml] [--json] [--timeout-ms 15000]
      which series of the study the selection rules accept or refuse, and why, and which one would be chosen
      (exit 0: a series is chosen; 3: none fits, or the study is not found; 1: usage or connection error)`;

const DEFAULT_RULES_FILE = 'mappings/series.yaml';

export interface CommandIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

const processIo: CommandIo = { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t) };

const cell = (v: unknown) => (v === undefined || v === null || v === '' ? '-' : String(v));

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ')).join('\n');
}

/** `ctgate series explain`: a dry run of series selection against a real PACS. */
export async function seriesExplainCommand(args: string[], io: CommandIo = processIo): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        pacs: { type: 'string' },
        user: { type: 'string' },
        password: { type: 'string' },
        token: { type: 'string' },
        study: { type: 'string' },
        accession: { type: 'string' },
        rules: { type: 'string' },
        json: { type: 'boolean', default: false },
        'timeout-ms': { type: 'string' },
      },
      allowPositionals: false,
    }));
  } catch (e) {
    io.err(`ctgate series explain: ${(e as Error).message}\n${SERIES_EXPLAIN_USAGE}\n`);
    return 1;
  }
  const usage = (why: string) => {
    io.err(`ctgate series explain: ${why}\n${SERIES_EXPLAIN_USAGE}\n`);
    return 1;
  };
  const pacs = values.pacs as string | undefined;
  const study = values.study as string | undefined;
  const accession = values.accession as string | undefined;
  if (!pacs) return usage('--pacs is required');
  if (!/^https?:\/\//i.test(pacs)) return usage('--pacs must be an http(s) URL of the DICOMweb root');
  if (Boolean(study) === Boolean(accession)) return usage('give exactly one of --study and --accession');
  if (values.token && (values.user || values.password)) return usage('give either --user/--password or --token, not both');
  if (Boolean(values.user) !== Boolean(values.password)) return usage('--user and --password go together');
  const timeoutMs = values['timeout-ms'] === undefined ? 15_000 : Number(values['timeout-ms']);
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) return usage('--timeout-ms must be a positive number');

  const rulesFile = (values.rules as string | undefined) ?? (existsSync(DEFAULT_RULES_FILE) ? DEFAULT_RULES_FILE : undefined);
  let rules = DEFAULT_SERIES_RULES;
  try {
    if (rulesFile) rules = loadSeriesRules(rulesFile);
  } catch (e) {
    if (e instanceof SeriesRulesError) {
      io.err(`ctgate series explain: ${e.message}\n`);
      return 1;
    }
    throw e;
  }

  const auth: PacsAuth = values.token
    ? { kind: 'bearer', token: values.token as string }
    : values.user
      ? { kind: 'basic', user: values.user as string, password: values.password as string }
      : { kind: 'none' };
  const client = new DicomWebClient({ url: pacs, auth, timeoutMs, retries: 1, retryBaseMs: 200 });
  const json = values.json === true;

  try {
    const found = await findStudy(client, { studyInstanceUid: study, accessionNumber: accession });
    if (found.status !== 'found') {
      if (json) io.out(`${JSON.stringify({ study: null, status: found.status, reason: found.reason }, null, 2)}\n`);
      else io.out(`Study ${found.status}: ${found.reason}\n`);
      return 3;
    }
    const candidates = await seriesCandidates(client, found.studyInstanceUid);
    const sel = selectSeries(candidates, rules);
    const byUid = new Map<string, SeriesCandidate>(candidates.map((c) => [c.seriesInstanceUid, c]));
    if (json) {
      const report = {
        study: { studyInstanceUid: found.studyInstanceUid, matchedBy: found.matchedBy, instances: num(found.study, TAG.NumberOfStudyRelatedInstances) },
        rules: rulesFile ?? '(built-in defaults)',
        chosen: sel.chosen?.seriesInstanceUid ?? null,
        reason: sel.reason ?? null,
        series: sel.decisions.map((d) => ({ ...d, candidate: byUid.get(d.seriesInstanceUid) })),
      };
      io.out(`${JSON.stringify(report, null, 2)}\n`);
    } else {
      const lines: string[] = [];
      lines.push(`Study ${found.studyInstanceUid} (found by ${found.matchedBy}); ${candidates.length} series; rules: ${rulesFile ?? 'built-in defaults'}`);
      lines.push('');
      const rows: string[][] = [['#', 'MOD', 'DESCRIPTION', 'THICK', 'N', 'KERNEL', 'TILT', 'IMAGE TYPE', 'DECISION']];
      for (const d of sel.decisions) {
        const c = byUid.get(d.seriesInstanceUid) as SeriesCandidate;
        const tilt = c.orientation ? normalTiltDeg(c.orientation) : undefined;
        const thick = c.sliceThickness ?? c.sliceSpacing;
        rows.push([
          cell(c.seriesNumber),
          cell(c.modality),
          cell(c.description),
          thick === undefined ? '-' : `${Number(thick.toFixed(3))}`,
          String(c.numberOfInstances),
          cell(c.kernel),
          tilt === undefined ? '-' : `${tilt.toFixed(0)}°`,
          cell(c.imageType.join('\\')),
          d.accepted ? (d.rank === 1 ? 'CHOSEN' : `accepted #${d.rank}`) : 'refused',
        ]);
      }
      lines.push(table(rows));
      lines.push('');
      for (const d of sel.decisions) {
        lines.push(`series ${cell(d.seriesNumber)} ${d.description ? `"${d.description}" ` : ''}(${d.seriesInstanceUid}):`);
        for (const r of d.reasons) lines.push(`  - ${r}`);
      }
      lines.push('');
      if (sel.chosen) {
        lines.push(`Chosen: series ${cell(sel.chosen.seriesNumber)} "${sel.chosen.description ?? ''}" (${sel.chosen.seriesInstanceUid})`);
      } else {
        lines.push(sel.reason ?? 'No series fits.');
      }
      io.out(`${lines.join('\n')}\n`);
    }
    return sel.chosen ? 0 : 3;
  } catch (e) {
    if (e instanceof PacsError) {
      io.err(`ctgate series explain: PACS error (${e.kind}): ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}
