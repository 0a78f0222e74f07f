/** MLLP framing: <VT> message <FS><CR>. */
export const VT = 0x0b;
export const FS = 0x1c;
export const CR = 0x0d;

export type FrameEvent =
  | { type: 'message'; data: Buffer }
  /** A frame longer than the limit; `head` holds its first bytes so the MSH can still be answered. */
  | { type: 'oversized'; head: Buffer; size: number }
  /** Bytes outside any frame (or a frame restarted before it ended) were dropped. */
  | { type: 'garbage'; bytes: number; reason: string };

const HEAD_BYTES = 8192;

export function encodeFrame(message: string | Buffer): Buffer {
  const body = typeof message === 'string' ? Buffer.from(message, 'utf8') : message;
  return Buffer.concat([Buffer.from([VT]), body, Buffer.from([FS, CR])]);
}

/**
 * Incremental MLLP decoder: feed it chunks as they arrive from the socket, get whole frames back.
 * Memory stays bounded by maxBytes per connection: an oversized frame is skipped, not buffered.
 */
export class MllpDecoder {
  private chunks: Buffer[] = [];
  private size = 0;
  private inFrame = false;
  private oversized = false;
  private garbage = 0;

  constructor(private readonly maxBytes: number) {}

  /** True while part of a frame has arrived but not its end. */
  get pending(): boolean {
    return this.inFrame;
  }

  push(chunk: Buffer): FrameEvent[] {
    const out: FrameEvent[] = [];
    let i = 0;
    while (i < chunk.length) {
      if (!this.inFrame) {
        const start = chunk.indexOf(VT, i);
        const skipped = (start === -1 ? chunk.length : start) - i;
        // A lone CR/LF between frames is common and harmless; anything else is garbage worth reporting.
        for (let k = i; k < i + skipped; k++) {
          const b = chunk[k];
          if (b !== CR && b !== 0x0a) this.garbage++;
        }
        if (start === -1) break;
        if (this.garbage > 0) {
          out.push({ type: 'garbage', bytes: this.garbage, reason: 'bytes outside an MLLP frame' });
          this.garbage = 0;
        }
        this.startFrame();
        i = start + 1;
        continue;
      }
      const end = chunk.indexOf(FS, i);
      const restart = chunk.indexOf(VT, i);
      if (restart !== -1 && (end === -1 || restart < end)) {
        this.append(chunk.subarray(i, restart));
        out.push({ type: 'garbage', bytes: this.size, reason: 'frame restarted before its end' });
        this.startFrame();
        i = restart + 1;
        continue;
      }
      if (end === -1) {
        this.append(chunk.subarray(i));
        break;
      }
      this.append(chunk.subarray(i, end));
      out.push(this.finishFrame());
      i = end + 1;
      // The CR after FS is expected; tolerate senders that omit it.
      if (i < chunk.length && chunk[i] === CR) i++;
    }
    if (!this.inFrame && this.garbage > 0 && i >= chunk.length) {
      out.push({ type: 'garbage', bytes: this.garbage, reason: 'bytes outside an MLLP frame' });
      this.garbage = 0;
    }
    return out;
  }

  private startFrame(): void {
    this.inFrame = true;
    this.oversized = false;
    this.chunks = [];
    this.size = 0;
  }

  private append(part: Buffer): void {
    if (part.length === 0) return;
    this.size += part.length;
    if (this.size > this.maxBytes) {
      if (!this.oversized) {
        this.oversized = true;
        this.chunks = [Buffer.concat(this.chunks).subarray(0, HEAD_BYTES)];
      }
      const head = this.chunks[0] ?? Buffer.alloc(0);
      const room = HEAD_BYTES - head.length;
      if (room > 0) this.chunks = [Buffer.concat([head, part.subarray(0, room)])];
      return;
    }
    this.chunks.push(Buffer.from(part));
  }

  private finishFrame(): FrameEvent {
    this.inFrame = false;
    const data = Buffer.concat(this.chunks);
    const size = this.size;
    this.chunks = [];
    this.size = 0;
    if (this.oversized) return { type: 'oversized', head: data, size };
    return { type: 'message', data };
  }
}
