import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { Redis } from 'ioredis';
import { deleteByPrefix } from '../../src/redis/connection.js';

export const REDIS_URL = process.env.CTGATE_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** Fails loudly when the Redis the tests need is not there (CI starts one in .ci/setup.sh). */
export async function requireRedis(url = REDIS_URL): Promise<void> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: 2000, retryStrategy: () => null });
  r.on('error', () => {}); // connect() rejects with it
  try {
    await r.connect();
    await r.ping();
  } catch (e) {
    throw new Error(`Redis is not answering at ${url} (${(e as Error).message}); run: bash .ci/setup.sh`);
  } finally {
    r.disconnect();
  }
}

export function deleteKeys(prefix: string, url = REDIS_URL): Promise<void> {
  return deleteByPrefix(url, prefix);
}

export interface OwnRedisOptions {
  /** AOF on, in `dir` (required then); default off, nothing written to disk. */
  appendonly?: boolean;
  dir?: string;
  /** Further arguments, e.g. ['--rename-command', 'CONFIG', ''] for a Redis whose CONFIG is disabled. */
  extraArgs?: string[];
}

/** A private redis-server on its own port, for tests that stop and restart Redis. */
export class OwnRedis {
  private proc?: ChildProcess;
  constructor(
    readonly port: number,
    readonly opts: OwnRedisOptions = {},
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const { appendonly = false, dir, extraArgs = [] } = this.opts;
    if (appendonly && !dir) throw new Error('OwnRedis: appendonly needs a dir');
    const args = ['--bind', '127.0.0.1', '--port', String(this.port), '--save', '', '--appendonly', appendonly ? 'yes' : 'no'];
    if (dir) args.push('--dir', dir);
    this.proc = spawn('redis-server', [...args, ...extraArgs], { stdio: 'ignore' });
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      try {
        await requireRedis(this.url);
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    throw new Error(`redis-server did not start on port ${this.port}`);
  }

  async stop(): Promise<void> {
    const p = this.proc;
    // A process stopped before has exited by signal (exitCode stays null): its 'exit' will not come again.
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    p.kill('SIGKILL');
    await once(p, 'exit');
  }
}
