/**
 * The job's measurements as a DICOM Structured Report following TID 1500 "Measurement Report", Comprehensive 3D SR
 * (SOP class 1.2.840.10008.5.1.4.1.1.88.34), in the CT's study as a series of its own beside the SEG. A pure
 * function of the ResultContext: the same context always gives the same bytes.
 *
 * Why Comprehensive 3D SR (and no longer Comprehensive SR, 88.33): IHE AI Results (AIR) names the Comprehensive 3D
 * SR Storage IOD for measurement reports (beside SEG, Parametric Map and Key Object Selection); its value types
 * and relationships are a superset of Comprehensive SR's (CODE, NUM, TEXT, UIDREF, IMAGE with a segment number,
 * SCOORD SELECTED FROM IMAGE; SCOORD3D should the report ever carry patient coordinates); OHIF v3 reads both
 * (its SR handler registers 88.34 too, and draws 2-D SCOORDs of a 3-D SR on their images); dciodvfy validates it
 * (the tests run it on every report).
 *
 * Content (codes: ./codes.ts):
 * - root CONTAINER Imaging Measurement Report (TID 1500): language, device observer (TID 1004: the pipeline, named
 *   by its models' name@version), procedure reported (LN 24627-2 CT Chest), Image Library (TID 1600: every slice
 *   of the analysed CT series, with modality and frame of reference).
 * - Imaging Measurements: a lesion Measurement Group (TID 1411 with a SEG, else TID 1501) — Finding Lesion,
 *   Finding Site Lung, the lesion model as Algorithm Identification (TID 4019: name, version, HAS CONCEPT MOD),
 *   Referenced Segment (segment 1 of the SEG, SOP instance from segUids) with its source series, then lesion
 *   volume (total, left, right), number of lesions, share of lung volume with lesion (total, left, right;
 *   laterality as a modifier of the finding site) and the laterality of the lesions; then one planar ROI group
 *   (TID 1410) per key slice (findings.keySlices, largest lesion area first): the outline of the largest lesion
 *   on that slice as an Image Region SCOORD (closed POLYLINE in pixel column\row, ./outline.ts) SELECTED FROM
 *   the CT slice it lies on, and its Area (mm2); and a classification Measurement Group: the classifier as
 *   Algorithm Identification (with its operating threshold as Algorithm Parameters), its probability and
 *   operating threshold (UCUM "1") and the impression (the ORU's SNOMED codes).
 * - All of these groups carry one Tracking Identifier and Tracking UID: they are about one finding, the AI's lung
 *   lesions — the volume, the key-slice regions, and the classifier's evaluation of them (its input is the CT
 *   and that lesion mask). TID 1500 lets several groups share a Tracking UID for one finding, and OHIF v3 merges
 *   groups by it: it shows one measurement, drawn with the first key slice's outline, listing every value. OHIF
 *   3.13 also needs each measurement it lists to have image coordinates (it reads coords[0].ReferencedSOPSequence
 *   and throws a TypeError otherwise), which a negative report (no lesion, no key slice) has none of: such a
 *   report is listed, not drawn.
 * - No lesion (hence no SEG): the report is still written, with volume 0 and no lesions and the impression, and no
 *   Referenced Segment (TID 1501 rather than 1411: there is no region to point at). A negative with its zeros is a
 *   result the reader should see in the viewer; leaving the report out would look like a job that never ran.
 * - Not assessable: the report is written with Completion Flag PARTIAL, no measurements, and the reason as TEXT in
 *   the Qualitative Evaluations container, for the same reason: the viewer then says why there is no AI result.
 *
 * Completion COMPLETE (PARTIAL when not assessable), Verification UNVERIFIED, Preliminary: nobody has confirmed it.
 * UIDs are derived from the source series and every model version (the report carries all three models' output): a
 * retry writes the same instance, a new model version a new series.
 */

