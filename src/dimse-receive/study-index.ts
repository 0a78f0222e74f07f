/**
 * What the C-STORE receiver holds: the studies under `<dir>/studies` (one folder per StudyInstanceUID, as storescp
 * writes them), read from disk and nothing else, so a restart rebuilds the same index and nothing received is lost.
 *
 * `scan()` looks for new, changed and removed files and reads each new file's header with dcmjs (StudyInstanceUID,
 * AccessionNumber, SeriesInstanceUID, Modality, the patient attributes for the identity check). A file that cannot
 * be read yet may still be being written: it is retried, and quarantined as unreadable once it has not changed for
 * the stable time. A readable instance that is not CT (Modality other than CT) is quarantined at once. Quarantined
 * files go to `<dir>/quarantine` with a log line that names the reason and the SOP class only.
 *
 * A study is stable when no instance arrived for `stableMs` and none of its files is still unreadable. `sweep()`
 * removes a study's files once `retentionMs` passed since its last arrival AND `holds(studyUid)` says no job holds
 * it; a study a job holds is never removed.
 */
import { mkdir, readdir, readFile, rename, rm, rmdir, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import dcmjs from 'dcmjs';
import { numberValue, textValue } from '../dicom/dataset-values.js';
import type { Logger } from '../observability/log.js';

export interface ReceivedPatient {
  patientId?: string;
  issuerOfPatientId?: string;
  /** The Alphabetic component group of the PN. */
  patientName?: string;
  patientBirthDate?: string;
}

export interface ReceivedSeries {
  seriesInstanceUid: string;
  modality: string;
  seriesNumber?: number;
  seriesDescription?: string;
  /** Instances received (files). */
  instances: number;
}

/**
 * What series selection needs of a received series beyond ReceivedSeries: the instance attributes of its first
 * instance read (ImageType, SliceThickness, ImageOrientationPatient, ConvolutionKernel) and every instance's
 * ImagePositionPatient (to measure the slice spacing).
 */
export interface ReceivedSeriesDetail extends ReceivedSeries {
  imageType: string[];
  sliceThickness?: number;
  orientation?: number[];
  kernel?: string;
  positions: number[][];
}

export interface ReceivedStudy {
  studyInstanceUid: string;
  accessionNumber?: string;
  patient: ReceivedPatient;
  series: ReceivedSeries[];
  instances: number;
  /** When the newest file was written (ms since the epoch). */
  lastArrivalMs: number;
  /** No instance for the stable time, and no file still unreadable. */
  stable: boolean;
}

export interface StudyMatch {
  studyInstanceUid?: string;
  accessionNumber?: string;
}

interface FileEntry {
  path: string;
  folder: string;
  size: number;
  mtimeMs: number;
  studyInstanceUid: string;
  seriesInstanceUid: string;
  sopInstanceUid: string;
  instanceNumber?: number;
  position?: number[];
}

interface Pending {
  folder: string;
  size: number;
  mtimeMs: number;
  /** When the file was first seen at this size and time. */
  sinceMs: number;
}

interface SeriesEntry {
  modality: string;
  seriesNumber?: number;
  seriesDescription?: string;
  imageType: string[];
  sliceThickness?: number;
  orientation?: number[];
  kernel?: string;
  files: Map<string, FileEntry>;
}

interface StudyEntry {
  studyInstanceUid: string;
  accessionNumber?: string;
  patient: ReceivedPatient;
  series: Map<string, SeriesEntry>;
  folders: Set<string>;
  lastArrivalMs: number;
}

export interface StudyIndexOptions {
  /** The receive folder: `studies/` and `quarantine/` live in it. */
  dir: string;
  stableMs: number;
  retentionMs: number;
  /**
   * Whether a job holds the study (its files must stay); it is given the study's AccessionNumber too (a job whose
   * order carries it may still be waiting for it). Default: none held.
   */
  holds?: StudyHolds;
  /**
   * Leave unreadable, non-CT and invalid files where they are instead of moving them to quarantine: for an index a
   * worker reads beside the receiver (the receiver's own index quarantines). Default false.
   */
  readOnly?: boolean;
  now?: () => number;
}

/** Whether a job holds a received study; `accessionNumber` is the study's, when its files carry one. */
export type StudyHolds = (studyInstanceUid: string, study: { accessionNumber?: string }) => boolean | Promise<boolean>;

export interface ScanResult {
  added: number;
  removed: number;
  quarantined: number;
  unreadable: number;
}

type Header = Record<string, unknown>;

/** PS3.5 §9.1: digits and dots, at most 64 characters. */
const UID = /^[0-9]+(\.[0-9]+)*$/;

/** Every value of a multi-valued element, as numbers; undefined unless there are `n` finite ones at least. */
function numbers(a: Header, key: string, n: number): number[] | undefined {
  const v = a[key];
  const list = (Array.isArray(v) ? v : v === undefined || v === null ? [] : [v]).map((x) => Number(x));
  return list.length >= n && list.slice(0, n).every(Number.isFinite) ? list.slice(0, n) : undefined;
}

function texts(a: Header, key: string): string[] {
  const v = a[key];
  const list = Array.isArray(v) ? v : v === undefined || v === null ? [] : [v];
  return list.map((x) => String(x).trim()).filter((x) => x !== '');
}

const ENCAPSULATED_END = Buffer.from([0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0]);
/** (7FE0,0010) Pixel Data, little endian. */
const PIXEL_DATA_TAG = Buffer.from([0xe0, 0x7f, 0x10, 0x00]);

/**
 * Whether the file holds all of its pixel data: the Pixel Data element's declared length fits in the file (native
 * pixels), or the sequence delimiter that closes encapsulated fragments ends the file. dcmjs reads a file cut short
 * inside its pixel data without complaint (it pads), so this looks at the bytes. Little endian only (big endian
 * transfer syntax is retired and not checked).
 */
export function pixelDataWhole(bytes: Buffer, nativeBytes: number): boolean {
  let i = bytes.indexOf(PIXEL_DATA_TAG, 132);
  while (i >= 0 && i + 12 <= bytes.length) {
    const vr = bytes.toString('latin1', i + 4, i + 6);
    if ((vr === 'OW' || vr === 'OB') && bytes[i + 6] === 0 && bytes[i + 7] === 0) {
      const len = bytes.readUInt32LE(i + 8);
      if (len === 0xffffffff) return bytes.subarray(bytes.length - 8).equals(ENCAPSULATED_END);
      return i + 12 + len <= bytes.length;
    }
    // Implicit VR: tag, then a 4-byte length that matches what the image calls for.
    const len = bytes.readUInt32LE(i + 4);
    if (len === nativeBytes) return i + 8 + len <= bytes.length;
    if (len === 0xffffffff) return bytes.subarray(bytes.length - 8).equals(ENCAPSULATED_END);
    i = bytes.indexOf(PIXEL_DATA_TAG, i + 1);
  }
  return i < 0;
}

/** The data set of a Part 10 file; throws for one that is not whole (see pixelDataWhole). */
export function readHeader(bytes: Buffer): Header {
  const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  const h = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dcmjs.data.DicomMessage.readFile(ab).dict) as Header;
  if (h.PixelData === undefined) return h;
  const want =
    ((numberValue(h, 'Rows') ?? 0) *
      (numberValue(h, 'Columns') ?? 0) *
      (numberValue(h, 'SamplesPerPixel') ?? 1) *
      (numberValue(h, 'NumberOfFrames') ?? 1) *
      (numberValue(h, 'BitsAllocated') ?? 16)) /
    8;
  if (!pixelDataWhole(bytes, Math.ceil(want))) throw new Error('pixel data cut short');
  return h;
}

