/**
 * Slices for the study page's viewer, rendered on the server: the CT frame from the PACS (WADO-RS), in the lung
 * window, with the job's lesion mask over it in red, as PNG. The analysis checkpoint is decoded once per job and
 * kept (the mask bit-packed, 1/8 of a byte per voxel) for a few jobs; rendered PNGs are kept for a few dozen
 * slices, so scrolling back and forth costs the PACS nothing.
 */
import { EXPLICIT_VR_BE } from '../../dicomweb/client.js';
import { fillSlice, type SliceMeta } from '../../imaging/slices.js';
import type { HuVolume } from '../../imaging/volume.js';
import { encodePng, type KeyImageOptions, renderSlice } from '../../inference/key-images.js';
import type { AnalysisCheckpoint } from '../../jobs/analysis-codec.js';
import { packBits } from '../../jobs/analysis-codec.js';
import type { Analysis } from '../../results/context.js';

/** A small least-recently-used map. */
export class Lru<K, V> {
  private readonly map = new Map<K, V>();
  constructor(private readonly capacity: number) {}
  get(k: K): V | undefined {
    const v = this.map.get(k);
    if (v !== undefined) {
      this.map.delete(k);
      this.map.set(k, v);
    }
    return v;
  }
  set(k: K, v: V): void {
    this.map.delete(k);
    this.map.set(k, v);
    while (this.map.size > this.capacity) this.map.delete(this.map.keys().next().value as K);
  }
  delete(k: K): void {
    this.map.delete(k);
  }
  get size(): number {
    return this.map.size;
  }
}

/** What the pages keep of an analysis checkpoint: everything but the mask, which is kept packed. */
export interface ViewerCheckpoint {
  jobId: string;
  studyInstanceUid: string;
  seriesInstanceUid: string;
  slices: SliceMeta[];
  size: [number, number, number];
  analysis: Omit<Analysis, 'lesionMask'>;
  /** One bit per voxel (packBits order), or null without a mask. */
  maskBits: Uint8Array | null;
  keyImages: { sliceIndex: number; lesionAreaMm2: number; png: Uint8Array }[];
}

export function toViewerCheckpoint(c: AnalysisCheckpoint): ViewerCheckpoint {
  const { lesionMask, ...analysis } = c.analysis;
  return {
    jobId: c.jobId,
    studyInstanceUid: c.study.studyInstanceUid,
    seriesInstanceUid: c.series.seriesInstanceUid,
    slices: c.series.slices,
    size: c.series.geometry.size,
    analysis,
    maskBits: lesionMask ? packBits(lesionMask) : null,
    keyImages: c.keyImages.map((k) => ({ sliceIndex: k.sliceIndex, lesionAreaMm2: k.lesionAreaMm2, png: k.png })),
  };
}

/** Slice k of a packed mask on an nx×ny×nz grid, as one byte (0/1) per pixel. */
export function maskSlice(bits: Uint8Array, nxy: number, k: number): Uint8Array {
  const out = new Uint8Array(nxy);
  const base = k * nxy;
  for (let p = 0; p < nxy; p++) {
    const i = base + p;
    out[p] = ((bits[i >> 3] as number) >> (i & 7)) & 1;
  }
  return out;
}

/**
 * PNG of one CT frame (stored pixel bytes as the PACS sent them) in the lung window, with `mask` (one byte per
 * pixel, or null) overlaid in red.
 */
export function slicePng(frame: Uint8Array, meta: SliceMeta, bigEndian: boolean, mask: Uint8Array | null, opts: KeyImageOptions = {}): Uint8Array {
  const nx = meta.columns;
  const ny = meta.rows;
  const volume: HuVolume = {
    geometry: { size: [nx, ny, 1], spacing: [1, 1, 1], origin: [0, 0, 0], direction: [1, 0, 0, 0, 1, 0, 0, 0, 1] },
    data: new Int16Array(nx * ny),
  };
  fillSlice(volume, 0, frame, meta, bigEndian);
  if (mask && mask.length !== nx * ny) throw new Error(`mask slice holds ${mask.length} pixels, the frame ${nx * ny}`);
  return encodePng(nx, ny, renderSlice(volume, 0, mask, opts), 3);
}

