/**
 * The analysis checkpoint of a job as bytes: everything the result stages (SEG, FHIR, ORU) need once the models
 * have run, so that a worker that resumes a job after a crash writes the results without pulling the study and
 * running the models again. The lesion mask is bit-packed and deflated (a sparse 512×512×300 mask is a few kB).
 */
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import type { SourceStudy } from '../domain/study.js';
import type { Analysis, KeyImage, ResultContext, SourceSeries } from '../results/context.js';

/** A ResultContext without the order (the order lives in the job's data and may be updated by an XO). */
export type AnalysisCheckpoint = Omit<ResultContext, 'order'>;

interface Encoded {
  v: 1;
  jobId: string;
  study: SourceStudy;
  series: SourceSeries;
  analysis: Omit<Analysis, 'lesionMask'> & { lesionMask: { voxels: number; deflatedBits: string } | null };
  keyImages: (Omit<KeyImage, 'png'> & { png: string })[];
  links: ResultContext['links'];
  reusedFrom?: ResultContext['reusedFrom'];
}

export function packBits(mask: Uint8Array): Uint8Array {
  const out = new Uint8Array(Math.ceil(mask.length / 8));
  for (let i = 0; i < mask.length; i++) if (mask[i]) out[i >> 3] = (out[i >> 3] as number) | (1 << (i & 7));
  return out;
}

export function unpackBits(bits: Uint8Array, voxels: number): Uint8Array {
  if (bits.length !== Math.ceil(voxels / 8)) throw new Error(`packed mask holds ${bits.length} bytes, ${Math.ceil(voxels / 8)} expected`);
  const out = new Uint8Array(voxels);
  for (let i = 0; i < voxels; i++) out[i] = ((bits[i >> 3] as number) >> (i & 7)) & 1;
  return out;
}

export function encodeCheckpoint(c: AnalysisCheckpoint): string {
  const mask = c.analysis.lesionMask;
  const doc: Encoded = {
    v: 1,
    jobId: c.jobId,
    study: c.study,
    series: c.series,
    analysis: {
      ...c.analysis,
      lesionMask: mask ? { voxels: mask.length, deflatedBits: Buffer.from(deflateRawSync(packBits(mask))).toString('base64') } : null,
    },
    keyImages: c.keyImages.map((k) => ({ ...k, png: Buffer.from(k.png).toString('base64') })),
    links: c.links,
    ...(c.reusedFrom ? { reusedFrom: c.reusedFrom } : {}),
  };
  return JSON.stringify(doc);
}

export function decodeCheckpoint(text: string): AnalysisCheckpoint {
  const doc = JSON.parse(text) as Encoded;
  if (doc.v !== 1) throw new Error(`unknown analysis checkpoint version ${String(doc.v)}`);
  const m = doc.analysis.lesionMask;
  const lesionMask = m ? unpackBits(new Uint8Array(inflateRawSync(Buffer.from(m.deflatedBits, 'base64'))), m.voxels) : null;
  return {
    jobId: doc.jobId,
    study: doc.study,
    series: doc.series,
    analysis: { ...doc.analysis, lesionMask },
    keyImages: doc.keyImages.map((k) => ({ ...k, png: new Uint8Array(Buffer.from(k.png, 'base64')) })),
    links: doc.links,
    ...(doc.reusedFrom ? { reusedFrom: doc.reusedFrom } : {}),
  };
}
