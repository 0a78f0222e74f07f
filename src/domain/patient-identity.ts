/**
 * Patient identity: is the study the PACS holds under the order's accession number (or StudyInstanceUID) the
 * order's patient? The accession number links an order to a study; it is not proof of the patient. This module
 * compares the order's patient (PID-3 with its assigning authority, PID-5 name, PID-7 birth date) with the study's
 * DICOM PatientID (0010,0020), IssuerOfPatientID (0010,0021), PatientName (0010,0010) and PatientBirthDate
 * (0010,0030), under a per-sender rule from the order mappings. Pure: no I/O, no logging.
 *
 * What comes out names DICOM attributes (field names) and says which differ or could not be compared; it never
 * carries a value, so it can go into job checkpoints, logs and metrics as it is.
 */
import type { Order } from './order.js';

/** The DICOM attributes compared, by keyword. */
export const IDENTITY_FIELDS = ['PatientID', 'IssuerOfPatientID', 'PatientName', 'PatientBirthDate'] as const;
export type IdentityField = (typeof IDENTITY_FIELDS)[number];

/** What a rule may compare, as written in the mappings (`compare: [id, issuer, name, birthDate]`). */
export const IDENTITY_CHECKS = ['id', 'issuer', 'name', 'birthDate'] as const;
export type IdentityCheck = (typeof IDENTITY_CHECKS)[number];

export const FIELD_OF_CHECK: Record<IdentityCheck, IdentityField> = {
  id: 'PatientID',
  issuer: 'IssuerOfPatientID',
  name: 'PatientName',
  birthDate: 'PatientBirthDate',
};

/** Where each compared DICOM attribute comes from on the order's side. */
export const ORDER_SOURCE_OF_FIELD: Record<IdentityField, string> = {
  PatientID: 'PID-3.1 (any repetition)',
  IssuerOfPatientID: 'PID-3.4 (assigning authority, through issuerMap)',
  PatientName: 'PID-5 (family^given^middle)',
  PatientBirthDate: 'PID-7',
};

export interface PatientIdentityRule {
  /**
   * What is compared. `issuer` is compared only where both sides have one (the study's IssuerOfPatientID and the
   * matching PID-3 repetition's assigning authority); the others must be present on both sides, or the study is
   * "not comparable" (see notComparable).
   */
  compare: IdentityCheck[];
  /** PID-3 assigning authority (CX.4 namespace or universal ID) → the IssuerOfPatientID the PACS uses for it. */
  issuerMap: Record<string, string>;
  /** Only PID-3 repetitions with one of these identifier type codes (CX.5, e.g. MR) count; absent: every repetition. */
  identifierTypes?: string[];
  /** A compared field missing on either side: 'mismatch' (default: the job fails) or 'ignore' (that field is skipped). */
  notComparable: 'mismatch' | 'ignore';
  /** 'enforce' (default): a mismatch fails the job. 'warn': recorded on the job, which goes on. 'off': not compared. */
  mode: 'enforce' | 'warn' | 'off';
  /** Where the rule comes from in the mappings, for messages: `patientIdentity`, `facilities.X.patientIdentity`, or `default`. */
  source: string;
}

export const DEFAULT_PATIENT_IDENTITY_RULE: PatientIdentityRule = {
  compare: ['id', 'issuer', 'name', 'birthDate'],
  issuerMap: {},
  notComparable: 'mismatch',
  mode: 'enforce',
  source: 'default',
};

/** The study's patient as the PACS gives it (strings as in DICOM JSON; PatientName as its Alphabetic group). */
export interface DicomPatient {
  patientId?: string;
  issuerOfPatientId?: string;
  /** DICOM PN: family^given^middle^prefix^suffix (one component group). */
  patientName?: string;
  /** DICOM DA: YYYYMMDD (YYYY.MM.DD, the old ACR-NEMA form, is read too). */
  patientBirthDate?: string;
}

export type OrderPatient = Order['patient'];

export interface IdentityProblem {
  field: IdentityField;
  /** Why it could not be compared, in words that carry no value, e.g. "the study has no PatientID". */
  reason: string;
}

