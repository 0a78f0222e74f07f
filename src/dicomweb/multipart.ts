/** Media type and parameters of a Content-Type header; quoted values may contain ';' (DICOMweb's type="…; transfer-syntax=…"). */
export function parseContentType(header: string): { mediaType: string; params: Record<string, string> } {
  const params: Record<string, string> = {};
  const re = /;\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)/g;
  const semi = header.indexOf(';');
  const mediaType = (semi === -1 ? header : header.slice(0, semi)).trim().toLowerCase();
  for (const m of header.slice(Math.max(semi, 0)).matchAll(re)) {
    const key = (m[1] ?? '').toLowerCase();
    let value = (m[2] ?? '').trim();
    if (value.startsWith('"')) value = value.slice(1, -1).replace(/\\(.)/g, '$1');
    params[key] = value;
  }
  return { mediaType, params };
}

export interface Part {
  headers: Record<string, string>;
  body: Buffer;
}

/** A byte buffer that grows by doubling, so appending chunk after chunk costs linear time overall. */
class GrowBuffer {
  private buf = Buffer.allocUnsafe(64 * 1024);
  length = 0;

  append(chunk: Uint8Array): void {
    if (this.length + chunk.length > this.buf.length) {
      const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.length + chunk.length));
      this.buf.copy(next, 0, 0, this.length);
      this.buf = next;
    }
    this.buf.set(chunk, this.length);
    this.length += chunk.length;
  }

  view(): Buffer {
    return this.buf.subarray(0, this.length);
  }

  /** Drops the first n bytes. */
  consume(n: number): void {
    this.buf.copy(this.buf, 0, n, this.length);
    this.length -= n;
  }
}

/**
 * Reads a multipart/related body as a stream, yielding each part as soon as it is complete, so memory holds
 * one part (one instance or frame) at a time rather than the whole response.
 */
export async function* readMultipart(stream: AsyncIterable<Uint8Array>, boundary: string): AsyncGenerator<Part> {
  const delimiter = Buffer.from(`--${boundary}`);
  const partEnd = Buffer.from(`\r\n--${boundary}`);
  const closing = Buffer.from(`--${boundary}--`);
  const headerBreak = Buffer.from('\r\n\r\n');
  const acc = new GrowBuffer();
  let started = false;
  // Where to resume looking for the end of the current part (bytes before it were already searched).
  let searchFrom = 0;
  let ended = false;
  for await (const chunk of stream) {
    // After the closing boundary, read to the end anyway so a keep-alive connection can be reused.
    if (ended) continue;
    acc.append(chunk);
    for (;;) {
      const buf = acc.view();
      if (!started) {
        const at = buf.indexOf(delimiter);
        if (at === -1) break;
        acc.consume(at);
        started = true;
        searchFrom = 0;
        continue;
      }
      // buf starts with --boundary; the part ends at the next CRLF--boundary.
      if (buf.length < delimiter.length + 2) break;
      if (buf[delimiter.length] === 0x2d && buf[delimiter.length + 1] === 0x2d) {
        ended = true;
        break;
      }
      const headerEnd = buf.indexOf(headerBreak, delimiter.length);
      if (headerEnd === -1) break;
      const next = buf.indexOf(partEnd, Math.max(headerEnd + 4, searchFrom));
      if (next === -1) {
        searchFrom = Math.max(headerEnd + 4, buf.length - partEnd.length);
        break;
      }
      const headers: Record<string, string> = {};
      for (const line of buf.subarray(delimiter.length, headerEnd).toString('latin1').split('\r\n')) {
        const colon = line.indexOf(':');
        if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      const body = Buffer.from(buf.subarray(headerEnd + 4, next));
      acc.consume(next + 2);
      searchFrom = 0;
      yield { headers, body };
    }
  }
  const rest = acc.view();
  if (ended) return;
  if (started && rest.length > 0 && !rest.subarray(0, closing.length).equals(closing)) {
    throw new Error('multipart response ended before its closing boundary');
  }
}
