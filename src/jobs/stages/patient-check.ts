/**
 * The order's patient against the study's (or the chosen series') DICOM patient under the sender's rule
 * (domain/patient-identity.ts), for wait-for-study and retrieve.
 */

import { DEFAULT_PATIENT_IDENTITY_RULE, decideIdentity, describeRule } from '../../domain/patient-identity.js';
import { METRICS } from '../../observability/metric-names.js';
import type { PatientIdentityRecord } from '../job-state.js';
import type { ScreeningDeps } from '../screening-deps.js';
import { PatientIdentityError, StageFailure } from '../stage-errors.js';
import type { JobHandle } from '../stage-operator.js';
import { studySourceOf } from './study-source.js';

/**
 * Returns the record for the checkpoint when the job may go on (a match, mode off, or mode warn), throws
 * PatientIdentityError otherwise. Mismatches are counted (by sender, unless `count` is false) and logged with field
 * names only.
 */
export async function checkPatient(deps: ScreeningDeps, job: JobHandle, studyUid: string, seriesUid?: string, count = true): Promise<PatientIdentityRecord> {
  const order = job.data.order;
  const sender = order.sender.facility || order.sender.application || 'unknown';
  const rule = deps.patientIdentity?.(order.sender.facility) ?? DEFAULT_PATIENT_IDENTITY_RULE;
  const words = describeRule(rule);
  if (rule.mode === 'off') return { outcome: 'not-compared', action: 'proceed', rule: words, compared: [], differ: [], notComparable: [] };
  const source = studySourceOf(deps);
  const patient = await source.patient(studyUid, seriesUid);
  if (!patient) throw new StageFailure(`${source.holder} no longer lists the ${seriesUid ? 'series' : 'study'} (patient identity check)`, true);
  const d = decideIdentity(order.patient, patient, rule, sender);
  const c = d.comparison;
  const record: PatientIdentityRecord = {
    outcome: c?.outcome ?? 'not-compared',
    action: d.action === 'warn' ? 'warn' : 'proceed',
    rule: words,
    level: patient.level,
    compared: c?.compared ?? [],
    differ: c?.differ ?? [],
    notComparable: c?.notComparable.map((p) => p.field) ?? [],
    ...(d.message && d.action === 'warn' ? { message: d.message } : {}),
  };
  if (d.action === 'proceed') return record;
  const fields = { jobId: job.id, sender, rule: rule.source, level: patient.level, differ: record.differ, notComparable: record.notComparable };
  if (count) deps.metrics?.inc(METRICS.patientIdentityMismatches, { sender, action: d.action === 'warn' ? 'warned' : 'failed' });
  if (d.action === 'warn') {
    deps.log.warn('job.patient-identity-warning', fields);
    return record;
  }
  deps.log.error('job.patient-identity-mismatch', fields);
  throw new PatientIdentityError(d.message ?? 'patient identity mismatch');
}
