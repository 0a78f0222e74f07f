/**
 * The rule for the source's UIDs (issue 19): every reference ctgate writes to the source study (the Study
 * Instance UID of its SEG, SR, KOS and key images, Referenced Series/SOP Instance UIDs, the ORU's and FHIR's study
 * identifiers) carries the value the source has, byte for byte, even when that value is not a valid DICOM UID (a
 * UUID string, say, as some archives and anonymisers write): changing it would file the results in a study of
 * their own. Only a value that cannot be written as a UI element at all is refused, with a reason. The UIDs ctgate
 * makes for its own objects stay valid 2.25 UIDs.
 */
import { createHash } from 'node:crypto';

/** Why a source UID cannot be carried into ctgate's objects; undefined when it can (valid or not). */
export function sourceUidProblem(what: string, uid: string | undefined): string | undefined {
  if (uid === undefined || uid === '') return `${what} is empty`;
  if (uid.length > 64) return `${what} "${uid.slice(0, 80)}${uid.length > 80 ? '…' : ''}" is ${uid.length} characters long; a DICOM UID holds at most 64`;
  // A backslash would split the value in two; control and non-ASCII characters are outside the UI repertoire and
  // the ASCII ORU/DICOM encodings; leading or trailing spaces would be lost as padding.
  if (/[^ -[\]-~]/.test(uid))
    return `${what} ${JSON.stringify(uid)} holds characters that cannot be written in a DICOM UID (a backslash, control or non-ASCII characters)`;
  if (/^ | $/.test(uid)) return `${what} ${JSON.stringify(uid)} starts or ends with a space, which DICOM drops as padding`;
  return undefined;
}

/** Whether a UID follows PS3.5 §9.1 (digits and dots, no leading zero in a component, ≤ 64 characters). */
export function isValidDicomUid(uid: string): boolean {
  return uid.length <= 64 && /^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$/.test(uid);
}

export interface SourceUids {
  studyInstanceUid: string;
  seriesInstanceUid: string;
  sopInstanceUids: string[];
  frameOfReferenceUid?: string;
}

/** The first problem among a series' source UIDs (see sourceUidProblem), or undefined when all can be carried. */
export function sourceUidsProblem(s: SourceUids): string | undefined {
  const problems = [
    sourceUidProblem('the StudyInstanceUID', s.studyInstanceUid),
    sourceUidProblem('the SeriesInstanceUID', s.seriesInstanceUid),
    s.frameOfReferenceUid ? sourceUidProblem('the FrameOfReferenceUID', s.frameOfReferenceUid) : undefined,
    ...s.sopInstanceUids.map((u) => sourceUidProblem('a SOPInstanceUID', u)),
  ].filter((p): p is string => p !== undefined);
  return problems[0] && `${problems[0]}: results that reference it could not carry it unchanged`;
}

/**
 * A stand-in SOP Instance UID (2.25 form) for a slice file that has none (anonymised sets do this): derived from
 * the series UID and the file's bytes, so the same file always gets the same one. It exists only in ctgate's
 * outputs; the caller says so in its warnings.
 */
export function standInSopInstanceUid(seriesInstanceUid: string, fileBytes: Uint8Array): string {
  const h = createHash('sha256').update(seriesInstanceUid).update('\0').update(fileBytes).digest();
  return `2.25.${BigInt(`0x${h.subarray(0, 16).toString('hex')}`).toString(10)}`;
}
