import { randomBytes } from 'node:crypto';
import { type Gateway, startGateway } from '../../src/cli/gateway.js';
import { loadConfig } from '../../src/config/index.js';
import { type Logger, silentLogger } from '../../src/observability/log.js';
import { deleteKeys, REDIS_URL, requireRedis } from './redis.js';

export const TEST_TOKEN = 'test-token-0123456789abcdef';

export interface TestGateway extends Gateway {
  prefix: string;
  cleanup(): Promise<void>;
}

/** An in-process gateway on ephemeral ports with its own Redis key prefix; `log` (default silent) gets its log lines. */
export async function startTestGateway(env: Record<string, string> = {}, opts: { skipRedisCheck?: boolean; log?: Logger } = {}): Promise<TestGateway> {
  const redisUrl = env.CTGATE_REDIS_URL ?? REDIS_URL;
  if (!opts.skipRedisCheck) await requireRedis(redisUrl);
  const prefix = `ctgate-test-${randomBytes(4).toString('hex')}`;
  const config = loadConfig({
    CTGATE_REDIS_URL: redisUrl,
    CTGATE_REDIS_PREFIX: prefix,
    CTGATE_MLLP_PORT: '0',
    CTGATE_HTTP_PORT: '0',
    CTGATE_API_TOKEN: TEST_TOKEN,
    CTGATE_MAPPINGS_FILE: 'mappings/orders.yaml',
    CTGATE_REDIS_TIMEOUT_MS: '500',
    // The shared test Redis runs with appendonly no; test/integration/redis-persistence.test.ts covers the check.
    CTGATE_REDIS_REQUIRE_AOF: 'false',
    ...env,
  });
  const gw = await startGateway(config, opts.log ?? silentLogger);
  return {
    ...gw,
    prefix,
    cleanup: async () => {
      await gw.stop();
      if (!opts.skipRedisCheck) await deleteKeys(prefix, redisUrl);
    },
  };
}