export interface IdentityComparison {
  /** match: every compared field agrees. mismatch: at least one differs. not-comparable: none differs, some could not be compared. */
  outcome: 'match' | 'mismatch' | 'not-comparable';
  /** Fields compared (both sides present), in IDENTITY_FIELDS order. */
  compared: IdentityField[];
  /** Fields that differ, in IDENTITY_FIELDS order. */
  differ: IdentityField[];
  /** Fields the rule compares that one side lacks (or has in a form that cannot be read). */
  notComparable: IdentityProblem[];
  /** Fields compared only where both sides have them (the issuer), skipped because one side has none. */
  skipped: IdentityProblem[];
}

export interface IdentityDecision {
  /** 'proceed': the study may be used for the order. 'warn': it may, and the job records why not. 'fail': it may not. */
  action: 'proceed' | 'warn' | 'fail';
  comparison: IdentityComparison | null;
  /** For the job's lastError and the log: field names, the sender and the rule, never a value; absent on a clean match. */
  message?: string;
}

/** Letters and digits only, upper case, accents dropped: "O'Brien-Smith" and "OBRIEN SMITH" are the same family name. */
function squash(s: string): string {
  return s
    .normalize('NFKD')
    .replace(/\p{M}/gu, '')
    .toUpperCase()
    .replace(/[^\p{L}\p{N}]/gu, '');
}

/** Given and middle names as words (split on spaces, hyphens, dots and commas), normalized as squash does. */
function givenWords(parts: string[]): string[] {
  return parts
    .join(' ')
    .split(/[\s\-.,]+/u)
    .map(squash)
    .filter((w) => w !== '');
}

/** The name parts of a DICOM PN's first (alphabetic) component group. */
export function parseDicomName(pn: string): { family: string; given: string[] } {
  const alphabetic = pn.split('=')[0] ?? '';
  const [family = '', given = '', middle = ''] = alphabetic.split('^');
  return { family, given: [given, middle].filter((g) => g.trim() !== '') };
}

/**
 * Same person's name? Family names equal (case, accents, spaces and punctuation aside); first given names equal;
 * further given/middle names compared as far as both sides have them, where an initial matches the name it
 * abbreviates. A middle name on one side only does not count against a match; a different one does.
 */
export function sameName(a: { family: string; given: string[] }, b: { family: string; given: string[] }): boolean {
  if (squash(a.family) !== squash(b.family)) return false;
  const ga = givenWords(a.given);
  const gb = givenWords(b.given);
  if (ga.length === 0 || gb.length === 0) return ga.length === gb.length;
  if (ga[0] !== gb[0]) return false;
  for (let i = 1; i < Math.min(ga.length, gb.length); i++) {
    const x = ga[i] as string;
    const y = gb[i] as string;
    if (x === y) continue;
    const initial = x.length === 1 ? x : y.length === 1 ? y : undefined;
    if (initial && (x.length === 1 ? y : x).startsWith(initial)) continue;
    return false;
  }
  return true;
}

/** YYYYMMDD of an ISO date (YYYY-MM-DD…) or a DICOM DA (YYYYMMDD, YYYY.MM.DD); undefined when it is not a full date. */
export function birthDateKey(v: string | undefined): string | undefined {
  if (!v) return undefined;
  const m = /^(\d{4})[-.]?(\d{2})[-.]?(\d{2})/.exec(v.trim());
  if (!m) return undefined;
  const [, y, mo, d] = m;
  if (Number(mo) < 1 || Number(mo) > 12 || Number(d) < 1 || Number(d) > 31) return undefined;
  return `${y}${mo}${d}`;
}

const present = (v: string | undefined): v is string => v !== undefined && v.trim() !== '';

/** The IssuerOfPatientID the PACS would use for this PID-3 repetition's assigning authority (through issuerMap). */
function issuersOf(id: OrderPatient['identifiers'][number], issuerMap: Record<string, string>): string[] {
  const out: string[] = [];
  for (const a of [id.authority, id.authorityId]) {
    if (!present(a)) continue;
    const key = a.trim();
    const mapped = issuerMap[key] ?? Object.entries(issuerMap).find(([k]) => k.toUpperCase() === key.toUpperCase())?.[1];
    out.push((mapped ?? key).trim().toUpperCase());
  }
  return out;
}