import type { NaturalizedDataset } from 'dcmjs';
import { type Code, codeItem } from '../../dicom/code.js';
import { formatDs } from '../../dicom/ds.js';
import { writePart10WithoutPixels } from '../../dicom/part10.js';
import { SOP_CLASS } from '../../dicom/sop-classes.js';
import { deterministicUid } from '../../dicom/uid.js';
import { type ModelRef, type ResultContext, sourceSeriesKey } from '../context.js';
import { type DerivedObjectOptions, derivedHeader, MANUFACTURER, referencedRequest, softwareVersions } from '../derived-header.js';
import { impression } from '../oru/encode.js';
import { CODES } from '../seg/codes.js';
import { dicomDateTime } from '../seg/datetime.js';
import { lesionModel, SEGMENTATION_STORAGE } from '../seg/encode.js';
import { SR_CODES as C, LOCAL_CODES, LOCAL_SCHEME, SR_UNITS as U } from './codes.js';
import { largestLesionOutline } from './outline.js';

export const COMPREHENSIVE_3D_SR_STORAGE = SOP_CLASS.comprehensive3dSr;
export const SR_SERIES_DESCRIPTION = 'AI measurements (NOT FOR CLINICAL USE)';
export const SR_MODALITY = 'SR';

/** Series number default 9003 (the SEG is 9001, the key images 9002). */
export type SrOptions = DerivedObjectOptions;

/** The SEG instance the report's lesion group points at (segment 1); absent when there is no SEG (no lesion). */
export interface SegReference {
  seriesInstanceUid: string;
  sopInstanceUid: string;
}

export interface EncodedSr {
  bytes: Uint8Array;
  studyInstanceUid: string;
  seriesInstanceUid: string;
  sopInstanceUid: string;
  modality: string;
  completionFlag: 'COMPLETE' | 'PARTIAL';
}

const modelKey = (models: ModelRef[]) => models.map((m) => `${m.name}@${m.version}`).join(',');

/** SeriesInstanceUID and SOPInstanceUID of the report of a source series made by a set of model versions. */
export function srUids(
  sourceKey: string,
  models: ModelRef[],
): { seriesInstanceUid: string; sopInstanceUid: string; deviceObserverUid: string; trackingUid: (group: string) => string } {
  const key = `sr|source-series=${sourceKey}|models=${modelKey(models)}`;
  return {
    seriesInstanceUid: deterministicUid(`${key}|series`),
    sopInstanceUid: deterministicUid(`${key}|instance`),
    deviceObserverUid: deterministicUid(`sr-device-observer|models=${modelKey(models)}`),
    trackingUid: (group) => deterministicUid(`${key}|tracking=${group}`),
  };
}

type Rel = 'CONTAINS' | 'HAS OBS CONTEXT' | 'HAS CONCEPT MOD' | 'HAS ACQ CONTEXT' | 'HAS PROPERTIES' | 'INFERRED FROM' | 'SELECTED FROM';
type Item = NaturalizedDataset;

const withChildren = (item: Item, children: Item[] = []): Item => (children.length > 0 ? { ...item, ContentSequence: children } : item);

const container = (rel: Rel, name: Code, children: Item[]): Item =>
  withChildren({ RelationshipType: rel, ValueType: 'CONTAINER', ConceptNameCodeSequence: [codeItem(name)], ContinuityOfContent: 'SEPARATE' }, children);

const code = (rel: Rel, name: Code, value: Code, children: Item[] = []): Item =>
  withChildren({ RelationshipType: rel, ValueType: 'CODE', ConceptNameCodeSequence: [codeItem(name)], ConceptCodeSequence: [codeItem(value)] }, children);

const text = (rel: Rel, name: Code, value: string): Item => ({
  RelationshipType: rel,
  ValueType: 'TEXT',
  ConceptNameCodeSequence: [codeItem(name)],
  TextValue: value,
});

const uidref = (rel: Rel, name: Code, uid: string): Item => ({
  RelationshipType: rel,
  ValueType: 'UIDREF',
  ConceptNameCodeSequence: [codeItem(name)],
  UID: uid,
});

