/**
 * Writes a HuVolume as a DICOM CT Image Storage series (SOP class 1.2.840.10008.5.1.4.1.1.2): one Part 10 file
 * per slice, Explicit VR Little Endian, uncompressed 16-bit pixels. For synthetic studies (tests, demos, a
 * PACS smoke test); nothing here is specific to the phantom.
 *
 * Pixels: stored = round((HU − intercept) / slope), clamped to what BitsStored/PixelRepresentation can hold.
 * The default (unsigned, intercept −1024, slope 1, BitsStored 16) is what most scanners write and is exact for
 * every HU in [−1024, 64511]; signed storage defaults to intercept 0.
 *
 * UIDs: "2.25." + the decimal value of a UUID (ISO/IEC 9834-8 §6.3 / DICOM PS3.5 §B.2). This root needs no
 * registered organisation (1.2.826.0.1.3680043.8.498 is pydicom's organisation root, not ours to issue from).
 * With a seed, each UID is a name-based UUID (version 5, SHA-1) of the seed and what it names (study, series,
 * instance number…), so one seed always writes the same UIDs and different seeds never share one; without a
 * seed, UIDs are random (version 4).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { endianness } from 'node:os';
import { join } from 'node:path';
import type { NaturalizedDataset } from 'dcmjs';
import { formatDs } from '../dicom/ds.js';
import { part10WithPixelSpace } from '../dicom/part10.js';
import { SOP_CLASS } from '../dicom/sop-classes.js';
import { deterministicUid, randomUid } from '../dicom/uid.js';
import type { HuVolume } from '../imaging/volume.js';
import { voxelToPatient } from '../imaging/volume.js';

export { writeMasks } from './masks.js';
export { deterministicUid, formatDs, randomUid };

export const CT_IMAGE_STORAGE = SOP_CLASS.ctImage;
export const EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1';
const IMPLEMENTATION_VERSION_NAME = 'CTGATE_SYN_1';

export interface CtSeriesOptions {
  studyInstanceUid?: string;
  seriesInstanceUid?: string;
  frameOfReferenceUid?: string;
  accessionNumber?: string;
  patientId?: string;
  /** IssuerOfPatientID (0010,0021), the namespace that issued PatientID; absent unless given. */
  issuerOfPatientId?: string;
  /** DICOM PN, e.g. 'SYNTHETIC^CHEST'. */
  patientName?: string;
  /** YYYYMMDD; default 19700101. */
  patientBirthDate?: string;
  /** M, F or O; default O. */
  patientSex?: 'M' | 'F' | 'O';
  /** YYYYMMDD; default 20200315. */
  studyDate?: string;
  /** HHMMSS; default 093000. */
  studyTime?: string;
  studyId?: string;
  studyDescription?: string;
  seriesDescription?: string;
  seriesNumber?: number;
  /** Default −1024 when unsigned, 0 when signed. */
  rescaleIntercept?: number;
  /** Default 1. */
  rescaleSlope?: number;
  /** 0 = unsigned (default), 1 = two's complement. */
  pixelRepresentation?: 0 | 1;
  /** 16 (default) or 12. */
  bitsStored?: 12 | 16;
  /** Makes every UID a deterministic function of the seed (see the module comment). */
  seed?: number;
  institutionName?: string;
}

export interface CtSeriesFile {
  sopInstanceUid: string;
  /** InstanceNumber (1-based; slice k of the volume is instance k + 1). */
  instanceNumber: number;
  bytes: Uint8Array;
}

export interface CtSeries {
  files: CtSeriesFile[];
  studyInstanceUid: string;
  seriesInstanceUid: string;
  frameOfReferenceUid: string;
  /** Voxels whose HU could not be stored exactly and were clamped (0 for a normal CT). */
  clampedVoxels: number;
}

/** stored = HU − intercept (integer intercept, slope 1), clamped; returns how many were clamped. */
function storeExact(hu: Int16Array, out: Uint16Array | Int16Array, intercept: number, min: number, max: number): number {
  const n = hu.length;
  let lo = 0;
  let hi = 0;
  for (let p = 0; p < n; p++) {
    const v = hu[p] as number;
    if (v < lo) lo = v;
    else if (v > hi) hi = v;
  }
  if (lo - intercept >= min && hi - intercept <= max) {
    for (let p = 0; p < n; p++) out[p] = (hu[p] as number) - intercept;
    return 0;
  }
  let clamped = 0;
  for (let p = 0; p < n; p++) {
    const s = (hu[p] as number) - intercept;
    if (s < min || s > max) clamped++;
    out[p] = Math.min(Math.max(s, min), max);
  }
  return clamped;
}

