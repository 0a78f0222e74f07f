/**
 * Transfer syntaxes ctgate reads, and the decoding of compressed (encapsulated) CT frames to native stored values.
 *
 * The codecs are dcmjs-codecs (MIT): a WebAssembly build of DCMTK's IJG JPEG (8/12/16-bit, lossless processes 14
 * and 14 SV1 included), CharLS (JPEG-LS), OpenJPEG (JPEG 2000), OpenJPH (HTJ2K) and DCMTK's RLE. No native
 * build, one package, loaded only the first time a compressed frame is met. Deflate is inflated by dcmjs when it
 * reads the file; explicit VR big endian is a byte swap (SliceWriter / fillSlice), not a codec.
 */

export type Codec = 'jpeg' | 'jpeg-ls' | 'jpeg2000' | 'htj2k' | 'rle';

export interface SyntaxInfo {
  name: string;
  /** Pixel data in fragments, compressed by `codec`; otherwise native (maybe big endian or deflated). */
  codec?: Codec;
  /** The syntax may lose information: the analysis goes on, with a warning. */
  lossy: boolean;
  bigEndian?: boolean;
}

export const IMPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2';
export const EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1';
export const DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1.99';
export const EXPLICIT_VR_BIG_ENDIAN = '1.2.840.10008.1.2.2';

export const TRANSFER_SYNTAXES: ReadonlyMap<string, SyntaxInfo> = new Map<string, SyntaxInfo>([
  [IMPLICIT_VR_LITTLE_ENDIAN, { name: 'Implicit VR Little Endian', lossy: false }],
  [EXPLICIT_VR_LITTLE_ENDIAN, { name: 'Explicit VR Little Endian', lossy: false }],
  [DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, { name: 'Deflated Explicit VR Little Endian', lossy: false }],
  [EXPLICIT_VR_BIG_ENDIAN, { name: 'Explicit VR Big Endian (retired)', lossy: false, bigEndian: true }],
  ['1.2.840.10008.1.2.5', { name: 'RLE Lossless', codec: 'rle', lossy: false }],
  ['1.2.840.10008.1.2.4.50', { name: 'JPEG Baseline (lossy)', codec: 'jpeg', lossy: true }],
  ['1.2.840.10008.1.2.4.51', { name: 'JPEG Extended (lossy)', codec: 'jpeg', lossy: true }],
  ['1.2.840.10008.1.2.4.57', { name: 'JPEG Lossless', codec: 'jpeg', lossy: false }],
  ['1.2.840.10008.1.2.4.70', { name: 'JPEG Lossless SV1', codec: 'jpeg', lossy: false }],
  ['1.2.840.10008.1.2.4.80', { name: 'JPEG-LS Lossless', codec: 'jpeg-ls', lossy: false }],
  ['1.2.840.10008.1.2.4.81', { name: 'JPEG-LS Near-Lossless', codec: 'jpeg-ls', lossy: true }],
  ['1.2.840.10008.1.2.4.90', { name: 'JPEG 2000 Lossless', codec: 'jpeg2000', lossy: false }],
  ['1.2.840.10008.1.2.4.91', { name: 'JPEG 2000', codec: 'jpeg2000', lossy: true }],
  ['1.2.840.10008.1.2.4.201', { name: 'HTJ2K Lossless', codec: 'htj2k', lossy: false }],
  ['1.2.840.10008.1.2.4.202', { name: 'HTJ2K Lossless RPCL', codec: 'htj2k', lossy: false }],
  ['1.2.840.10008.1.2.4.203', { name: 'HTJ2K', codec: 'htj2k', lossy: true }],
]);

/** "1.2.840.10008.1.2.4.70 (JPEG Lossless SV1)", or "(unknown transfer syntax)". */
export function describeSyntax(uid: string): string {
  return `${uid} (${TRANSFER_SYNTAXES.get(uid)?.name ?? 'unknown transfer syntax'})`;
}

/** The syntaxes ctgate reads, for messages and docs. */
export function supportedSyntaxes(): string {
  return [...TRANSFER_SYNTAXES.entries()].map(([uid, s]) => `${s.name} ${uid}`).join(', ');
}

