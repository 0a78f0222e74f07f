import { Transform, type TransformCallback } from 'node:stream';

/**
 * Replaces fixed ASCII strings in a byte stream as it passes (e.g. the PACS's DICOMweb base URL in BulkDataURI and
 * RetrieveURL values by ctgate's public one), without holding more than the longest pattern back. This is how the
 * proxy rewrites JSON (and XML) answers of any size, series metadata included, instead of buffering them: matching
 * bytes is safe in UTF-8 because ASCII bytes never occur inside a multi-byte character.
 */
export class ReplaceStream extends Transform {
  private readonly from: Buffer[];
  private readonly to: Buffer[];
  private readonly keep: number;
  private carry: Buffer = Buffer.alloc(0);

  /** At one position the longest pattern wins. Replacements are not scanned again. */
  constructor(pairs: [string, string][]) {
    super();
    const sorted = pairs.filter(([f]) => f.length > 0).sort((a, b) => b[0].length - a[0].length);
    this.from = sorted.map(([f]) => Buffer.from(f, 'latin1'));
    this.to = sorted.map(([, t]) => Buffer.from(t, 'utf8'));
    this.keep = Math.max(0, ...this.from.map((f) => f.length - 1));
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const buf = this.carry.length ? Buffer.concat([this.carry, chunk]) : chunk;
    const emitUpTo = Math.max(0, buf.length - this.keep);
    this.carry = Buffer.from(buf.subarray(this.scan(buf, emitUpTo)));
    done();
  }

  override _flush(done: TransformCallback): void {
    const buf = this.carry;
    this.carry = Buffer.alloc(0);
    const rest = this.scan(buf, buf.length);
    if (rest < buf.length) this.push(buf.subarray(rest));
    done();
  }

  /** Pushes buf up to `limit` with replacements made (a match may run past limit); returns where it stopped. */
  private scan(buf: Buffer, limit: number): number {
    let pos = 0;
    for (;;) {
      let at = -1;
      let which = -1;
      for (let i = 0; i < this.from.length; i++) {
        const j = buf.indexOf(this.from[i] as Buffer, pos);
        if (j >= 0 && (at < 0 || j < at)) {
          at = j;
          which = i;
        }
      }
      if (at < 0 || at >= limit) {
        if (limit > pos) this.push(buf.subarray(pos, limit));
        return Math.max(pos, limit);
      }
      if (at > pos) this.push(buf.subarray(pos, at));
      this.push(this.to[which] as Buffer);
      pos = at + (this.from[which] as Buffer).length;
    }
  }
}
