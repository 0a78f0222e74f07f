import type { Attachment, BundleEntry, DiagnosticReport, Reference } from 'fhir/r4.js';
import { resultCategory } from '../context.js';
import { stableId } from './ids.js';
import { type BuildInput, effectiveTime, modelsKey } from './input.js';
import { conclusionLine, summaryHtml } from './summary.js';
import { RADIOLOGY } from './terminology.js';

export const reportId = (jobId: string, models: string): string => stableId('DiagnosticReport', jobId, models);

const base64 = (data: Uint8Array | string) => Buffer.from(data).toString('base64');

/**
 * SNOMED CT conclusion code per category: covid-19-like → conclusions.positive; other-opacity → otherOpacity (a lung
 * finding, never the COVID-19 code); no-significant-opacity → noAbnormality; not assessable → none.
 */
function conclusionCode({ ctx, maps }: BuildInput): DiagnosticReport['conclusionCode'] {
  const c = maps.doc.conclusions;
  switch (resultCategory(ctx.analysis)) {
    case 'covid-19-like':
      return [{ coding: [c.positive] }];
    case 'other-opacity':
      return [{ coding: [c.otherOpacity], text: 'Lung opacity, not COVID-19-like (AI screening)' }];
    case 'no-significant-opacity':
      return [{ coding: [c.noAbnormality] }];
    default:
      return undefined;
  }
}

/** The preliminary imaging report in the chart: links the order, the study, the Observations and the key image. */
export function reportEntry(input: BuildInput, results: Reference[]): BundleEntry<DiagnosticReport> {
  const { ctx, maps, refs } = input;
  const id = reportId(ctx.jobId, modelsKey(ctx));
  const conclusion = conclusionLine(ctx, maps.doc.conclusionPrefix);
  const created = ctx.analysis.completedAt;
  const forms: Attachment[] = ctx.keyImages.map((k) => ({
    contentType: 'image/png',
    data: base64(k.png),
    title: `Key image: slice ${k.sliceIndex + 1}, lesion area ${k.lesionAreaMm2.toFixed(0)} mm²`,
    creation: created,
  }));
  forms.push({
    contentType: 'text/html',
    language: 'en',
    data: base64(summaryHtml(ctx, conclusion)),
    title: 'AI chest CT screening summary',
    creation: created,
  });
  const codes = conclusionCode(input);
  const report: DiagnosticReport = {
    resourceType: 'DiagnosticReport',
    id,
    identifier: [{ system: maps.doc.identifierSystems.job, value: ctx.jobId }],
    basedOn: [{ reference: refs.serviceRequest }],
    status: 'preliminary',
    category: [{ coding: [RADIOLOGY] }],
    code: { coding: [maps.doc.reportCode], text: maps.doc.reportCode.display },
    subject: { reference: refs.patient },
    effectiveDateTime: effectiveTime(ctx),
    issued: created,
    imagingStudy: [{ reference: refs.imagingStudy }],
    ...(results.length ? { result: results } : {}),
    conclusion,
    ...(codes ? { conclusionCode: codes } : {}),
    presentedForm: forms,
  };
  return { fullUrl: `urn:uuid:${id}`, resource: report, request: { method: 'PUT', url: `DiagnosticReport/${id}` } };
}
