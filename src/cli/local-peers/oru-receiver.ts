/**
 * python-hl7's MLLP server (./oru-receiver.py) as the EMR that receives ORU^R01: the receiver of the tests and
 * of `ctgate demo`. Each received message is written to a folder; received() reads them back.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const RECEIVER = fileURLToPath(new URL('./oru-receiver.py', import.meta.url));
let root: string | undefined;
/**
 * The folder under which receivers keep what they receive (made on first use). The ORUs in it carry patient data:
 * it is removed when this process exits (received() is only read while the process runs).
 */
export function tmpRoot(): string {
  if (root === undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'ctgate-oru-'));
    root = dir;
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  }
  return root;
}

export interface Receiver {
  port: number;
  /** The folder the received messages are written to. */
  dir: string;
  /** The messages received so far, as the receiver wrote them. */
  received(): Buffer[];
  stop(): Promise<void>;
  /** Sends the receiver process a signal (SIGSTOP/SIGCONT: an EMR that takes the connection and never answers). */
  signal(sig: NodeJS.Signals): void;
}

export const running = new Set<ChildProcess>();

/** `dir`: where to write the received messages (made if missing; the caller removes it); default a new folder under tmpRoot(). */
export function startReceiver(o: { port?: number; mode?: string; dir?: string; tls?: { cert: string; key: string; ca?: string } } = {}): Promise<Receiver> {
  const out = o.dir ?? mkdtempSync(join(tmpRoot(), 'rx-'));
  if (o.dir) mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  const args = [RECEIVER, '--port', String(o.port ?? 0), '--out', out, '--mode', o.mode ?? 'aa'];
  if (o.tls) args.push('--tls-cert', o.tls.cert, '--tls-key', o.tls.key, ...(o.tls.ca ? ['--tls-ca', o.tls.ca] : []));
  const proc = spawn('/usr/bin/python3', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(proc);
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const stop = () =>
    new Promise<void>((resolve) => {
      running.delete(proc);
      if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
      proc.once('exit', () => resolve());
      proc.kill('SIGTERM');
    });
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => {
      void stop();
      reject(new Error(`receiver did not start: ${stderr}`));
    }, 10_000);
    proc.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /LISTENING (\d+)/.exec(buf);
      if (!m) return;
      clearTimeout(t);
      resolve({
        port: Number(m[1]),
        dir: out,
        received: () =>
          readdirSync(out)
            .sort()
            .map((f) => readFileSync(join(out, f))),
        stop,
        signal: (sig) => {
          proc.kill(sig);
        },
      });
    });
    proc.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`receiver exited (${code}): ${stderr}`));
    });
  });
}