const num = (name: Code, value: number, unit: Code, children: Item[] = []): Item =>
  withChildren(
    {
      RelationshipType: 'CONTAINS',
      ValueType: 'NUM',
      ConceptNameCodeSequence: [codeItem(name)],
      MeasuredValueSequence: [{ MeasurementUnitsCodeSequence: [codeItem(unit)], NumericValue: formatDs(value) }],
    },
    children,
  );

const image = (rel: Rel, name: Code, sopClassUid: string, sopInstanceUid: string, segmentNumber?: number): Item => ({
  RelationshipType: rel,
  ValueType: 'IMAGE',
  ConceptNameCodeSequence: [codeItem(name)],
  ReferencedSOPSequence: [
    {
      ReferencedSOPClassUID: sopClassUid,
      ReferencedSOPInstanceUID: sopInstanceUid,
      ...(segmentNumber === undefined ? {} : { ReferencedSegmentNumber: segmentNumber }),
    },
  ],
});

/** TID 4019 Algorithm Identification: name, version and (optional) parameters, each HAS CONCEPT MOD of the group. */
const algorithm = (m: ModelRef, parameters: string[] = []): Item[] => [
  text('HAS CONCEPT MOD', C.algorithmName, m.name),
  text('HAS CONCEPT MOD', C.algorithmVersion, m.version),
  ...parameters.map((p) => text('HAS CONCEPT MOD', C.algorithmParameters, p)),
];

/** An Image Region (TID 1410): a closed POLYLINE in pixel column\row, SELECTED FROM the image it lies on. */
const imageRegion = (points: number[], sopClassUid: string, sopInstanceUid: string): Item => ({
  RelationshipType: 'CONTAINS',
  ValueType: 'SCOORD',
  ConceptNameCodeSequence: [codeItem(C.imageRegion)],
  GraphicType: 'POLYLINE',
  GraphicData: points,
  ContentSequence: [image('SELECTED FROM', C.source, sopClassUid, sopInstanceUid)],
});

/** Finding Site Lung, with a laterality modifier for one lung. */
const lungSite = (side?: 'left' | 'right'): Item =>
  code('HAS CONCEPT MOD', C.findingSite, CODES.lung, side ? [code('HAS CONCEPT MOD', C.laterality, side === 'left' ? C.left : C.right)] : []);

/** The tracking identifier every measurement group of the report shares (one finding: see the file comment). */
export const TRACKING_IDENTIFIER = 'AI lung lesions';

/** A key slice's planar ROI: the outline of its largest lesion (pixel column\row) and the area it encloses. */
export interface KeySliceRegion {
  sliceIndex: number;
  sopInstanceUid: string;
  points: number[];
  areaMm2: number;
}

/** The planar ROIs of the report, one per key slice with lesion on the mask (findings.keySlices order). */
export function keySliceRegions(ctx: ResultContext): KeySliceRegion[] {
  const { analysis, series } = ctx;
  const mask = analysis.lesionMask;
  if (!mask || !analysis.findings) return [];
  const [nx, ny, nz] = series.geometry.size;
  if (mask.length !== nx * ny * nz) throw new Error(`lesion mask has ${mask.length} voxels, the series grid ${nx}×${ny}×${nz}`);
  const pixelMm2 = series.geometry.spacing[0] * series.geometry.spacing[1];
  return analysis.findings.keySlices.flatMap((k) => {
    const slice = series.slices[k.index];
    if (!slice) throw new Error(`key slice ${k.index}: the series has no slice at that z index`);
    const outline = largestLesionOutline(mask, series.geometry.size, k.index);
    if (!outline) return [];
    return [
      { sliceIndex: k.index, sopInstanceUid: slice.sopInstanceUid, points: outline.points, areaMm2: Math.round(outline.enclosedPixels * pixelMm2 * 100) / 100 },
    ];
  });
}

