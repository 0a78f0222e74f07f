import type { Order } from '../../domain/order.js';
import type { ResultContext } from '../context.js';
import type { FhirMappings, TemplateVars } from './mappings.js';

/** The SEG series the SEG writer stored beside the CT (its writer derives the UIDs). */
/** The key-image series (Secondary Capture, modality OT) the write-seg stage stored. */
export interface KeyImageSeriesRef {
  seriesInstanceUid: string;
  instances: number;
}

export interface SegSeriesRef {
  seriesInstanceUid: string;
  sopInstanceUid?: string;
  seriesNumber?: number;
}

/** Bundle-local addresses (urn:uuid fullUrls) of the resources others point at; the server rewrites them. */
export interface Refs {
  patient: string;
  serviceRequest: string;
  endpoint: string;
  device: string;
  imagingStudy: string;
}

export interface BuildInput {
  ctx: ResultContext;
  maps: FhirMappings;
  refs: Refs;
  seg?: SegSeriesRef;
  keyImages?: KeyImageSeriesRef;
  /** The key object selection's series (one KOS instance). */
  kosSeriesInstanceUid?: string;
  /** The measurement report's series (one SR instance). */
  srSeriesInstanceUid?: string;
}

export class FhirMappingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FhirMappingError';
  }
}

export const templateVars = (order: Order): TemplateVars => ({ facility: order.sender.facility, application: order.sender.application });

/** DICOM DA (YYYYMMDD) as a FHIR date; undefined when absent or malformed. */
export function dicomDate(da: string | undefined): string | undefined {
  const m = da?.trim().match(/^(\d{4})(\d{2})(\d{2})$/);
  return m ? `${m[1]}-${m[2]}-${m[3]}` : undefined;
}

/** When the images were taken (the study date), else when the analysis finished. */
export const effectiveTime = (ctx: ResultContext): string => dicomDate(ctx.study.studyDate) ?? ctx.analysis.completedAt;

/** Part of every id derived from a job's result: another model version makes another result. */
export const modelsKey = (ctx: ResultContext): string => ctx.analysis.models.map((m) => `${m.name}@${m.version}`).join(',');