/** Compares the order's patient with the study's under `rule` (its mode aside: see decideIdentity). */
export function comparePatientIdentity(order: OrderPatient, study: DicomPatient, rule: PatientIdentityRule): IdentityComparison {
  const checks = new Set(rule.compare);
  const compared = new Set<IdentityField>();
  const differ = new Set<IdentityField>();
  const notComparable: IdentityProblem[] = [];
  const skipped: IdentityProblem[] = [];

  if (checks.has('id')) {
    const types = rule.identifierTypes?.map((t) => t.toUpperCase());
    const ids = order.identifiers.filter((i) => present(i.value) && (!types || types.includes(i.type.trim().toUpperCase())));
    if (ids.length === 0) {
      notComparable.push({
        field: 'PatientID',
        reason: types ? `the order has no PID-3 identifier of type ${types.join(' or ')}` : 'the order has no PID-3 identifier',
      });
    } else if (!present(study.patientId)) {
      notComparable.push({ field: 'PatientID', reason: 'the study has no PatientID' });
    } else {
      compared.add('PatientID');
      const pid = study.patientId.trim();
      const same = ids.filter((i) => i.value.trim() === pid);
      if (same.length === 0) differ.add('PatientID');
      if (checks.has('issuer')) {
        // Compared when both sides have one: the study's IssuerOfPatientID, and the assigning authority of the
        // PID-3 repetitions that carry the study's PatientID (or of every repetition when none does).
        const candidates = same.length > 0 ? same : ids;
        const orderIssuers = candidates.flatMap((i) => issuersOf(i, rule.issuerMap));
        if (!present(study.issuerOfPatientId)) skipped.push({ field: 'IssuerOfPatientID', reason: 'the study has no IssuerOfPatientID' });
        else if (orderIssuers.length === 0) skipped.push({ field: 'IssuerOfPatientID', reason: 'the order gives no assigning authority (PID-3.4)' });
        else {
          compared.add('IssuerOfPatientID');
          const issuer = study.issuerOfPatientId.trim().toUpperCase();
          const ok = same.length > 0 ? same.some((i) => issuersOf(i, rule.issuerMap).includes(issuer)) : orderIssuers.includes(issuer);
          if (!ok) differ.add('IssuerOfPatientID');
        }
      }
    }
  }

  if (checks.has('name')) {
    const dicom = present(study.patientName) ? parseDicomName(study.patientName) : undefined;
    if (!present(order.name.family)) notComparable.push({ field: 'PatientName', reason: 'the order has no family name (PID-5.1)' });
    else if (!dicom || !present(dicom.family)) notComparable.push({ field: 'PatientName', reason: 'the study has no PatientName family name' });
    else {
      compared.add('PatientName');
      if (!sameName(order.name, dicom)) differ.add('PatientName');
    }
  }

  if (checks.has('birthDate')) {
    const o = birthDateKey(order.birthDate);
    const s = birthDateKey(study.patientBirthDate);
    if (!o) notComparable.push({ field: 'PatientBirthDate', reason: 'the order has no full birth date (PID-7)' });
    else if (!s) {
      notComparable.push({
        field: 'PatientBirthDate',
        reason: present(study.patientBirthDate) ? 'the study’s PatientBirthDate is not a full date' : 'the study has no PatientBirthDate',
      });
    } else {
      compared.add('PatientBirthDate');
      if (o !== s) differ.add('PatientBirthDate');
    }
  }

  const ordered = (s: Set<IdentityField>) => IDENTITY_FIELDS.filter((f) => s.has(f));
  return {
    outcome: differ.size > 0 ? 'mismatch' : notComparable.length > 0 ? 'not-comparable' : 'match',
    compared: ordered(compared),
    differ: ordered(differ),
    notComparable,
    skipped,
  };
}

/** A rule in words for messages, e.g. "facilities.RIS_A.patientIdentity: compare name, birthDate". */
export function describeRule(rule: PatientIdentityRule): string {
  const extra = [
    rule.mode !== 'enforce' ? `mode ${rule.mode}` : '',
    rule.notComparable !== 'mismatch' ? `notComparable ${rule.notComparable}` : '',
    rule.identifierTypes ? `identifierTypes ${rule.identifierTypes.join(', ')}` : '',
  ].filter(Boolean);
  return `${rule.source}: compare ${rule.compare.join(', ')}${extra.length ? `; ${extra.join('; ')}` : ''}`;
}

