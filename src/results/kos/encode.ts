/**
 * The key images as a Key Object Selection Document (SOP class 1.2.840.10008.5.1.4.1.1.88.59, TID 2000), in the
 * CT's study as a series of its own (modality KO): IHE AI Results' way to flag the images a reader should look at
 * first. A pure function of the ResultContext: the same context always gives the same bytes.
 *
 * Content (TID 2000 "Key Object Selection"):
 * - root CONTAINER, document title (113000, DCM, "Of Interest") from CID 7010; TID 1204 language (en-US);
 *   TID 1002 observer context: a device (TID 1004), the lesion model that chose the slices;
 * - Key Object Description (113012, DCM) TEXT: what the key images are, and NOT FOR CLINICAL USE;
 * - one IMAGE item per key slice (ResultContext.keyImages order: largest lesion area first), referencing the CT
 *   slice itself, then one per key-image secondary capture (src/results/key-image-sc, same order), so a viewer
 *   that shows the selection shows the original slices and the ones with the overlay burned in.
 * - Current Requested Procedure Evidence: every instance referenced, by series, all in the CT's study.
 *
 * No key images (no lesion, or not assessable) → NoKosError: there is nothing to select, and an empty selection
 * is not allowed (TID 2000 requires at least one reference). UIDs are derived from the source series and the
 * lesion model (which chose the key slices), with their own prefix: a retry writes the same instance again, a new
 * model version a new series.
 */

import type { NaturalizedDataset } from 'dcmjs';
import { type Code, codeItem } from '../../dicom/code.js';
import { writePart10WithoutPixels } from '../../dicom/part10.js';
import { SOP_CLASS } from '../../dicom/sop-classes.js';
import { deterministicUid } from '../../dicom/uid.js';
import { type ModelRef, type ResultContext, sourceSeriesKey } from '../context.js';
import { type DerivedObjectOptions, derivedHeader, MANUFACTURER, referencedRequest, softwareVersions } from '../derived-header.js';
import { keyImageUids, SECONDARY_CAPTURE_IMAGE_STORAGE } from '../key-image-sc/encode.js';
import { dicomDateTime } from '../seg/datetime.js';
import { lesionModel } from '../seg/encode.js';
import { SR_CODES } from '../sr/codes.js';

export const KEY_OBJECT_SELECTION_STORAGE = SOP_CLASS.keyObjectSelection;
export const KOS_SERIES_DESCRIPTION = 'AI key image selection (NOT FOR CLINICAL USE)';
export const KOS_MODALITY = 'KO';

/** DCM codes of TID 2000 (checked in pydicom's concept dictionary, generated from PS3.16). */
export const KOS_CODES = {
  ofInterest: { value: '113000', scheme: 'DCM', meaning: 'Of Interest' },
  keyObjectDescription: { value: '113012', scheme: 'DCM', meaning: 'Key Object Description' },
} as const satisfies Record<string, Code>;

/** Series number default 9004 (SEG 9001, key images 9002, SR 9003). */
export interface KosOptions extends DerivedObjectOptions {
  /** Reference the key-image secondary captures too (they are stored beside it); default true. */
  referenceKeyImages?: boolean;
}

export interface EncodedKos {
  bytes: Uint8Array;
  studyInstanceUid: string;
  seriesInstanceUid: string;
  sopInstanceUid: string;
  modality: string;
  /** SOP instance UIDs of the CT slices selected, in key-image order. */
  sourceSopInstanceUids: string[];
  /** SOP instance UIDs of the key-image secondary captures referenced (empty with referenceKeyImages false). */
  keyImageSopInstanceUids: string[];
}

/** Why a job has no key object selection: no key slices (no lesion) or nothing assessed. Callers record it. */
export class NoKosError extends Error {
  constructor(
    readonly reason: 'no-key-slices' | 'not-assessable',
    message: string,
  ) {
    super(message);
    this.name = 'NoKosError';
  }
}

/** SeriesInstanceUID and SOPInstanceUID of the key object selection of a source series by a lesion model version. */
export function kosUids(sourceKey: string, model: ModelRef): { seriesInstanceUid: string; sopInstanceUid: string; deviceObserverUid: string } {
  const key = `key-object-selection|source-series=${sourceKey}|model=${model.name}@${model.version}`;
  return {
    seriesInstanceUid: deterministicUid(`${key}|series`),
    sopInstanceUid: deterministicUid(`${key}|instance`),
    deviceObserverUid: deterministicUid(`kos-device-observer|model=${model.name}@${model.version}`),
  };
}

type Item = NaturalizedDataset;

const imageItem = (sopClassUid: string, sopInstanceUid: string): Item => ({
  RelationshipType: 'CONTAINS',
  ValueType: 'IMAGE',
  ReferencedSOPSequence: [{ ReferencedSOPClassUID: sopClassUid, ReferencedSOPInstanceUID: sopInstanceUid }],
});

const textItem = (rel: string, name: Code, value: string): Item => ({
  RelationshipType: rel,
  ValueType: 'TEXT',
  ConceptNameCodeSequence: [codeItem(name)],
  TextValue: value,
});

