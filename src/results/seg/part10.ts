import dcmjs, { type NaturalizedDataset } from 'dcmjs';
import { deterministicUid, EXPLICIT_VR_LITTLE_ENDIAN } from '../../synthetic/dicom-writer.js';

const IMPLEMENTATION_CLASS_UID = deterministicUid('implementation');
const IMPLEMENTATION_VERSION_NAME = 'CTGATE_SEG_1';

/**
 * A Part-10 file (explicit VR little endian) of a naturalized dataset plus its Pixel Data as OB. dcmjs writes
 * everything but the Pixel Data; that, the last element, is appended here with its explicit length, which spares
 * dcmjs' copies of the largest value (the same way as the synthetic CT writer).
 */
export function writePart10(dataset: NaturalizedDataset, pixelData: Uint8Array): Uint8Array {
  if (pixelData.length % 2 !== 0) throw new Error('Pixel Data must have an even length');
  const meta = dcmjs.data.DicomMetaDictionary.denaturalizeDataset({
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: dataset.SOPClassUID,
    MediaStorageSOPInstanceUID: dataset.SOPInstanceUID,
    TransferSyntaxUID: EXPLICIT_VR_LITTLE_ENDIAN,
    ImplementationClassUID: IMPLEMENTATION_CLASS_UID,
    ImplementationVersionName: IMPLEMENTATION_VERSION_NAME,
    _vrMap: { FileMetaInformationVersion: 'OB' },
  });
  const dict = new dcmjs.data.DicomDict(meta);
  dict.dict = dcmjs.data.DicomMetaDictionary.denaturalizeDataset(dataset);
  if (Object.keys(dict.dict).some((tag) => tag.toUpperCase() >= '7FE00010')) throw new Error('Pixel Data must be the last element');
  const head = new Uint8Array(dict.write());
  if (head.length % 2 !== 0) throw new Error('dcmjs wrote an odd-length dataset');
  const bytes = new Uint8Array(head.length + 12 + pixelData.length);
  bytes.set(head, 0);
  const view = new DataView(bytes.buffer);
  const at = head.length;
  view.setUint16(at, 0x7fe0, true);
  view.setUint16(at + 2, 0x0010, true);
  bytes[at + 4] = 0x4f; // 'O'
  bytes[at + 5] = 0x42; // 'B'
  view.setUint32(at + 8, pixelData.length, true);
  bytes.set(pixelData, at + 12);
  return bytes;
}
