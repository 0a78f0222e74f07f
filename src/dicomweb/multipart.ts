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

/** Where a part's body goes as it arrives. */
export interface PartSink {
  /**
   * The next bytes of the body, in order. The bytes may be a view on the incoming chunk: read or copy them
   * during the call (Node's streams never reuse a chunk, but other sources may).
   */
  write(bytes: Buffer): void;
  /** The body is complete. */
  end(): void;
}

const EMPTY = Buffer.alloc(0);
const HEADER_BREAK = Buffer.from('\r\n\r\n');

function parseHeaders(block: Buffer): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const line of block.toString('latin1').split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return headers;
}

/**
 * Push parser for a multipart/related body. Part bodies are handed to a sink as views on the incoming chunks,
 * without being gathered or copied: only the few bytes at a chunk's end that could start a delimiter are held
 * back (and part headers split across chunks). Call `push` for every chunk, then `finish` at the end of the body.
 */
export class MultipartParser {
  private readonly delimiter: Buffer;
  /** CRLF--boundary: what ends a part's body. */
  private readonly partEnd: Buffer;
  private state: 'preamble' | 'head' | 'body' | 'epilogue' = 'preamble';
  /** Unconsumed bytes from earlier chunks (in the body: a tail that may be the start of the delimiter). */
  private carry: Buffer = EMPTY;
  private sink: PartSink | undefined;

  /** `onPart` is called with each part's headers and returns where its body goes (undefined: skip it). */
  constructor(
    boundary: string,
    private readonly onPart: (headers: Record<string, string>) => PartSink | undefined,
  ) {
    this.delimiter = Buffer.from(`--${boundary}`);
    this.partEnd = Buffer.from(`\r\n--${boundary}`);
  }

  push(input: Uint8Array): void {
    if (this.state === 'epilogue' || input.length === 0) return;
    const chunk = Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
    let buf = chunk;
    let pos = 0;
    const carry = this.carry;
    if (carry.length > 0) {
      this.carry = EMPTY;
      const keep = this.partEnd.length - 1;
      if (this.state === 'body' && chunk.length >= keep) {
        // The held-back tail plus the chunk's first bytes hold any delimiter that starts in the tail.
        const at = Buffer.concat([carry, chunk.subarray(0, keep)]).indexOf(this.partEnd);
        if (at !== -1 && at < carry.length) {
          this.emit(carry.subarray(0, at));
          this.endPart();
          pos = at + this.partEnd.length - carry.length;
        } else {
          this.emit(carry);
        }
      } else {
        // Small pieces (a split header block, or a tiny chunk): join them.
        buf = Buffer.concat([carry, chunk]);
      }
    }
    this.scan(buf, pos);
  }

  /** The body ended: throws if it was cut before the closing delimiter. */
  finish(): void {
    if (this.state !== 'preamble' && this.state !== 'epilogue') throw new Error('multipart response ended before its closing boundary');
  }

  private emit(bytes: Buffer): void {
    if (bytes.length > 0) this.sink?.write(bytes);
  }

  private endPart(): void {
    const sink = this.sink;
    this.sink = undefined;
    this.state = 'head';
    sink?.end();
  }

  private scan(buf: Buffer, from: number): void {
    let pos = from;
    for (;;) {
      if (this.state === 'preamble') {
        const at = buf.indexOf(this.delimiter, pos);
        if (at === -1) {
          this.carry = Buffer.from(buf.subarray(Math.max(pos, buf.length - (this.delimiter.length - 1))));
          return;
        }
        pos = at + this.delimiter.length;
        this.state = 'head';
      } else if (this.state === 'head') {
        // Just after a delimiter: "--" closes the body; otherwise header lines up to an empty line.
        if (buf.length - pos < 2) {
          this.carry = Buffer.from(buf.subarray(pos));
          return;
        }
        if (buf[pos] === 0x2d && buf[pos + 1] === 0x2d) {
          this.state = 'epilogue';
          return;
        }
        const headerEnd = buf.indexOf(HEADER_BREAK, pos);
        if (headerEnd === -1) {
          this.carry = Buffer.from(buf.subarray(pos));
          return;
        }
        this.sink = this.onPart(parseHeaders(buf.subarray(pos, headerEnd)));
        this.state = 'body';
        pos = headerEnd + HEADER_BREAK.length;
      } else if (this.state === 'body') {
        const at = buf.indexOf(this.partEnd, pos);
        if (at === -1) {
          // Hold back what could be the start of a delimiter split across chunks.
          const keep = Math.max(pos, buf.length - (this.partEnd.length - 1));
          this.emit(buf.subarray(pos, keep));
          this.carry = Buffer.from(buf.subarray(keep));
          return;
        }
        this.emit(buf.subarray(pos, at));
        this.endPart();
        pos = at + this.partEnd.length;
      } else {
        return;
      }
    }
  }
}

/** Gathers one part's body into a Buffer of its own. */
function collect(headers: Record<string, string>, done: (part: Part) => void): PartSink {
  const chunks: Buffer[] = [];
  let length = 0;
  return {
    write(bytes) {
      // A copy: the incoming chunk may be reused by its source once we return.
      chunks.push(Buffer.from(bytes));
      length += bytes.length;
    },
    end() {
      done({ headers, body: chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, length) });
    },
  };
}

/**
 * Reads a multipart/related body as a stream, yielding each part as soon as it is complete, so memory holds
 * one part (one instance or frame) at a time rather than the whole response. After the closing boundary the
 * stream is still read to its end, so a keep-alive connection can be reused.
 */
export async function* readMultipart(stream: AsyncIterable<Uint8Array>, boundary: string): AsyncGenerator<Part> {
  const ready: Part[] = [];
  const parser = new MultipartParser(boundary, (headers) => collect(headers, (part) => ready.push(part)));
  for await (const chunk of stream) {
    parser.push(chunk);
    while (ready.length > 0) yield ready.shift() as Part;
  }
  parser.finish();
}
