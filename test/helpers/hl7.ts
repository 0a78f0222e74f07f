import { execFile } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { encodeFrame, MllpDecoder } from '../../src/hl7/mllp-framing.js';

export interface OrmOptions {
  controlId: string;
  placer?: string;
  control?: string;
  code?: string;
  codeText?: string;
  codeSystem?: string;
  accession?: string;
  facility?: string;
  app?: string;
  type?: string;
  version?: string;
  acceptAck?: string;
  appAck?: string;
  extraSegments?: string[];
}

/** Builds an order message; defaults make a valid chest-CT ORM^O01 new order. */
export function orm(o: OrmOptions): string {
  const placer = o.placer ?? `P-${o.controlId}`;
  const msh = [
    'MSH',
    '^~\\&',
    o.app ?? 'EPIC',
    o.facility ?? 'GENHOSP',
    'CTGATE',
    'RADIOLOGY',
    '20261127101500',
    '',
    o.type ?? 'ORM^O01^ORM_O01',
    o.controlId,
    'P',
    o.version ?? '2.5.1',
    '',
    '',
    o.acceptAck ?? '',
    o.appAck ?? '',
  ];
  const segs = [
    msh.join('|').replace(/\|+$/, ''),
    'PID|1||MRN0001^^^GENHOSP^MR||TEST^PATIENT||19700101|M',
    `ORC|${o.control ?? 'NW'}|${placer}^EPIC|F-${placer}^RIS||SC||^^^20261127101000^^R||20261127101400|||77^ORDERING^OLIVIA`,
    `OBR|1|${placer}^EPIC|F-${placer}^RIS|${o.code ?? '71250'}^${o.codeText ?? 'CT THORAX WO CONTRAST'}^${o.codeSystem ?? 'C4'}|||20261127101000||||||||77^ORDERING^OLIVIA|||${o.accession ?? `A-${placer}`}`,
    ...(o.extraSegments ?? []),
  ];
  return segs.join('\r');
}

/** Reads one field of an ACK: seg "MSA", n 1 → MSA-1. */
export function ackField(ack: string, seg: string, n: number): string {
  const line = ack.split(/\r|\n/).find((l) => l.startsWith(seg));
  if (!line) return '';
  const parts = line.split('|');
  return (seg === 'MSH' ? parts[n - 1] : parts[n]) ?? '';
}

const execFileP = promisify(execFile);

/** Sends the messages in one file with python-hl7's mllp_send (the real sender) and returns each ACK. */
export async function mllpSend(port: number, messages: string[]): Promise<string[]> {
  const file = join(tmpdir(), `ctgate-mllp-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}.hl7`);
  writeFileSync(file, messages.join('\n'), { mode: 0o600 });
  // The file holds the orders (patient data in form): removed once sent, or not.
  const { stdout } = await execFileP('/usr/bin/mllp_send', ['--loose', '-p', String(port), '-f', file, '127.0.0.1'], { timeout: 20_000 }).finally(() =>
    rmSync(file, { force: true }),
  );
  return stdout
    .split(/(?=MSH\|)/)
    .map((s) => s.trim())
    .filter((s) => s.startsWith('MSH'));
}

/** A raw MLLP connection for the cases mllp_send cannot produce (split frames, garbage, TLS). */
export class MllpClient {
  private decoder = new MllpDecoder(16 * 1024 * 1024);
  private acks: string[] = [];
  private waiters: ((s: string) => void)[] = [];
  closed = false;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      for (const ev of this.decoder.push(chunk)) {
        if (ev.type !== 'message') continue;
        const text = ev.data.toString('utf8');
        const w = this.waiters.shift();
        if (w) w(text);
        else this.acks.push(text);
      }
    });
    socket.on('close', () => {
      this.closed = true;
    });
    socket.on('error', () => {});
  }

  static connect(port: number, opts: { tls?: tls.ConnectionOptions } = {}): Promise<MllpClient> {
    return new Promise((resolve, reject) => {
      const s = opts.tls
        ? tls.connect({ port, host: '127.0.0.1', ...opts.tls }, () => resolve(new MllpClient(s)))
        : net.connect(port, '127.0.0.1', () => resolve(new MllpClient(s)));
      s.once('error', reject);
    });
  }

  write(bytes: Buffer | string): void {
    this.socket.write(bytes);
  }

  send(message: string): void {
    this.socket.write(encodeFrame(message));
  }

  /** The next ACK, or an error after `ms` or when the connection closes first. */
  nextAck(ms = 5000): Promise<string> {
    const ready = this.acks.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no ACK in time')), ms);
      const onClose = () => {
        clearTimeout(t);
        reject(new Error('connection closed before an ACK'));
      };
      if (this.closed) return onClose();
      this.socket.once('close', onClose);
      this.waiters.push((s) => {
        clearTimeout(t);
        this.socket.off('close', onClose);
        resolve(s);
      });
    });
  }

  /** Resolves true when the server closes the connection within `ms`. */
  waitClose(ms = 5000): Promise<boolean> {
    if (this.closed) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), ms);
      this.socket.once('close', () => {
        clearTimeout(t);
        resolve(true);
      });
    });
  }

  close(): void {
    this.socket.destroy();
  }
}
