import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { Redis } from 'ioredis';
import { deleteByPrefix } from '../../src/jobs/redis.js';

export const REDIS_URL = process.env.CTGATE_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** Fails loudly when the Redis the tests need is not there (CI starts one in .ci/setup.sh). */
export async function requireRedis(url = REDIS_URL): Promise<void> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: 2000, retryStrategy: () => null });
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

/** A private redis-server on its own port, for tests that stop and restart Redis. */
export class OwnRedis {
  private proc?: ChildProcess;
  constructor(readonly port: number) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.proc = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(this.port), '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
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
    if (!p || p.exitCode !== null) return;
    p.kill('SIGKILL');
    await once(p, 'exit');
  }
}