/** The job's key object selection; throws NoKosError when there are no key images to select. */
export function encodeKos(ctx: ResultContext, opts: KosOptions = {}): EncodedKos {
  const { analysis, study, series } = ctx;
  if (analysis.verdict === 'not-assessable' || !analysis.lesionMask)
    throw new NoKosError('not-assessable', `no key object selection: the study was not assessable${analysis.reason ? ` (${analysis.reason})` : ''}`);
  if (ctx.keyImages.length === 0) throw new NoKosError('no-key-slices', 'no key slices (no lesion): no key object selection');
  const model = lesionModel(ctx, opts.lesionModelName);
  const uids = kosUids(sourceSeriesKey(series), model);
  const scUids = keyImageUids(sourceSeriesKey(series), model);
  const when = dicomDateTime(analysis.completedAt, opts.timeZone);
  const nz = series.geometry.size[2];

  const sources = ctx.keyImages.map((key, i) => {
    const slice = series.slices[key.sliceIndex];
    if (!slice) throw new Error(`key image ${i + 1}: no slice at z index ${key.sliceIndex}`);
    if (slice.sopInstanceUid !== key.sopInstanceUid)
      throw new Error(`key image ${i + 1}: slice ${key.sliceIndex} is SOP instance ${slice.sopInstanceUid}, the key image names ${key.sopInstanceUid}`);
    return slice.sopInstanceUid;
  });
  const withSc = opts.referenceKeyImages !== false;
  const scs = withSc ? sources.map((s) => scUids.sopInstanceUid(s)) : [];
  const slicesText = ctx.keyImages.map((k) => `${k.sliceIndex + 1}`).join(', ');
  const description =
    `AI key images: the ${sources.length} slice(s) of CT series ${series.seriesNumber ?? '?'} with the largest lesion area ` +
    `(slices ${slicesText} of ${nz}, largest first), found by ${model.name} ${model.version}` +
    `${withSc ? ', then the same slices with the lesion overlay burned in (secondary captures)' : ''}. NOT FOR CLINICAL USE`;

  const content: Item[] = [
    {
      RelationshipType: 'HAS CONCEPT MOD',
      ValueType: 'CODE',
      ConceptNameCodeSequence: [codeItem(SR_CODES.language)],
      ConceptCodeSequence: [codeItem(SR_CODES.englishUs)],
    },
    {
      RelationshipType: 'HAS OBS CONTEXT',
      ValueType: 'CODE',
      ConceptNameCodeSequence: [codeItem(SR_CODES.observerType)],
      ConceptCodeSequence: [codeItem(SR_CODES.device)],
    },
    { RelationshipType: 'HAS OBS CONTEXT', ValueType: 'UIDREF', ConceptNameCodeSequence: [codeItem(SR_CODES.deviceObserverUid)], UID: uids.deviceObserverUid },
    textItem('HAS OBS CONTEXT', SR_CODES.deviceObserverName, `${model.name}@${model.version}`),
    textItem('HAS OBS CONTEXT', SR_CODES.deviceObserverManufacturer, MANUFACTURER),
    textItem('CONTAINS', KOS_CODES.keyObjectDescription, description),
    ...sources.map((s) => imageItem(series.sopClassUid, s)),
    ...scs.map((s) => imageItem(SECONDARY_CAPTURE_IMAGE_STORAGE, s)),
  ];
  const evidence = [
    {
      SeriesInstanceUID: series.seriesInstanceUid,
      ReferencedSOPSequence: sources.map((s) => ({ ReferencedSOPClassUID: series.sopClassUid, ReferencedSOPInstanceUID: s })),
    },
    ...(withSc
      ? [
          {
            SeriesInstanceUID: scUids.seriesInstanceUid,
            ReferencedSOPSequence: scs.map((s) => ({ ReferencedSOPClassUID: SECONDARY_CAPTURE_IMAGE_STORAGE, ReferencedSOPInstanceUID: s })),
          },
        ]
      : []),
  ];
  const dataset: NaturalizedDataset = {
    ...derivedHeader(ctx, {
      sopClassUid: KEY_OBJECT_SELECTION_STORAGE,
      sopInstanceUid: uids.sopInstanceUid,
      seriesInstanceUid: uids.seriesInstanceUid,
      seriesNumber: opts.seriesNumber ?? 9004,
      seriesDescription: KOS_SERIES_DESCRIPTION,
      modality: KOS_MODALITY,
      instanceNumber: 1,
      when,
      software: softwareVersions([model], opts.softwareVersion),
      institutionName: opts.institutionName,
    }),
    ReferencedPerformedProcedureStepSequence: [],
    ValueType: 'CONTAINER',
    ConceptNameCodeSequence: [codeItem(KOS_CODES.ofInterest)],
    ContinuityOfContent: 'SEPARATE',
    ReferencedRequestSequence: referencedRequest(ctx),
    CurrentRequestedProcedureEvidenceSequence: [{ StudyInstanceUID: study.studyInstanceUid, ReferencedSeriesSequence: evidence }],
    ContentTemplateSequence: [{ MappingResource: 'DCMR', TemplateIdentifier: '2000' }],
    ContentSequence: content,
  };
  return {
    bytes: writePart10WithoutPixels(dataset, 'CTGATE_KOS_1'),
    studyInstanceUid: study.studyInstanceUid,
    seriesInstanceUid: uids.seriesInstanceUid,
    sopInstanceUid: uids.sopInstanceUid,
    modality: KOS_MODALITY,
    sourceSopInstanceUids: sources,
    keyImageSopInstanceUids: scs,
  };
}