/** The warning for a series stored with a lossy syntax (or marked LossyImageCompression 01). */
export function lossyWarning(uid: string, seriesUid: string): string {
  return `series ${seriesUid} is lossy compressed (${describeSyntax(uid)}): HU values are approximate; lesion volumes and the verdict may differ from the original images`;
}

export class DecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DecodeError';
  }
}

/** What a codec needs to know about the frame. */
export interface PixelFormat {
  rows: number;
  columns: number;
  bitsAllocated: number;
  bitsStored?: number;
  pixelRepresentation: number;
  samplesPerPixel: number;
  photometricInterpretation?: string;
}

type DcmjsCodecs = typeof import('dcmjs-codecs');
let loading: Promise<DcmjsCodecs> | undefined;

/** Loads and initialises the WebAssembly codecs once per process (about 0.1 s). */
export function loadCodecs(): Promise<DcmjsCodecs> {
  loading ??= (async () => {
    const mod = (await import('dcmjs-codecs')) as DcmjsCodecs & { default?: DcmjsCodecs };
    const lib = (mod.default ?? mod) as DcmjsCodecs;
    await lib.NativeCodecs.initializeAsync({ logCodecsInfo: false, logCodecsTrace: false });
    return lib;
  })();
  loading.catch(() => {
    loading = undefined;
  });
  return loading;
}

/**
 * Decodes one compressed frame (the bytes of its fragments, concatenated) to native little-endian stored values,
 * 16 bits each (8-bit frames are widened, sign-extended when PixelRepresentation is 1). Throws DecodeError when the
 * syntax is not one ctgate decodes or the codec fails.
 */
export async function decodeFrame(transferSyntax: string, encoded: Uint8Array, format: PixelFormat): Promise<Uint8Array> {
  const info = TRANSFER_SYNTAXES.get(transferSyntax);
  if (!info?.codec) throw new DecodeError(`transfer syntax ${describeSyntax(transferSyntax)} is not a compressed syntax ctgate decodes`);
  if (format.samplesPerPixel !== 1) throw new DecodeError(`only grayscale frames are decoded (SamplesPerPixel ${format.samplesPerPixel})`);
  const { NativeCodecs, Context } = await loadCodecs();
  const ctx = new Context({
    width: format.columns,
    height: format.rows,
    bitsAllocated: format.bitsAllocated,
    bitsStored: format.bitsStored ?? format.bitsAllocated,
    samplesPerPixel: 1,
    pixelRepresentation: format.pixelRepresentation,
    planarConfiguration: 0,
    photometricInterpretation: format.photometricInterpretation ?? 'MONOCHROME2',
    encodedBuffer: encoded,
  });
  let decoded: Uint8Array | undefined;
  try {
    const fn = {
      jpeg: NativeCodecs.decodeJpeg,
      'jpeg-ls': NativeCodecs.decodeJpegLs,
      jpeg2000: NativeCodecs.decodeJpeg2000,
      htj2k: NativeCodecs.decodeHtJpeg2000,
      rle: NativeCodecs.decodeRle,
    }[info.codec];
    decoded = fn.call(NativeCodecs, ctx, {}).getDecodedBuffer();
  } catch (e) {
    throw new DecodeError(`cannot decode a ${describeSyntax(transferSyntax)} frame: ${(e as Error).message ?? String(e)}`);
  }
  const n = format.rows * format.columns;
  const bytesPerSample = format.bitsAllocated <= 8 ? 1 : 2;
  if (!decoded || decoded.byteLength < n * bytesPerSample) {
    throw new DecodeError(`a ${describeSyntax(transferSyntax)} frame decoded to ${decoded?.byteLength ?? 0} bytes, expected ${n * bytesPerSample}`);
  }
  if (bytesPerSample === 2) return decoded.slice(0, n * 2);
  const out = new Uint8Array(n * 2);
  const view = new DataView(out.buffer);
  const signed = format.pixelRepresentation === 1;
  for (let i = 0; i < n; i++) {
    const v = decoded[i] as number;
    view.setInt16(i * 2, signed && v > 127 ? v - 256 : v, true);
  }
  return out;
}
