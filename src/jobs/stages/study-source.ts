/** The study source a job's stages use: the one the worker configured, else the PACS over DICOMweb (deps.pacs). */
import { DicomWebStudySource } from '../../study-sources/dicomweb.js';
import type { StudySource } from '../../study-sources/source.js';
import type { ScreeningDeps } from '../screening-deps.js';

const fallback = new WeakMap<ScreeningDeps['pacs'], StudySource>();

export function studySourceOf(deps: Pick<ScreeningDeps, 'pacs' | 'studySource'>): StudySource {
  if (deps.studySource) return deps.studySource;
  let s = fallback.get(deps.pacs);
  if (!s) {
    s = new DicomWebStudySource(deps.pacs);
    fallback.set(deps.pacs, s);
  }
  return s;
}
