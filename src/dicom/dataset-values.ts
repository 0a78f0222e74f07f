/**
 * Values of a dcmjs naturalized dataset (a DICOM header read from a file, or a C-FIND answer): the first value, as
 * trimmed text (a person name's Alphabetic group) or as a finite number; undefined when absent or empty.
 */
export type NaturalDataset = Record<string, unknown>;

function firstValue(a: NaturalDataset, key: string): unknown {
  const v = a[key];
  return Array.isArray(v) ? v[0] : v;
}

export function textValue(a: NaturalDataset, key: string): string | undefined {
  const v = firstValue(a, key);
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'object') {
    const alpha = (v as { Alphabetic?: unknown }).Alphabetic;
    return typeof alpha === 'string' && alpha.trim() ? alpha.trim() : undefined;
  }
  const s = String(v).trim();
  return s ? s : undefined;
}

export function numberValue(a: NaturalDataset, key: string): number | undefined {
  const s = textValue(a, key);
  const n = s === undefined ? Number.NaN : Number(s);
  return Number.isFinite(n) ? n : undefined;
}