/** The patient attributes of a data set read by readHeader (absent ones left out). */
export function patientFromHeader(h: Header): ReceivedPatient {
  const p: ReceivedPatient = {};
  const id = textValue(h, 'PatientID');
  const issuer = textValue(h, 'IssuerOfPatientID');
  const name = textValue(h, 'PatientName');
  const birth = textValue(h, 'PatientBirthDate');
  if (id !== undefined) p.patientId = id;
  if (issuer !== undefined) p.issuerOfPatientId = issuer;
  if (name !== undefined) p.patientName = name;
  if (birth !== undefined) p.patientBirthDate = birth;
  return p;
}

export class StudyIndex {
  readonly studiesDir: string;
  readonly quarantineDir: string;
  private readonly files = new Map<string, FileEntry>();
  private readonly pending = new Map<string, Pending>();
  /** readOnly: files that would have gone to quarantine, left where they are and not read again. */
  private readonly ignored = new Set<string>();
  private readonly studies = new Map<string, StudyEntry>();
  private readonly now: () => number;
  private scanning: Promise<ScanResult> | undefined;
  private queued: Promise<ScanResult> | undefined;

  constructor(
    private readonly o: StudyIndexOptions,
    private readonly log: Logger,
  ) {
    this.studiesDir = join(o.dir, 'studies');
    this.quarantineDir = join(o.dir, 'quarantine');
    this.now = o.now ?? Date.now;
  }

