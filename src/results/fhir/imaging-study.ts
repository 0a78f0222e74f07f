import type { BundleEntry, Endpoint, ImagingStudy, ImagingStudySeries } from 'fhir/r4.js';
import { stableId } from './ids.js';
import { type BuildInput, dicomDate } from './input.js';
import { accessionIdentifier, procedureConcept } from './service-request.js';
import { MODALITY_CT, MODALITY_KO, MODALITY_OT, MODALITY_SEG, MODALITY_SR, SEGMENTATION_STORAGE, SYSTEM, WADO_RS } from './terminology.js';

export const endpointId = (address: string): string => stableId('Endpoint', address);
export const imagingStudyId = (studyInstanceUid: string): string => stableId('ImagingStudy', studyInstanceUid);

/** ctgate's DICOMweb proxy, where a viewer retrieves the CT and the SEG. */
export function endpointEntry({ ctx, refs }: BuildInput): BundleEntry<Endpoint> {
  const id = endpointId(ctx.links.dicomWebBaseUrl);
  return {
    fullUrl: refs.endpoint,
    resource: {
      resourceType: 'Endpoint',
      id,
      status: 'active',
      connectionType: WADO_RS,
      name: 'ctgate DICOMweb',
      payloadType: [{ text: 'DICOM WADO-RS' }],
      payloadMimeType: ['application/dicom'],
      address: ctx.links.dicomWebBaseUrl,
    },
    request: { method: 'PUT', url: `Endpoint/${id}` },
  };
}

/**
 * The CT study with the analysed CT series and, when stored, the SEG, key-image, key-object-selection and measurement-report series. Written with PUT under an id
 * derived from the StudyInstanceUID, so a retry rewrites the same resource.
 */
export function imagingStudyEntry({ ctx, maps, refs, seg, keyImages, kosSeriesInstanceUid, srSeriesInstanceUid }: BuildInput): BundleEntry<ImagingStudy> {
  const { study, series, order } = ctx;
  const id = imagingStudyId(study.studyInstanceUid);
  const ct: ImagingStudySeries = {
    uid: series.seriesInstanceUid,
    ...(series.seriesNumber !== undefined ? { number: series.seriesNumber } : {}),
    modality: MODALITY_CT,
    ...(series.seriesDescription ? { description: series.seriesDescription } : {}),
    numberOfInstances: series.slices.length,
    endpoint: [{ reference: refs.endpoint }],
  };
  const all = [ct];
  if (seg) {
    all.push({
      uid: seg.seriesInstanceUid,
      ...(seg.seriesNumber !== undefined ? { number: seg.seriesNumber } : {}),
      modality: MODALITY_SEG,
      description: 'AI lesion segmentation',
      numberOfInstances: 1,
      endpoint: [{ reference: refs.endpoint }],
      ...(seg.sopInstanceUid
        ? { instance: [{ uid: seg.sopInstanceUid, sopClass: { system: 'urn:ietf:rfc:3986', code: `urn:oid:${SEGMENTATION_STORAGE}` }, number: 1 }] }
        : {}),
    });
  }
  if (keyImages && keyImages.instances > 0) {
    all.push({
      uid: keyImages.seriesInstanceUid,
      modality: MODALITY_OT,
      description: 'AI key images (NOT FOR CLINICAL USE)',
      numberOfInstances: keyImages.instances,
      endpoint: [{ reference: refs.endpoint }],
    });
  }
  if (kosSeriesInstanceUid) {
    all.push({
      uid: kosSeriesInstanceUid,
      modality: MODALITY_KO,
      description: 'AI key image selection (NOT FOR CLINICAL USE)',
      numberOfInstances: 1,
      endpoint: [{ reference: refs.endpoint }],
    });
  }
  if (srSeriesInstanceUid) {
    all.push({
      uid: srSeriesInstanceUid,
      modality: MODALITY_SR,
      description: 'AI measurements (NOT FOR CLINICAL USE)',
      numberOfInstances: 1,
      endpoint: [{ reference: refs.endpoint }],
    });
  }
  const accession = study.accessionNumber ?? order.accessionNumber;
  const started = dicomDate(study.studyDate);
  const procedure = procedureConcept(order, maps);
  const resource: ImagingStudy = {
    resourceType: 'ImagingStudy',
    id,
    identifier: [{ system: SYSTEM.dicomUid, value: `urn:oid:${study.studyInstanceUid}` }, ...(accession ? [accessionIdentifier(order, maps, accession)] : [])],
    status: 'available',
    modality: all.map((x) => x.modality),
    subject: { reference: refs.patient },
    basedOn: [{ reference: refs.serviceRequest }],
    ...(started ? { started } : {}),
    endpoint: [{ reference: refs.endpoint }],
    numberOfSeries: all.length,
    numberOfInstances: all.reduce((n, s) => n + (s.numberOfInstances ?? 0), 0),
    ...(procedure.coding ? { procedureCode: [procedure] } : {}),
    ...(study.studyDescription ? { description: study.studyDescription } : {}),
    series: all,
  };
  return { fullUrl: refs.imagingStudy, resource, request: { method: 'PUT', url: `ImagingStudy/${id}` } };
}
