import { existsSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { aeTitleProblem, DimseError, type DimsePeer } from '../dicom/dcmtk.js';
import { candidateFromFoundSeries, findSeries, findStudies, matchValueProblem } from '../dicom/find.js';
import { DicomWebClient, type PacsAuth } from '../dicomweb/client.js';
import { num, TAG } from '../dicomweb/dicom-json.js';
import { PacsError } from '../dicomweb/errors.js';
import { seriesCandidates } from '../dicomweb/series-candidates.js';
import { findStudy } from '../dicomweb/study-finder.js';
import { readStudyPatient, type StudyPatient } from '../dicomweb/study-patient.js';
import type { Order } from '../domain/order.js';
import { decideIdentity, describeRule, IDENTITY_FIELDS, type IdentityField, type PatientIdentityRule } from '../domain/patient-identity.js';
import { decodeMessageBytes } from '../hl7/text.js';
import { DEFAULT_SERIES_RULES, loadSeriesRules, normalTiltDeg, type SeriesCandidate, SeriesRulesError, selectSeries } from '../imaging/series-selection.js';
import { evaluateMessage } from '../orders/evaluate.js';
import { loadMappings, MappingsError } from '../orders/mappings.js';

export const SERIES_EXPLAIN_USAGE = `usage:
  ctgate series explain --pacs URL [--user U --password P | --token T] (--study UID | --accession ACC)
                        [--rules mappings/series.yaml] [--json] [--timeout-ms 15000]
                        [--order ORDER.hl7 [--mappings mappings/orders.yaml]] [--show-patient]
  ctgate series explain --dimse HOST:PORT --called-ae AE [--calling-ae AE] (--study UID | --accession ACC) [...]
      (C-FIND with DCMTK's findscu, Study Root: instance attributes the PACS does not return at series level,
      such as ImageOrientationPatient, are unknown, and the rules refuse a series for lacking them)
      which series of the study the selection rules accept or refuse, and why, and which one would be chosen;
      the study's patient attributes as the identity check reads them (present or not; values with --show-patient),
      and with --order, whether that order's patient matches under its sender's rule
      (exit 0: a series is chosen; 3: none fits, or the study is not found; 4: the order's patient does not match;
      1: usage or connection error)`;

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
        dimse: { type: 'string' },
        'called-ae': { type: 'string' },
        'calling-ae': { type: 'string' },
        user: { type: 'string' },
        password: { type: 'string' },
        token: { type: 'string' },
        study: { type: 'string' },
        accession: { type: 'string' },
        rules: { type: 'string' },
        json: { type: 'boolean', default: false },
        'timeout-ms': { type: 'string' },
        order: { type: 'string' },
        mappings: { type: 'string' },
        'show-patient': { type: 'boolean', default: false },
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
  const dimse = values.dimse as string | undefined;
  if (!pacs && !dimse) return usage('--pacs is required (or --dimse HOST:PORT for C-FIND)');
  if (pacs && dimse) return usage('give either --pacs (DICOMweb) or --dimse (C-FIND), not both');
  if (pacs && !/^https?:\/\//i.test(pacs)) return usage('--pacs must be an http(s) URL of the DICOMweb root');
  if (Boolean(study) === Boolean(accession)) return usage('give exactly one of --study and --accession');
  if (values.token && (values.user || values.password)) return usage('give either --user/--password or --token, not both');
  if (Boolean(values.user) !== Boolean(values.password)) return usage('--user and --password go together');
  const timeoutMs = values['timeout-ms'] === undefined ? 15_000 : Number(values['timeout-ms']);
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) return usage('--timeout-ms must be a positive number');
  let peer: DimsePeer | undefined;
  if (dimse) {
    if (values.user || values.token) return usage('--user, --password and --token are for --pacs; DIMSE uses AE titles');
    const m = /^([^\s:]+|\[[0-9a-f:]+\]):(\d{1,5})$/i.exec(dimse);
    const port = Number(m?.[2]);
    if (!m?.[1] || m[1].startsWith('-') || !(port >= 1 && port <= 65535)) return usage('--dimse must be HOST:PORT (port 1..65535)');
    const calledAe = (values['called-ae'] as string | undefined)?.trim();
    if (!calledAe) return usage('--called-ae is required with --dimse');
    const callingAe = ((values['calling-ae'] as string | undefined) ?? process.env.CTGATE_DICOM_AE_TITLE ?? 'CTGATE').trim();
    for (const [flag, ae] of [
      ['--called-ae', calledAe],
      ['--calling-ae', callingAe],
    ] as const) {
      const problem = aeTitleProblem(ae);
      if (problem) return usage(`${flag}: expected ${problem}`);
    }
    const matchProblem = matchValueProblem((study ?? accession) as string);
    if (matchProblem) return usage(`${study ? '--study' : '--accession'}: expected ${matchProblem}`);
    peer = { host: m[1].replace(/^\[|\]$/g, ''), port, calledAe, callingAe, timeoutS: Math.max(1, Math.ceil(timeoutMs / 1000)), label: 'the PACS' };
  } else if (values['called-ae'] || values['calling-ae']) return usage('--called-ae and --calling-ae go with --dimse');

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

  // The order to check the study's patient against (optional), read with the order mappings as the gateway would.
  let order: { order: Order; rule: PatientIdentityRule } | undefined;
  if (values.mappings && !values.order) return usage('--mappings goes with --order');
  if (values.order) {
    const mappingsFile = (values.mappings as string | undefined) ?? process.env.CTGATE_MAPPINGS_FILE ?? 'mappings/orders.yaml';
    try {
      const mappings = loadMappings(mappingsFile);
      const ev = evaluateMessage(decodeMessageBytes(readFileSync(values.order as string)), mappings, { quoteValues: true });
      if (ev.kind === 'reject') return usage(`--order: the message would be rejected: ${ev.error.reason}`);
      const o = (ev.orders.find((x) => x.chestCt.chestCt) ?? ev.orders[0])?.order;
      if (!o) return usage('--order: the message carries no order');
      order = { order: o, rule: mappings.patientIdentity(o.sender.facility) };
    } catch (e) {
      if (e instanceof MappingsError) {
        io.err(`ctgate series explain: ${e.message}\n`);
        return 1;
      }
      return usage(`--order: ${(e as Error).message}`);
    }
  }
  const showPatient = values['show-patient'] === true;

  const json = values.json === true;

  try {
    const gathered = peer
      ? await gatherDimse(peer, { studyInstanceUid: study, accessionNumber: accession })
      : await gatherDicomWeb(pacs as string, values, timeoutMs, { studyInstanceUid: study, accessionNumber: accession });
    if (gathered.status !== 'found') {
      if (json) io.out(`${JSON.stringify({ study: null, status: gathered.status, reason: gathered.reason }, null, 2)}\n`);
      else io.out(`Study ${gathered.status}: ${gathered.reason}\n`);
      return 3;
    }
    const { studyInstanceUid, matchedBy, instances, candidates, unknown } = gathered;
    const sel = selectSeries(candidates, rules);
    const byUid = new Map<string, SeriesCandidate>(candidates.map((c) => [c.seriesInstanceUid, c]));
    const patients = await gathered.patients(sel.chosen?.seriesInstanceUid);
    const identity = patientReport(patients.study, patients.series, order, showPatient);
    if (json) {
      const report = {
        study: { studyInstanceUid, matchedBy, instances },
        via: peer ? 'dimse' : 'dicomweb',
        rules: rulesFile ?? '(built-in defaults)',
        chosen: sel.chosen?.seriesInstanceUid ?? null,
        reason: sel.reason ?? null,
        series: sel.decisions.map((d) => ({ ...d, candidate: byUid.get(d.seriesInstanceUid) })),
        ...(peer ? { unknownAttributes: unknown } : {}),
        patient: identity.json,
      };
      io.out(`${JSON.stringify(report, null, 2)}\n`);
    } else {
      const lines: string[] = [];
      lines.push(
        `Study ${studyInstanceUid} (found by ${matchedBy}${peer ? ', C-FIND' : ''}); ${candidates.length} series; rules: ${rulesFile ?? 'built-in defaults'}`,
      );
      if (peer) {
        lines.push(
          unknown.length > 0
            ? `C-FIND gave no ${unknown.join(', ')} for some series: unknown there (instance-level attributes a PACS need not return at series level)`
            : 'C-FIND returned every attribute the rules read; slice spacing is not measured over DIMSE (no instance positions)',
        );
      }
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
      lines.push('', ...identity.lines);
      io.out(`${lines.join('\n')}\n`);
    }
    if (identity.refused) return 4;
    return sel.chosen ? 0 : 3;
  } catch (e) {
    if (e instanceof PacsError) {
      io.err(`ctgate series explain: PACS error (${e.kind}): ${e.message}\n`);
      return 1;
    }
    if (e instanceof DimseError) {
      io.err(`ctgate series explain: DIMSE error (${e.kind}): ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}

type Gathered =
  | { status: 'not-found' | 'ambiguous' | 'unusable'; reason: string }
  | {
      status: 'found';
      studyInstanceUid: string;
      matchedBy: string;
      instances: number | undefined;
      candidates: SeriesCandidate[];
      /** Attributes the rules read that the PACS gave for no series or only some (DIMSE only). */
      unknown: string[];
      patients: (chosenSeriesUid: string | undefined) => Promise<{ study: StudyPatient | null; series: StudyPatient | null }>;
    };

/** The study, its series as candidates and its patient over DICOMweb (QIDO, and WADO-RS metadata where needed). */
async function gatherDicomWeb(
  pacs: string,
  values: Record<string, string | boolean | undefined>,
  timeoutMs: number,
  match: { studyInstanceUid?: string; accessionNumber?: string },
): Promise<Gathered> {
  const auth: PacsAuth = values.token
    ? { kind: 'bearer', token: values.token as string }
    : values.user
      ? { kind: 'basic', user: values.user as string, password: values.password as string }
      : { kind: 'none' };
  const client = new DicomWebClient({ url: pacs, auth, timeoutMs, retries: 1, retryBaseMs: 200 });
  const found = await findStudy(client, match);
  if (found.status !== 'found') return { status: found.status, reason: found.reason };
  const uid = found.studyInstanceUid;
  return {
    status: 'found',
    studyInstanceUid: uid,
    matchedBy: found.matchedBy,
    instances: num(found.study, TAG.NumberOfStudyRelatedInstances),
    candidates: await seriesCandidates(client, uid),
    unknown: [],
    patients: async (seriesUid) => ({
      study: await readStudyPatient(client, uid),
      series: seriesUid ? await readStudyPatient(client, uid, seriesUid) : null,
    }),
  };
}

/** The study, its series and its patient by C-FIND (findscu): STUDY level, then SERIES level. */
async function gatherDimse(peer: DimsePeer, match: { studyInstanceUid?: string; accessionNumber?: string }): Promise<Gathered> {
  const studies = await findStudies(peer, match);
  const by = match.studyInstanceUid ? 'StudyInstanceUID' : 'AccessionNumber';
  // A PACS may match loosely (case, padding): keep the exact answers.
  const exact = studies.filter((s) => (match.studyInstanceUid ? s.studyInstanceUid === match.studyInstanceUid : s.accessionNumber === match.accessionNumber));
  const uids = [...new Set(exact.map((s) => s.studyInstanceUid))];
  if (uids.length === 0) return { status: 'not-found', reason: `no study with that ${by} is in the PACS (C-FIND)` };
  if (uids.length > 1) return { status: 'ambiguous', reason: `${uids.length} studies carry that ${by}: ${uids.join(', ')}` };
  const st = exact[0] as (typeof exact)[number];
  const series = await findSeries(peer, st.studyInstanceUid);
  const candidates = series
    .map(candidateFromFoundSeries)
    .sort(
      (a, b) =>
        (a.seriesNumber ?? Number.POSITIVE_INFINITY) - (b.seriesNumber ?? Number.POSITIVE_INFINITY) ||
        (a.seriesInstanceUid < b.seriesInstanceUid ? -1 : a.seriesInstanceUid > b.seriesInstanceUid ? 1 : 0),
    );
  const unknown = (
    [
      ['ImageType', (c: SeriesCandidate) => c.imageType.length > 0],
      ['SliceThickness', (c: SeriesCandidate) => c.sliceThickness !== undefined],
      ['ImageOrientationPatient', (c: SeriesCandidate) => c.orientation !== undefined],
      ['ConvolutionKernel', (c: SeriesCandidate) => c.kernel !== undefined],
    ] as const
  )
    .filter(([, has]) => candidates.some((c) => !has(c)))
    .map(([name]) => name);
  const patient: StudyPatient = { level: 'study' };
  if (st.patientId) patient.patientId = st.patientId;
  if (st.issuerOfPatientId) patient.issuerOfPatientId = st.issuerOfPatientId;
  if (st.patientName) patient.patientName = st.patientName;
  if (st.patientBirthDate) patient.patientBirthDate = st.patientBirthDate;
  return {
    status: 'found',
    studyInstanceUid: st.studyInstanceUid,
    matchedBy: match.studyInstanceUid ? 'studyInstanceUid' : 'accessionNumber',
    instances: st.numberOfStudyRelatedInstances,
    candidates,
    unknown,
    // Series-level patient attributes are not asked over C-FIND: the study's are what the check reads.
    patients: async () => ({ study: patient, series: null }),
  };
}

const PATIENT_KEY: Record<IdentityField, keyof Omit<StudyPatient, 'level'>> = {
  PatientID: 'patientId',
  IssuerOfPatientID: 'issuerOfPatientId',
  PatientName: 'patientName',
  PatientBirthDate: 'patientBirthDate',
};

/**
 * The study's patient attributes as the worker's identity check reads them (the study's at wait-for-study, the
 * chosen series' at retrieve): which are present, their values only with --show-patient; with an order, the
 * outcome under its sender's rule (field names only, as the job would record it).
 */
function patientReport(
  study: StudyPatient | null,
  series: StudyPatient | null,
  order: { order: Order; rule: PatientIdentityRule } | undefined,
  showValues: boolean,
): { lines: string[]; json: unknown; refused: boolean } {
  const fields = (p: StudyPatient | null) =>
    IDENTITY_FIELDS.map((f) => {
      const v = p?.[PATIENT_KEY[f]];
      return { field: f, present: v !== undefined, ...(showValues && v !== undefined ? { value: v } : {}) };
    });
  const seriesDiffers = series?.level === 'series' ? IDENTITY_FIELDS.filter((f) => series[PATIENT_KEY[f]] !== study?.[PATIENT_KEY[f]]) : [];
  const lines = ['Patient (as the identity check reads it):'];
  for (const f of fields(study)) lines.push(`  ${f.field.padEnd(18)} ${f.present ? ('value' in f ? f.value : 'present') : 'absent'}`);
  if (!showValues) lines.push('  (values hidden; --show-patient prints them)');
  if (seriesDiffers.length > 0) lines.push(`  the chosen series carries other values of: ${seriesDiffers.join(', ')}`);
  let check: unknown = null;
  let refused = false;
  if (order) {
    const sender = order.order.sender.facility;
    const checks = [study, ...(series?.level === 'series' ? [series] : [])].map((p) => decideIdentity(order.order.patient, p ?? {}, order.rule, sender));
    const worst = checks.find((d) => d.action === 'fail') ?? checks.find((d) => d.action === 'warn') ?? checks[0];
    refused = worst?.action === 'fail';
    const c = worst?.comparison;
    check = {
      sender,
      rule: describeRule(order.rule),
      action: worst?.action,
      outcome: c?.outcome ?? 'not-compared',
      compared: c?.compared ?? [],
      differ: c?.differ ?? [],
      notComparable: c?.notComparable ?? [],
      skipped: c?.skipped ?? [],
      ...(worst?.message ? { message: worst.message } : {}),
    };
    lines.push(`Order's patient (sender ${sender}, rule ${describeRule(order.rule)}):`);
    if (!c) lines.push('  not compared (mode off)');
    else {
      lines.push(`  compared: ${c.compared.join(', ') || 'nothing'}`);
      if (c.differ.length) lines.push(`  differ: ${c.differ.join(', ')}`);
      for (const p of c.notComparable) lines.push(`  not comparable: ${p.field} (${p.reason})`);
      for (const p of c.skipped) lines.push(`  skipped: ${p.field} (${p.reason})`);
      lines.push(
        worst?.action === 'fail'
          ? '  => the job would FAIL (patient identity mismatch); nothing would be sent'
          : worst?.action === 'warn'
            ? '  => mismatch recorded on the job (mode warn); the job would go on'
            : '  => match: the study would be used for this order',
      );
    }
  }
  return {
    lines,
    json: { fields: fields(study), ...(seriesDiffers.length ? { seriesDiffers } : {}), valuesShown: showValues, check },
    refused,
  };
}
