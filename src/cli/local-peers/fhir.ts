import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

const SERVER = fileURLToPath(new URL('./fhir-server.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../../..', import.meta.url));

/**
 * The FHIR peer of the tests and of `ctgate demo` (Medplum's FHIR engine, ./fhir-server.ts) in its own process on a free port. start()
 * resolves when it prints its ready line and fails loudly, with its stderr, when it exits or stays silent.
 */
export class LocalFhirServer {
  private proc?: ChildProcess;
  url = '';
  log = '';

  constructor(private readonly opts: { token?: string; startTimeoutMs?: number } = {}) {}

  async start(): Promise<void> {
    const args = ['--experimental-websocket', '--no-warnings', '--import', 'tsx', SERVER, '--port', '0'];
    if (this.opts.token) args.push('--token', this.opts.token);
    const proc = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    proc.stderr?.on('data', (d) => {
      this.log = (this.log + d).slice(-4000);
    });
    this.url = await new Promise<string>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => fail(`no ready line within ${this.opts.startTimeoutMs ?? 20_000} ms`), this.opts.startTimeoutMs ?? 20_000);
      const fail = (why: string) => {
        clearTimeout(timer);
        proc.kill('SIGKILL');
        reject(new Error(`FHIR peer did not start: ${why}\n${this.log}`));
      };
      proc.once('exit', (code) => fail(`exited with ${code}`));
      proc.once('error', (e) => fail(e.message));
      proc.stdout?.on('data', (d) => {
        out += d;
        const m = out.match(/FHIR server ready (\S+)/);
        if (m?.[1]) {
          clearTimeout(timer);
          proc.removeAllListeners('exit');
          resolve(m[1]);
        }
      });
    });
  }

  /** Sends the server process a signal: SIGSTOP/SIGCONT make an outage in which it accepts connections and never answers. */
  signal(sig: NodeJS.Signals): void {
    this.proc?.kill(sig);
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 3000);
    await once(p, 'exit');
    clearTimeout(t);
  }
}