/**
 * What the job does with the study: proceed on a match (or with mode off), fail on a mismatch or a field that
 * cannot be compared (unless notComparable is 'ignore'), or — with mode 'warn' — proceed and record why.
 */
export function decideIdentity(order: OrderPatient, study: DicomPatient, rule: PatientIdentityRule, sender: string): IdentityDecision {
  if (rule.mode === 'off') return { action: 'proceed', comparison: null };
  const c = comparePatientIdentity(order, study, rule);
  // Even with notComparable 'ignore', a study of which nothing at all could be compared is not accepted.
  const nothing = c.compared.length === 0;
  const blocking = c.outcome === 'mismatch' || (c.outcome === 'not-comparable' && (rule.notComparable === 'mismatch' || nothing));
  if (!blocking) return { action: 'proceed', comparison: c };
  const parts: string[] = [];
  if (c.differ.length > 0) parts.push(`${c.differ.join(', ')} ${c.differ.length === 1 ? 'differs' : 'differ'} from the order`);
  if ((rule.notComparable === 'mismatch' || nothing) && c.notComparable.length > 0)
    parts.push(`not comparable: ${c.notComparable.map((p) => p.reason).join('; ')}`);
  const message = `patient identity mismatch: ${parts.join('; ')} (sender ${sender}, rule ${describeRule(rule)})`;
  return { action: rule.mode === 'warn' ? 'warn' : 'fail', comparison: c, message };
}

export interface OrderIdentityField {
  field: IdentityField;
  /** Where the order's side comes from (PID-3, PID-5, PID-7). */
  from: string;
  /** The order's values as they are compared (PID-3 values; issuers after issuerMap; PN form; YYYYMMDD). */
  order: string[];
  /** When the field is compared only under a condition, or cannot be compared for want of the order's side. */
  note?: string;
}

/**
 * What the rule compares for this order, with the order's side of each field: for `ctgate hl7 check`, an
 * engineer's tool that shows values (the engineer holds the message). Empty when the rule's mode is off.
 */
export function orderIdentityFields(order: OrderPatient, rule: PatientIdentityRule): OrderIdentityField[] {
  if (rule.mode === 'off') return [];
  const types = rule.identifierTypes?.map((t) => t.toUpperCase());
  const ids = order.identifiers.filter((i) => present(i.value) && (!types || types.includes(i.type.trim().toUpperCase())));
  const out: OrderIdentityField[] = [];
  const missing = (what: string) =>
    rule.notComparable === 'ignore'
      ? `${what}: not comparable, skipped (notComparable: ignore)`
      : `${what}: not comparable, counts as a mismatch (${rule.mode === 'warn' ? 'recorded on the job, mode warn' : 'the job would fail'})`;
  for (const check of IDENTITY_CHECKS) {
    if (!rule.compare.includes(check)) continue;
    const field = FIELD_OF_CHECK[check];
    const from = ORDER_SOURCE_OF_FIELD[field];
    switch (check) {
      case 'id':
        out.push({
          field,
          from,
          order: ids.map((i) => i.value.trim()),
          ...(ids.length === 0 ? { note: missing(types ? `no PID-3 identifier of type ${types.join(' or ')}` : 'no PID-3 identifier') } : {}),
        });
        break;
      case 'issuer': {
        const issuers = [...new Set(ids.flatMap((i) => issuersOf(i, rule.issuerMap)))];
        out.push({
          field,
          from,
          order: issuers,
          note: issuers.length === 0 ? 'no assigning authority in PID-3.4: not compared' : 'compared only when the study has an IssuerOfPatientID',
        });
        break;
      }
      case 'name': {
        const pn = [order.name.family, ...order.name.given]
          .map((s) => s.trim())
          .join('^')
          .replace(/\^+$/, '');
        out.push({ field, from, order: present(order.name.family) ? [pn] : [], ...(present(order.name.family) ? {} : { note: missing('no family name') }) });
        break;
      }
      case 'birthDate': {
        const d = birthDateKey(order.birthDate);
        out.push({ field, from, order: d ? [d] : [], ...(d ? {} : { note: missing('no full birth date') }) });
        break;
      }
    }
  }
  return out;
}