  async init(): Promise<void> {
    await mkdir(this.studiesDir, { recursive: true });
    await mkdir(this.quarantineDir, { recursive: true });
  }

  /**
   * One pass over the studies folder that starts after this call: callers that arrive while a pass runs share the
   * next one (so a file written before the call is always seen).
   */
  scan(): Promise<ScanResult> {
    if (this.queued) return this.queued;
    if (this.scanning) {
      this.queued = this.scanning.then(() => {
        this.queued = undefined;
        return this.run();
      });
      return this.queued;
    }
    return this.run();
  }

  private run(): Promise<ScanResult> {
    const p = this.doScan().finally(() => {
      if (this.scanning === p) this.scanning = undefined;
    });
    this.scanning = p;
    return p;
  }

  private async doScan(): Promise<ScanResult> {
    const result: ScanResult = { added: 0, removed: 0, quarantined: 0, unreadable: 0 };
    const seen = new Set<string>();
    let folders: string[];
    try {
      folders = (await readdir(this.studiesDir, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name);
    } catch {
      folders = [];
    }
    for (const folder of folders) {
      let names: string[];
      try {
        names = (await readdir(join(this.studiesDir, folder), { withFileTypes: true })).filter((d) => d.isFile()).map((d) => d.name);
      } catch {
        continue;
      }
      for (const name of names) {
        const path = join(this.studiesDir, folder, name);
        let st: { size: number; mtimeMs: number };
        try {
          st = await stat(path);
        } catch {
          continue;
        }
        seen.add(path);
        if (this.ignored.has(path)) continue;
        const known = this.files.get(path);
        if (known && known.size === st.size && known.mtimeMs === st.mtimeMs) continue;
        if (known) this.drop(known);
        const outcome = await this.readOne(path, folder, st);
        if (outcome === 'added') result.added++;
        else if (outcome === 'quarantined') result.quarantined++;
        else if (outcome === 'unreadable') result.unreadable++;
      }
    }
    for (const [path, entry] of this.files) {
      if (!seen.has(path)) {
        this.drop(entry);
        result.removed++;
      }
    }
    for (const path of this.pending.keys()) if (!seen.has(path)) this.pending.delete(path);
    for (const path of this.ignored) if (!seen.has(path)) this.ignored.delete(path);
    return result;
  }

  private async readOne(path: string, folder: string, st: { size: number; mtimeMs: number }): Promise<'added' | 'quarantined' | 'unreadable'> {
    let h: Header | undefined;
    try {
      h = readHeader(await readFile(path));
    } catch {
      h = undefined;
    }
    const studyUid = h ? textValue(h, 'StudyInstanceUID') : undefined;
    const seriesUid = h ? textValue(h, 'SeriesInstanceUID') : undefined;
    const sopUid = h ? textValue(h, 'SOPInstanceUID') : undefined;
    if (!h || !studyUid || !seriesUid || !sopUid) {
      // Maybe still being written: wait until it has not changed for the stable time.
      const p = this.pending.get(path);
      const now = this.now();
      if (!p || p.size !== st.size || p.mtimeMs !== st.mtimeMs) {
        this.pending.set(path, { folder, size: st.size, mtimeMs: st.mtimeMs, sinceMs: now });
        return 'unreadable';
      }
      if (now - Math.max(p.sinceMs, st.mtimeMs) < this.o.stableMs) return 'unreadable';
      this.pending.delete(path);
      await this.quarantine(path, h ? 'no Study, Series or SOP Instance UID' : 'not a readable DICOM file', h ? textValue(h, 'SOPClassUID') : undefined);
      return 'quarantined';
    }
    this.pending.delete(path);
    if (![studyUid, seriesUid, sopUid].every((u) => u.length <= 64 && UID.test(u))) {
      await this.quarantine(path, 'a Study, Series or SOP Instance UID that is not a valid UID', textValue(h, 'SOPClassUID'));
      return 'quarantined';
    }
    const modality = textValue(h, 'Modality') ?? '';
    if (modality !== 'CT') {
      await this.quarantine(path, `modality ${modality || 'missing'}, not CT`, textValue(h, 'SOPClassUID'));
      return 'quarantined';
    }
    const entry: FileEntry = {
      path,
      folder,
      size: st.size,
      mtimeMs: st.mtimeMs,
      studyInstanceUid: studyUid,
      seriesInstanceUid: seriesUid,
      sopInstanceUid: sopUid,
      instanceNumber: numberValue(h, 'InstanceNumber'),
      position: numbers(h, 'ImagePositionPatient', 3),
    };
    let study = this.studies.get(studyUid);
    if (!study) {
      study = {
        studyInstanceUid: studyUid,
        accessionNumber: textValue(h, 'AccessionNumber'),
        patient: patientFromHeader(h),
        series: new Map(),
        folders: new Set(),
        lastArrivalMs: 0,
      };
      this.studies.set(studyUid, study);
    }
    let series = study.series.get(seriesUid);
    if (!series) {
      series = {
        modality,
        seriesNumber: numberValue(h, 'SeriesNumber'),
        seriesDescription: textValue(h, 'SeriesDescription'),
        imageType: texts(h, 'ImageType').map((t) => t.toUpperCase()),
        sliceThickness: numberValue(h, 'SliceThickness'),
        orientation: numbers(h, 'ImageOrientationPatient', 6),
        kernel: textValue(h, 'ConvolutionKernel'),
        files: new Map(),
      };
      study.series.set(seriesUid, series);
    }
    series.files.set(path, entry);
    study.folders.add(folder);
    study.lastArrivalMs = Math.max(study.lastArrivalMs, st.mtimeMs);
    this.files.set(path, entry);
    return 'added';
  }

  private drop(entry: FileEntry): void {
    this.files.delete(entry.path);
    const study = this.studies.get(entry.studyInstanceUid);
    const series = study?.series.get(entry.seriesInstanceUid);
    if (!study || !series) return;
    series.files.delete(entry.path);
    if (series.files.size === 0) study.series.delete(entry.seriesInstanceUid);
    if (study.series.size === 0) this.studies.delete(entry.studyInstanceUid);
  }

  private async quarantine(path: string, reason: string, sopClassUid: string | undefined): Promise<void> {
    if (this.o.readOnly) {
      this.ignored.add(path);
      return;
    }
    const to = join(this.quarantineDir, `${this.now()}-${basename(path)}`);
    try {
      await rename(path, to);
      this.log.warn('dimse.quarantined', { reason, sopClassUid: sopClassUid ?? null });
    } catch (e) {
      this.log.error('dimse.quarantine-failed', { reason, error: (e as NodeJS.ErrnoException).code ?? 'error' });
    }
  }

  private summary(s: StudyEntry): ReceivedStudy {
    const series = [...s.series.entries()].map(([uid, x]) => ({
      seriesInstanceUid: uid,
      modality: x.modality,
      ...(x.seriesNumber !== undefined ? { seriesNumber: x.seriesNumber } : {}),
      ...(x.seriesDescription !== undefined ? { seriesDescription: x.seriesDescription } : {}),
      instances: x.files.size,
    }));
    return {
      studyInstanceUid: s.studyInstanceUid,
      ...(s.accessionNumber !== undefined ? { accessionNumber: s.accessionNumber } : {}),
      patient: { ...s.patient },
      series,
      instances: series.reduce((n, x) => n + x.instances, 0),
      lastArrivalMs: Math.round(s.lastArrivalMs),
      stable: this.isStable(s),
    };
  }

  private isStable(s: StudyEntry): boolean {
    if (this.now() - s.lastArrivalMs < this.o.stableMs) return false;
    for (const p of this.pending.values()) if (s.folders.has(p.folder)) return false;
    return true;
  }

  /** Every study received, as of the last scan. */
  list(): ReceivedStudy[] {
    return [...this.studies.values()].map((s) => this.summary(s));
  }

  /**
   * Studies matching the StudyInstanceUID and/or the AccessionNumber given (an accession may name several
   * studies: the caller decides, after the patient check).
   */
  findStudies(match: StudyMatch): ReceivedStudy[] {
    if (match.studyInstanceUid === undefined && match.accessionNumber === undefined) return [];
    return [...this.studies.values()]
      .filter(
        (s) =>
          (match.studyInstanceUid === undefined || s.studyInstanceUid === match.studyInstanceUid) &&
          (match.accessionNumber === undefined || s.accessionNumber === match.accessionNumber),
      )
      .map((s) => this.summary(s));
  }

  /** A series with what selection needs (see ReceivedSeriesDetail); undefined when the index does not know it. */
  seriesDetail(studyInstanceUid: string, seriesInstanceUid: string): ReceivedSeriesDetail | undefined {
    const x = this.studies.get(studyInstanceUid)?.series.get(seriesInstanceUid);
    if (!x) return undefined;
    const files = [...x.files.values()];
    return {
      seriesInstanceUid,
      modality: x.modality,
      ...(x.seriesNumber !== undefined ? { seriesNumber: x.seriesNumber } : {}),
      ...(x.seriesDescription !== undefined ? { seriesDescription: x.seriesDescription } : {}),
      instances: files.length,
      imageType: [...x.imageType],
      ...(x.sliceThickness !== undefined ? { sliceThickness: x.sliceThickness } : {}),
      ...(x.orientation ? { orientation: [...x.orientation] } : {}),
      ...(x.kernel !== undefined ? { kernel: x.kernel } : {}),
      positions: files.flatMap((f) => (f.position ? [f.position] : [])),
    };
  }

  /**
   * Whether a job holds the study (retention keeps it then); false when no `holds` was given. Throws what `holds`
   * throws (sweep treats that as held).
   */
  async holds(studyInstanceUid: string): Promise<boolean> {
    if (!this.o.holds) return false;
    return this.o.holds(studyInstanceUid, { accessionNumber: this.studies.get(studyInstanceUid)?.accessionNumber });
  }

  /** The SOP Instance UIDs of one series' files; empty when the index does not know it. */
  seriesInstanceUids(studyInstanceUid: string, seriesInstanceUid: string): string[] {
    const series = this.studies.get(studyInstanceUid)?.series.get(seriesInstanceUid);
    return series ? [...series.files.values()].map((f) => f.sopInstanceUid) : [];
  }

  /** The files of one series, by InstanceNumber (then path); empty when the index does not know it. */
  seriesFiles(studyInstanceUid: string, seriesInstanceUid: string): string[] {
    const series = this.studies.get(studyInstanceUid)?.series.get(seriesInstanceUid);
    if (!series) return [];
    return [...series.files.values()]
      .sort((a, b) => (a.instanceNumber ?? Number.MAX_SAFE_INTEGER) - (b.instanceNumber ?? Number.MAX_SAFE_INTEGER) || a.path.localeCompare(b.path))
      .map((f) => f.path);
  }

  /**
   * Removes the studies whose last instance arrived more than the retention time ago and that no job holds, and
   * quarantined files older than the retention time. Returns the StudyInstanceUIDs removed.
   */
  async sweep(): Promise<string[]> {
    const cutoff = this.now() - this.o.retentionMs;
    const removed: string[] = [];
    for (const s of [...this.studies.values()]) {
      if (s.lastArrivalMs > cutoff) continue;
      let held: boolean;
      try {
        held = await this.holds(s.studyInstanceUid);
      } catch (e) {
        // Not knowing is holding: never drop a study a job may still need.
        this.log.warn('dimse.retention-hold-unknown', { error: (e as Error).message });
        held = true;
      }
      if (held) continue;
      if (await this.removeStudy(s, cutoff)) removed.push(s.studyInstanceUid);
    }
    // Folders left empty (their only files quarantined), untouched for the retention time.
    for (const folder of await readdir(this.studiesDir).catch(() => [] as string[])) {
      const p = join(this.studiesDir, folder);
      const st = await stat(p).catch(() => undefined);
      if (st?.isDirectory() && st.mtimeMs <= cutoff) await rmdir(p).catch(() => {});
    }
    try {
      for (const name of await readdir(this.quarantineDir)) {
        const p = join(this.quarantineDir, name);
        const st = await stat(p).catch(() => undefined);
        if (st?.isFile() && st.mtimeMs <= cutoff) await rm(p, { force: true });
      }
    } catch {
      // The quarantine folder comes back on the next start.
    }
    if (removed.length) this.log.info('dimse.retention-removed', { studies: removed.length });
    return removed;
  }

  private async removeStudy(s: StudyEntry, cutoff: number): Promise<boolean> {
    // A file that arrived since the last scan keeps the study (it is not expired any more).
    for (const folder of s.folders) {
      const dir = join(this.studiesDir, folder);
      const names = await readdir(dir).catch(() => [] as string[]);
      for (const n of names) {
        const st = await stat(join(dir, n)).catch(() => undefined);
        if (st && st.mtimeMs > cutoff) return false;
      }
    }
    for (const series of s.series.values()) {
      for (const f of series.files.values()) {
        await rm(f.path, { force: true });
        this.files.delete(f.path);
      }
    }
    this.studies.delete(s.studyInstanceUid);
    for (const folder of s.folders) {
      // Fails (and the folder stays) when a file arrived meanwhile: the next scan indexes it.
      await rmdir(join(this.studiesDir, folder)).catch(() => {});
    }
    return true;
  }
}
