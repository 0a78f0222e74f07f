import type { BundleEntry, Observation, ObservationComponent, Quantity } from 'fhir/r4.js';
import { resultCategory } from '../context.js';
import { stableId, urnUuid } from './ids.js';
import { type BuildInput, effectiveTime, modelsKey } from './input.js';
import type { ObservationCodeName } from './mappings.js';
import { IMAGING, NEGATIVE, POSITIVE, SYSTEM } from './terminology.js';

export type ObservationKind = 'probability' | 'screening' | 'lesion-volume' | 'lung-involvement';

export const observationId = (jobId: string, models: string, kind: ObservationKind): string => stableId('Observation', jobId, models, kind);

const round = (v: number, digits: number) => Math.round(v * 10 ** digits) / 10 ** digits;
const ml = (v: number): Quantity => ({ value: round(v, 2), unit: 'mL', system: SYSTEM.ucum, code: 'mL' });
const percent = (v: number): Quantity => ({ value: round(v, 2), unit: '%', system: SYSTEM.ucum, code: '%' });
const unity = (v: number): Quantity => ({ value: round(v, 4), unit: '1', system: SYSTEM.ucum, code: '1' });

/**
 * The measurements as Observations, each naming the algorithm (device) and the images (derivedFrom). The
 * positive/negative one is left out when the study was not assessable; measurements only exist with findings.
 */
export function observationEntries({ ctx, maps, refs }: BuildInput): BundleEntry<Observation>[] {
  const { analysis, jobId } = ctx;
  const models = modelsKey(ctx);
  const code = (name: ObservationCodeName) => {
    const c = maps.observation(name);
    return { coding: [c], text: c.display };
  };
  const make = (kind: ObservationKind, name: ObservationCodeName, value: Partial<Observation>): BundleEntry<Observation> => {
    const id = observationId(jobId, models, kind);
    const resource: Observation = {
      resourceType: 'Observation',
      id,
      status: 'preliminary',
      category: [{ coding: [IMAGING] }],
      code: code(name),
      subject: { reference: refs.patient },
      basedOn: [{ reference: refs.serviceRequest }],
      effectiveDateTime: effectiveTime(ctx),
      issued: analysis.completedAt,
      device: { reference: refs.device },
      derivedFrom: [{ reference: refs.imagingStudy }],
      ...value,
    };
    return { fullUrl: urnUuid(id), resource, request: { method: 'PUT', url: `Observation/${id}` } };
  };
  const component = (name: ObservationCodeName, value: Partial<ObservationComponent>): ObservationComponent => ({ code: code(name), ...value });

  const out: BundleEntry<Observation>[] = [];
  if (analysis.probability !== null) {
    out.push(
      make('probability', 'probability', {
        valueQuantity: unity(analysis.probability),
        component: [component('threshold', { valueQuantity: unity(analysis.threshold) })],
      }),
    );
  }
  const category = resultCategory(analysis);
  if (category !== 'not-assessable') {
    // The value answers "COVID-19 pneumonia pattern?"; the component "lung opacity?" — so other opacity reads as
    // "pattern not detected, opacity detected", never as COVID-19 and never as normal.
    const positive = category === 'covid-19-like';
    const value = positive ? maps.doc.values.detected : maps.doc.values.notDetected;
    const opacity = category === 'no-significant-opacity' ? maps.doc.values.notDetected : maps.doc.values.detected;
    out.push(
      make('screening', 'screening', {
        valueCodeableConcept: { coding: [value], text: value.display },
        interpretation: [{ coding: [positive ? POSITIVE : NEGATIVE] }],
        component: [component('opacity', { valueCodeableConcept: { coding: [opacity], text: opacity.display } })],
      }),
    );
  }
  const f = analysis.findings;
  if (f) {
    out.push(
      make('lesion-volume', 'lesionVolume', {
        valueQuantity: ml(f.lesionVolumeMl),
        component: [component('lesionCount', { valueInteger: f.lesionCount }), component('bilateral', { valueBoolean: f.bilateral })],
      }),
      make('lung-involvement', 'involvement', {
        valueQuantity: percent(f.lungInvolvementPercent.total),
        component: [
          component('involvementLeft', { valueQuantity: percent(f.lungInvolvementPercent.left) }),
          component('involvementRight', { valueQuantity: percent(f.lungInvolvementPercent.right) }),
        ],
      }),
    );
  }
  return out;
}
