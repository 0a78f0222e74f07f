/**
 * Minimal types for dcmjs (which ships none): only what ctgate uses. Datasets are "naturalized" (keyword →
 * value, e.g. { PatientName: 'A^B', Rows: 512 }) or "denaturalized" (tag hex → { vr, Value: [...] }).
 */
declare module 'dcmjs' {
  export type NaturalizedDataset = Record<string, unknown>;
  export interface DataElement {
    vr: string;
    Value?: unknown[];
  }
  export type DenaturalizedDataset = Record<string, DataElement>;

  export interface WriteOptions {
    allowInvalidVRLength?: boolean;
    fragmentMultiframe?: boolean;
  }

  export interface DicomDict {
    meta: DenaturalizedDataset;
    dict: DenaturalizedDataset;
    /** Part 10 file: preamble, "DICM", file meta (group 2) then the dataset in meta's transfer syntax. */
    write(options?: WriteOptions): ArrayBuffer;
  }

  export interface DicomDictConstructor {
    new (meta: DenaturalizedDataset): DicomDict;
  }

  export interface DicomMetaDictionaryStatic {
    denaturalizeDataset(dataset: NaturalizedDataset): DenaturalizedDataset;
    naturalizeDataset(dataset: DenaturalizedDataset): NaturalizedDataset;
    /** A random 2.25 UID (Math.random; not reproducible). */
    uid(): string;
    date(): string;
    time(): string;
  }

  export interface DicomMessageStatic {
    readFile(buffer: ArrayBuffer, options?: Record<string, unknown>): DicomDict;
  }

  export interface DataNamespace {
    DicomDict: DicomDictConstructor;
    DicomMetaDictionary: DicomMetaDictionaryStatic;
    DicomMessage: DicomMessageStatic;
  }

  export interface Log {
    setLevel(level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'silent'): void;
    getLevel(): number;
  }

  export const data: DataNamespace;
  export const log: Log;
  const dcmjs: { data: DataNamespace; log: Log };
  export default dcmjs;
}
