/** The TypeScript side of test/helpers/real-slab.py (real CT slabs for tests) and the small readers the tests need. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';

export const PYTHON = '/usr/bin/python3';

export interface SlabSummary {
  source: 'doctor' | 'lidc';
  name: string;
  lesionFraction?: number;
  crop: { x0: number; y0: number; width: number; height: number; ringPixels: number };
  maskFile?: string;
  rows: number;
  columns: number;
  pixelMm: number;
  slices: number;
  sliceThickness: number;
  studyInstanceUid: string;
  seriesInstanceUid: string;
  /** In z order (slice k is file k + 1). */
  sopInstanceUids: string[];
  files: string[];
}

/** test/helpers/real-slab.py: a DICOM series (and lesion-mask.npy for --doctor) in `dir`; its JSON summary. */
export function realSlab(dir: string, source: string[]): SlabSummary {
  const json = execFileSync(PYTHON, ['test/helpers/real-slab.py', ...source, '--out', dir], { encoding: 'utf8', maxBuffer: 1 << 24 });
  return JSON.parse(json) as SlabSummary;
}

/** A .npy file of uint8 (the only kind real-slab.py writes), C order. */
export function readNpyU8(bytes: Uint8Array): { shape: number[]; data: Uint8Array } {
  assert.deepEqual([...bytes.subarray(0, 6)], [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59], 'npy magic');
  const major = bytes[6] as number;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder('latin1').decode(bytes.subarray(start, start + headerLen));
  assert.match(header, /'descr':\s*'\|u1'/, `npy dtype: ${header}`);
  assert.match(header, /'fortran_order':\s*False/, `npy order: ${header}`);
  const shape = (/'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map(Number);
  const n = shape.reduce((a, b) => a * b, 1);
  const data = bytes.subarray(start + headerLen, start + headerLen + n);
  assert.equal(data.length, n, 'npy data length');
  return { shape, data };
}
