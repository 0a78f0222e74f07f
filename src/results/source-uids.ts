/** Moved to src/dicom/source-uids.ts; this path stays until jobs/stages/series-choice.ts imports the new one. */
export * from '../dicom/source-uids.js';
