/**
 * Readiness probe for processes without an HTTP server (a worker container's healthcheck):
 *
 *   node --import tsx src/observability/probe.ts [--checks redis,pacs,fhir,models]
 *
 * Runs the same checks as the gateway's GET /ready with this process's configuration (environment and
 * CTGATE_CONFIG_FILE), prints the result as one JSON line and exits 0 when ready, 1 when not, 2 on a
 * configuration error. Default checks: redis, pacs, fhir (the worker verifies the model files itself when it
 * loads them; add `models` to hash them on every probe).
 */
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config/index.js';
import { connectRedis, waitReady } from '../redis/connection.js';
import { ALL_CHECKS, type CheckName, checkReadiness, ModelFilesCheck } from './readiness.js';

async function probe(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { checks: { type: 'string', default: 'redis,pacs,fhir' } } });
  const which = (values.checks ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  const unknown = which.filter((c) => !(ALL_CHECKS as readonly string[]).includes(c));
  if (which.length === 0 || unknown.length > 0) {
    process.stderr.write(`probe: --checks takes names from ${ALL_CHECKS.join(', ')}\n`);
    return 2;
  }
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig();
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    process.stderr.write(`probe: configuration error: ${e.message}\n`);
    return 2;
  }
  const redis = connectRedis(config.redisUrl, Math.min(config.redisTimeoutMs, 2000));
  redis.on('error', () => {});
  try {
    if (which.includes('redis')) await waitReady(redis, 2000);
    const r = await checkReadiness(
      { redis, pacs: config.pacs, fhir: config.fhir, models: new ModelFilesCheck(config.worker.modelsManifest) },
      which as CheckName[],
    );
    process.stdout.write(`${JSON.stringify({ status: r.ready ? 'ready' : 'not ready', failed: r.failed, checks: r.checks })}\n`);
    return r.ready ? 0 : 1;
  } finally {
    redis.disconnect();
  }
}

process.exitCode = await probe(process.argv.slice(2));