/** The job's TID 1500 measurement report (always one: see the file comment for no lesion and not assessable). */
export function encodeSr(ctx: ResultContext, seg: SegReference | undefined, opts: SrOptions = {}): EncodedSr {
  const { analysis, study, series } = ctx;
  const models = analysis.models;
  const uids = srUids(sourceSeriesKey(series), models);
  const when = dicomDateTime(analysis.completedAt, opts.timeZone);
  const assessable = analysis.verdict !== 'not-assessable' && analysis.findings !== null;
  if (seg && !assessable) throw new Error('a SEG reference for a study that was not assessable');

  const library = container('CONTAINS', C.imageLibrary, [
    container('CONTAINS', C.imageLibraryGroup, [
      code('HAS ACQ CONTEXT', C.modality, C.ct),
      uidref('HAS ACQ CONTEXT', C.frameOfReferenceUid, series.frameOfReferenceUid),
      ...series.slices.map((s) => image('CONTAINS', C.source, series.sopClassUid, s.sopInstanceUid)),
    ]),
  ]);

  const content: Item[] = [
    code('HAS CONCEPT MOD', C.language, C.englishUs),
    code('HAS OBS CONTEXT', C.observerType, C.device),
    uidref('HAS OBS CONTEXT', C.deviceObserverUid, uids.deviceObserverUid),
    text('HAS OBS CONTEXT', C.deviceObserverName, models.map((m) => `${m.name}@${m.version}`).join(', ')),
    text('HAS OBS CONTEXT', C.deviceObserverManufacturer, MANUFACTURER),
    text('HAS OBS CONTEXT', C.deviceObserverModelName, 'ctgate chest CT screening'),
    code('HAS CONCEPT MOD', C.procedureReported, C.ctChest),
    library,
  ];

  const f = analysis.findings;
  if (assessable && f) {
    const lesion = lesionModel(ctx, opts.lesionModelName);
    const classifier = models[models.length - 1];
    if (!classifier || classifier === lesion) throw new Error('analysis.models has no classifier after the lesion model');
    const sides = (['left', 'right'] as const).filter((s) => f.lesionVolumeMlBySide[s] > 0);
    // One finding (see the file comment): every group names it with the same tracking identifier and UID.
    const tracking = [
      text('HAS OBS CONTEXT', C.trackingIdentifier, TRACKING_IDENTIFIER),
      uidref('HAS OBS CONTEXT', C.trackingUid, uids.trackingUid('lesions')),
    ];
    const lesionGroup = container('CONTAINS', C.measurementGroup, [
      ...tracking,
      code('CONTAINS', C.finding, CODES.lesion),
      ...algorithm(lesion),
      lungSite(),
      ...(seg
        ? [
            image('CONTAINS', C.referencedSegment, SEGMENTATION_STORAGE, seg.sopInstanceUid, 1),
            uidref('CONTAINS', C.sourceSeriesForSegmentation, series.seriesInstanceUid),
          ]
        : []),
      num(C.volume, f.lesionVolumeMl, U.milliliter),
      num(C.volume, f.lesionVolumeMlBySide.left, U.milliliter, [lungSite('left')]),
      num(C.volume, f.lesionVolumeMlBySide.right, U.milliliter, [lungSite('right')]),
      num(C.numberOfLesions, f.lesionCount, U.lesions),
      num(LOCAL_CODES.lungInvolvement, f.lungInvolvementPercent.total, U.percent),
      num(LOCAL_CODES.lungInvolvement, f.lungInvolvementPercent.left, U.percent, [lungSite('left')]),
      num(LOCAL_CODES.lungInvolvement, f.lungInvolvementPercent.right, U.percent, [lungSite('right')]),
      ...(sides.length > 0 ? [code('CONTAINS', C.laterality, sides.length === 2 ? C.bilateral : sides[0] === 'left' ? C.left : C.right)] : []),
    ]);
    const keySliceGroups = keySliceRegions(ctx).map((r) =>
      container('CONTAINS', C.measurementGroup, [
        ...tracking,
        code('CONTAINS', C.finding, CODES.lesion),
        ...algorithm(lesion),
        lungSite(),
        imageRegion(r.points, series.sopClassUid, r.sopInstanceUid),
        num(C.area, r.areaMm2, U.squareMillimeter),
      ]),
    );
    const imp = impression(ctx);
    const classificationGroup = container('CONTAINS', C.measurementGroup, [
      ...tracking,
      ...algorithm(classifier, [`operating threshold ${formatDs(analysis.threshold)}`]),
      ...(analysis.probability === null ? [] : [num(LOCAL_CODES.probability, analysis.probability, U.noUnits)]),
      num(LOCAL_CODES.threshold, analysis.threshold, U.noUnits),
      ...(imp ? [code('CONTAINS', C.impression, imp.value)] : []),
    ]);
    content.push(container('CONTAINS', C.imagingMeasurements, [lesionGroup, ...keySliceGroups, classificationGroup]));
  } else {
    content.push(container('CONTAINS', C.qualitativeEvaluations, [text('CONTAINS', LOCAL_CODES.notAssessableReason, analysis.reason || 'not given')]));
  }

  // Every instance the content tree names, by series (SR Document General: evidence), all in the CT's study.
  const evidence = [
    {
      SeriesInstanceUID: series.seriesInstanceUid,
      ReferencedSOPSequence: series.slices.map((s) => ({ ReferencedSOPClassUID: series.sopClassUid, ReferencedSOPInstanceUID: s.sopInstanceUid })),
    },
    ...(seg
      ? [
          {
            SeriesInstanceUID: seg.seriesInstanceUid,
            ReferencedSOPSequence: [{ ReferencedSOPClassUID: SEGMENTATION_STORAGE, ReferencedSOPInstanceUID: seg.sopInstanceUid }],
          },
        ]
      : []),
  ];
  const software = softwareVersions(models, opts.softwareVersion);
  const completionFlag = assessable ? 'COMPLETE' : 'PARTIAL';
  const dataset: NaturalizedDataset = {
    ...derivedHeader(ctx, {
      sopClassUid: COMPREHENSIVE_3D_SR_STORAGE,
      sopInstanceUid: uids.sopInstanceUid,
      seriesInstanceUid: uids.seriesInstanceUid,
      seriesNumber: opts.seriesNumber ?? 9003,
      seriesDescription: SR_SERIES_DESCRIPTION,
      modality: SR_MODALITY,
      instanceNumber: 1,
      when,
      software,
      institutionName: opts.institutionName,
    }),
    CodingSchemeIdentificationSequence: [
      { CodingSchemeDesignator: LOCAL_SCHEME.designator, CodingSchemeName: LOCAL_SCHEME.name, CodingSchemeResponsibleOrganization: LOCAL_SCHEME.organization },
    ],
    ReferencedPerformedProcedureStepSequence: [],
    ValueType: 'CONTAINER',
    ConceptNameCodeSequence: [codeItem(C.imagingMeasurementReport)],
    ContinuityOfContent: 'SEPARATE',
    ReferencedRequestSequence: referencedRequest(ctx),
    PerformedProcedureCodeSequence: [codeItem(C.ctChest)],
    CurrentRequestedProcedureEvidenceSequence: [{ StudyInstanceUID: study.studyInstanceUid, ReferencedSeriesSequence: evidence }],
    CompletionFlag: completionFlag,
    VerificationFlag: 'UNVERIFIED',
    PreliminaryFlag: 'PRELIMINARY',
    ContentTemplateSequence: [{ MappingResource: 'DCMR', TemplateIdentifier: '1500' }],
    ContentSequence: content,
  };

  return {
    bytes: writePart10WithoutPixels(dataset, 'CTGATE_SR_1'),
    studyInstanceUid: study.studyInstanceUid,
    seriesInstanceUid: uids.seriesInstanceUid,
    sopInstanceUid: uids.sopInstanceUid,
    modality: SR_MODALITY,
    completionFlag,
  };
}