/** Writes the volume as one CT image file per slice (slice k → InstanceNumber k + 1). */
export function writeCtSeries(volume: HuVolume, opts: CtSeriesOptions = {}): CtSeries {
  const g = volume.geometry;
  const [nx, ny, nz] = g.size;
  const [sx, sy, sz] = g.spacing;
  if (volume.data.length !== nx * ny * nz) throw new Error(`volume has ${volume.data.length} voxels, geometry ${nx}×${ny}×${nz}`);
  if (nx > 65535 || ny > 65535) throw new Error('rows and columns must fit an unsigned short');
  const pixelRepresentation = opts.pixelRepresentation ?? 0;
  const bitsStored = opts.bitsStored ?? 16;
  const slope = opts.rescaleSlope ?? 1;
  const intercept = opts.rescaleIntercept ?? (pixelRepresentation === 0 ? -1024 : 0);
  if (!(slope > 0) || !Number.isFinite(intercept)) throw new Error('rescaleSlope must be > 0 and rescaleIntercept finite');
  const minStored = pixelRepresentation === 0 ? 0 : -(2 ** (bitsStored - 1));
  const maxStored = pixelRepresentation === 0 ? 2 ** bitsStored - 1 : 2 ** (bitsStored - 1) - 1;

  const seed = opts.seed;
  const accession = opts.accessionNumber ?? (seed === undefined ? '' : `SYN${seed}`);
  const patientId = opts.patientId ?? (seed === undefined ? 'SYNTHETIC' : `SYN-${seed}`);
  const seriesNumber = opts.seriesNumber ?? 1;
  const uid = (name: string) => (seed === undefined ? randomUid() : deterministicUid(`seed=${seed}|${name}`));
  const studyInstanceUid = opts.studyInstanceUid ?? uid(`study|patient=${patientId}|accession=${accession}`);
  const seriesInstanceUid = opts.seriesInstanceUid ?? uid(`series|study=${studyInstanceUid}|number=${seriesNumber}`);
  const frameOfReferenceUid = opts.frameOfReferenceUid ?? uid(`frame-of-reference|series=${seriesInstanceUid}`);
  const studyDate = opts.studyDate ?? '20200315';
  const studyTime = opts.studyTime ?? '093000';

  const d = g.direction;
  const orientation = [d[0], d[1], d[2], d[3], d[4], d[5]].map(formatDs);
  // Slice normal = row direction × column direction; SliceLocation is the position along it.
  const normal = [d[1] * d[5] - d[2] * d[4], d[2] * d[3] - d[0] * d[5], d[0] * d[4] - d[1] * d[3]];
  const base: Record<string, unknown> = {
    SpecificCharacterSet: 'ISO_IR 100',
    ImageType: ['ORIGINAL', 'PRIMARY', 'AXIAL'],
    SOPClassUID: CT_IMAGE_STORAGE,
    StudyDate: studyDate,
    SeriesDate: studyDate,
    AcquisitionDate: studyDate,
    ContentDate: studyDate,
    StudyTime: studyTime,
    SeriesTime: studyTime,
    AcquisitionTime: studyTime,
    ContentTime: studyTime,
    AccessionNumber: accession,
    Modality: 'CT',
    Manufacturer: 'ctgate-synthetic',
    InstitutionName: opts.institutionName ?? 'ctgate',
    ReferringPhysicianName: '',
    StudyDescription: opts.studyDescription ?? 'CT CHEST (SYNTHETIC)',
    SeriesDescription: opts.seriesDescription ?? 'AXIAL LUNG (SYNTHETIC)',
    ManufacturerModelName: 'phantom',
    PatientName: opts.patientName ?? 'SYNTHETIC^CHEST',
    PatientID: patientId,
    ...(opts.issuerOfPatientId ? { IssuerOfPatientID: opts.issuerOfPatientId } : {}),
    PatientBirthDate: opts.patientBirthDate ?? '19700101',
    PatientSex: opts.patientSex ?? 'O',
    BodyPartExamined: 'CHEST',
    SliceThickness: formatDs(sz),
    KVP: '120',
    SoftwareVersions: 'ctgate-synthetic 1',
    ConvolutionKernel: 'STANDARD',
    PatientPosition: 'HFS',
    StudyInstanceUID: studyInstanceUid,
    SeriesInstanceUID: seriesInstanceUid,
    StudyID: opts.studyId ?? '1',
    SeriesNumber: String(seriesNumber),
    AcquisitionNumber: '1',
    ImageOrientationPatient: orientation,
    FrameOfReferenceUID: frameOfReferenceUid,
    PositionReferenceIndicator: '',
    SamplesPerPixel: 1,
    PhotometricInterpretation: 'MONOCHROME2',
    Rows: ny,
    Columns: nx,
    // Spacing between rows (y), then between columns (x).
    PixelSpacing: [formatDs(sy), formatDs(sx)],
    BitsAllocated: 16,
    BitsStored: bitsStored,
    HighBit: bitsStored - 1,
    PixelRepresentation: pixelRepresentation,
    BurnedInAnnotation: 'NO',
    WindowCenter: ['-600', '40'],
    WindowWidth: ['1500', '400'],
    WindowCenterWidthExplanation: ['LUNG', 'MEDIASTINUM'],
    RescaleIntercept: formatDs(intercept),
    RescaleSlope: formatDs(slope),
    RescaleType: 'HU',
    LossyImageCompression: '00',
  };

  const files: CtSeriesFile[] = [];
  let clampedVoxels = 0;
  const sliceLen = nx * ny;
  const pixelBytes = sliceLen * 2;
  const exact = slope === 1 && Number.isInteger(intercept);
  const littleEndianHost = endianness() === 'LE';
  for (let k = 0; k < nz; k++) {
    const instanceNumber = k + 1;
    const sopInstanceUid = uid(`instance|series=${seriesInstanceUid}|number=${instanceNumber}`);
    const ipp = voxelToPatient(g, 0, 0, k);
    const dataset = {
      ...base,
      SOPInstanceUID: sopInstanceUid,
      InstanceNumber: String(instanceNumber),
      ImagePositionPatient: ipp.map(formatDs),
      SliceLocation: formatDs(ipp[0] * (normal[0] as number) + ipp[1] * (normal[1] as number) + ipp[2] * (normal[2] as number)),
    };
    const {
      bytes,
      view,
      pixelOffset: px,
    } = part10WithPixelSpace(dataset as unknown as NaturalizedDataset, pixelBytes, {
      vr: 'OW',
      implementationVersionName: IMPLEMENTATION_VERSION_NAME,
    });
    const hu = volume.data.subarray(k * sliceLen, (k + 1) * sliceLen);
    if (exact && littleEndianHost) {
      const store = pixelRepresentation === 0 ? new Uint16Array(bytes.buffer, px, sliceLen) : new Int16Array(bytes.buffer, px, sliceLen);
      clampedVoxels += storeExact(hu, store, intercept, minStored, maxStored);
    } else {
      for (let p = 0; p < sliceLen; p++) {
        let s = Math.round(((hu[p] as number) - intercept) / slope);
        if (s < minStored) {
          s = minStored;
          clampedVoxels++;
        } else if (s > maxStored) {
          s = maxStored;
          clampedVoxels++;
        }
        if (pixelRepresentation === 0) view.setUint16(px + p * 2, s, true);
        else view.setInt16(px + p * 2, s, true);
      }
    }
    files.push({ sopInstanceUid, instanceNumber, bytes });
  }
  return { files, studyInstanceUid, seriesInstanceUid, frameOfReferenceUid, clampedVoxels };
}

/** Writes the series as DIR/0001.dcm, DIR/0002.dcm, … (instance number order); returns the paths. */
export async function writeSeriesToDir(dir: string, series: Pick<CtSeries, 'files'>): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const paths: string[] = [];
  for (const f of series.files) {
    const path = join(dir, `${String(f.instanceNumber).padStart(4, '0')}.dcm`);
    await writeFile(path, f.bytes);
    paths.push(path);
  }
  return paths;
}
