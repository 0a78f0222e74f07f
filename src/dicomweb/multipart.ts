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

/**
 * Reads a multipart/related body as a stream, yielding each part as soon as it is complete, so memory holds
 * one part (one instance or frame) at a time rather than the whole response.
 */
export async function* readMultipart(stream: AsyncIterable<Uint8Array>, boundary: string): AsyncGenerator<Part> {
  const delimiter = Buffer.from(`--${boundary}`);
  let buf: Buffer = Buffer.alloc(0);
  let started = false;
  let searchFrom = 0;
  for await (const chunk of stream) {
    buf = buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([buf, chunk]);
    for (;;) {
      if (!started) {
        const at = buf.indexOf(delimiter);
        if (at === -1) break;
        buf = buf.subarray(at);
        started = true;
        searchFrom = 0;
      }
      // buf starts with --boundary; the part ends at the next CRLF--boundary.
      if (buf.length < delimiter.length + 2) break;
      if (buf[delimiter.length] === 0x2d && buf[delimiter.length + 1] === 0x2d) return;
      const headerEnd = buf.indexOf('\r\n\r\n', delimiter.length);
      if (headerEnd === -1) break;
      const next = buf.indexOf(Buffer.concat([Buffer.from('\r\n'), delimiter]), Math.max(headerEnd + 4, searchFrom));
      if (next === -1) {
        searchFrom = Math.max(headerEnd + 4, buf.length - delimiter.length - 2);
        break;
      }
      const headers: Record<string, string> = {};
      for (const line of buf.subarray(delimiter.length, headerEnd).toString('latin1').split('\r\n')) {
        const colon = line.indexOf(':');
        if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      yield { headers, body: Buffer.from(buf.subarray(headerEnd + 4, next)) };
      buf = buf.subarray(next + 2);
      searchFrom = 0;
    }
  }
  if (started && buf.length > 0 && !buf.subarray(0, delimiter.length + 2).equals(Buffer.concat([delimiter, Buffer.from('--')]))) {
    throw new Error('multipart response ended before its closing boundary');
  }
}
