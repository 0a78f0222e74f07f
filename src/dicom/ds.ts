/** DICOM value formatting shared by every encoder. */

/** Decimal String (DS): at most 16 characters, no exponent, no "-0". */
export function formatDs(v: number): string {
  if (!Number.isFinite(v)) throw new Error(`DS value must be finite, got ${v}`);
  for (let p = 12; p >= 1; p--) {
    let s = Number(v.toPrecision(p)).toString();
    if (s.includes('e')) s = v.toFixed(Math.max(0, 14 - Math.ceil(Math.log10(Math.abs(v) + 1)))).replace(/\.?0+$/, '');
    if (s === '-0') s = '0';
    if (s.length <= 16) return s;
  }
  throw new Error(`cannot write ${v} as DS`);
}
