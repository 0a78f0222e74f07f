/** DICOM Part 10 files (explicit VR little endian) as dcmjs writes them, for ctgate's results and the synthetic CT writer. */
import dcmjs, { type NaturalizedDataset } from 'dcmjs';
import { deterministicUid } from './uid.js';

const EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1';
let implementationClassUid: string | undefined;

export interface Part10WithPixelSpace {
  bytes: Uint8Array;
  view: DataView;
  /** Where the Pixel Data value starts in `bytes`: the caller writes its pixels there. */
  pixelOffset: number;
}

/** The file meta (explicit VR little endian) and the dataset, as dcmjs writes them. */
function part10Dict(dataset: NaturalizedDataset, implementationVersionName: string) {
  implementationClassUid ??= deterministicUid('implementation');
  const meta = dcmjs.data.DicomMetaDictionary.denaturalizeDataset({
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: dataset.SOPClassUID,
    MediaStorageSOPInstanceUID: dataset.SOPInstanceUID,
    TransferSyntaxUID: EXPLICIT_VR_LITTLE_ENDIAN,
    ImplementationClassUID: implementationClassUid,
    ImplementationVersionName: implementationVersionName,
    _vrMap: { FileMetaInformationVersion: 'OB' },
  });
  const dict = new dcmjs.data.DicomDict(meta);
  dict.dict = dcmjs.data.DicomMetaDictionary.denaturalizeDataset(dataset);
  return dict;
}

/**
 * A Part-10 file (explicit VR little endian) of a naturalized dataset, with room for its Pixel Data. dcmjs writes
 * everything but the Pixel Data; that, the last element, is laid out here with its explicit length and the caller
 * fills the value in place, which spares dcmjs' copies of the largest value (0.5 MB per CT slice).
 */
export function part10WithPixelSpace(
  dataset: NaturalizedDataset,
  pixelBytes: number,
  opts: { vr: 'OB' | 'OW'; implementationVersionName: string },
): Part10WithPixelSpace {
  if (pixelBytes % 2 !== 0) throw new Error('Pixel Data must have an even length');
  const dict = part10Dict(dataset, opts.implementationVersionName);
  if (Object.keys(dict.dict).some((tag) => tag.toUpperCase() >= '7FE00010')) throw new Error('Pixel Data must be the last element');
  const head = new Uint8Array(dict.write());
  if (head.length % 2 !== 0) throw new Error('dcmjs wrote an odd-length dataset');
  const bytes = new Uint8Array(head.length + 12 + pixelBytes);
  bytes.set(head, 0);
  const view = new DataView(bytes.buffer);
  const at = head.length;
  view.setUint16(at, 0x7fe0, true);
  view.setUint16(at + 2, 0x0010, true);
  bytes[at + 4] = 0x4f; // 'O'
  bytes[at + 5] = opts.vr === 'OB' ? 0x42 : 0x57; // 'B' | 'W'
  view.setUint32(at + 8, pixelBytes, true);
  return { bytes, view, pixelOffset: at + 12 };
}

/** A Part-10 file of a derived object (SEG, key images) whose Pixel Data is bytes (OB). */
export function writePart10(dataset: NaturalizedDataset, pixelData: Uint8Array, implementationVersionName = 'CTGATE_1'): Uint8Array {
  const f = part10WithPixelSpace(dataset, pixelData.length, { vr: 'OB', implementationVersionName });
  f.bytes.set(pixelData, f.pixelOffset);
  return f.bytes;
}

/** A Part-10 file of a dataset without Pixel Data (a structured report): dcmjs writes all of it. */
export function writePart10WithoutPixels(dataset: NaturalizedDataset, implementationVersionName = 'CTGATE_1'): Uint8Array {
  if ('PixelData' in dataset) throw new Error('the dataset has Pixel Data: use writePart10');
  return new Uint8Array(part10Dict(dataset, implementationVersionName).write());
}