export interface FrameSource {
  retrieveFrame(study: string, series: string, sop: string): Promise<{ bytes: Uint8Array; transferSyntax: string }>;
}

export class SliceOutOfRange extends Error {
  constructor(
    readonly k: number,
    readonly count: number,
  ) {
    super(`slice ${k} is outside 0..${count - 1}`);
    this.name = 'SliceOutOfRange';
  }
}

export interface SliceCacheOptions {
  /** Decoded checkpoints kept (each: the slice list and the packed mask). Default 4. */
  checkpoints?: number;
  /** How long a decoded checkpoint is trusted before it is read again (an admin may re-run a job). Default 60 s. */
  checkpointTtlMs?: number;
  /** Rendered slices kept. Default 64. */
  pngs?: number;
}

/** Checkpoints and rendered slices for the pages, with concurrent requests for the same thing sharing one load. */
export class SliceCache {
  private readonly checkpoints: Lru<string, { at: number; value: Promise<ViewerCheckpoint | null> }>;
  private readonly pngs: Lru<string, Promise<Uint8Array>>;
  private readonly ttl: number;

  constructor(
    private readonly load: (jobId: string) => Promise<AnalysisCheckpoint | null>,
    private readonly frames: FrameSource | undefined,
    opts: SliceCacheOptions = {},
  ) {
    this.checkpoints = new Lru(opts.checkpoints ?? 4);
    this.pngs = new Lru(opts.pngs ?? 64);
    this.ttl = opts.checkpointTtlMs ?? 60_000;
  }

  get canRender(): boolean {
    return this.frames !== undefined;
  }

  checkpoint(jobId: string): Promise<ViewerCheckpoint | null> {
    const hit = this.checkpoints.get(jobId);
    if (hit && Date.now() - hit.at < this.ttl) return hit.value;
    const value = this.load(jobId).then((c) => (c ? toViewerCheckpoint(c) : null));
    const entry = { at: Date.now(), value };
    this.checkpoints.set(jobId, entry);
    // Neither a failure nor "not there yet" is kept: the next request asks again.
    value.then(
      (c) => {
        if (!c && this.checkpoints.get(jobId) === entry) this.checkpoints.delete(jobId);
      },
      () => {
        if (this.checkpoints.get(jobId) === entry) this.checkpoints.delete(jobId);
      },
    );
    return value;
  }

  /** Slice k of a job's analysed series as PNG; SliceOutOfRange for a k outside the series. */
  slice(cp: ViewerCheckpoint, k: number): Promise<Uint8Array> {
    if (!Number.isInteger(k) || k < 0 || k >= cp.slices.length) return Promise.reject(new SliceOutOfRange(k, cp.slices.length));
    const frames = this.frames;
    if (!frames) return Promise.reject(new Error('no PACS configured'));
    const key = `${cp.jobId}\u0000${cp.seriesInstanceUid}\u0000${k}`;
    const hit = this.pngs.get(key);
    if (hit) return hit;
    const meta = cp.slices[k] as SliceMeta;
    const p = (async () => {
      const frame = await frames.retrieveFrame(cp.studyInstanceUid, cp.seriesInstanceUid, meta.sopInstanceUid);
      const [nx, ny] = cp.size;
      const mask = cp.maskBits && nx === meta.columns && ny === meta.rows ? maskSlice(cp.maskBits, nx * ny, k) : null;
      return slicePng(frame.bytes, meta, frame.transferSyntax === EXPLICIT_VR_BE, mask);
    })();
    this.pngs.set(key, p);
    p.catch(() => {
      if (this.pngs.get(key) === p) this.pngs.delete(key);
    });
    return p;
  }
}
