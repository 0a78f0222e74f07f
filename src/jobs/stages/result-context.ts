/** What the result writers (write-seg, write-fhir, send-oru) are given: the analysis, the order and any identity warning. */
import type { ResultContext } from '../../results/context.js';
import type { JobState } from '../job-state.js';
import type { StageContext } from '../stage-operator.js';

export function resultContextOf(ctx: StageContext<'analysis'>): ResultContext {
  return { ...ctx.inputs.analysis, order: ctx.job.data.order, ...identityWarningOf(ctx.state) };
}

/** The identity mismatch a `warn` rule let through (wait-for-study or retrieve), for every result to state. */
function identityWarningOf(state: JobState): Pick<ResultContext, 'patientIdentityWarning'> {
  const warned = [state.outputs.retrieve?.patientIdentity, state.outputs['wait-for-study']?.patientIdentity].find((r) => r?.action === 'warn');
  return warned ? { patientIdentityWarning: { differ: warned.differ, notComparable: warned.notComparable } } : {};
}
