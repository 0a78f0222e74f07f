import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ConfigError, configKeys, loadConfig, requireApiToken } from '../config/index.js';
import { SeriesRulesError } from '../imaging/series-selection.js';
import { ManifestError } from '../inference/manifest.js';
import { createLogger } from '../observability/log.js';
import { loadMappings, MappingsError } from '../orders/mappings.js';
import { connectRedis, waitReady } from '../redis/connection.js';
import { persistenceProblem, RedisPersistenceError, redisPersistence } from '../redis/persistence.js';
import { synthCommand } from '../synthetic/cli.js';
import { analyzeCommand } from './analyze.js';
import { runDemo } from './demo.js';
import { dicomEchoCommand } from './dicom-echo.js';
import { dicomReceiveCommand } from './dicom-receive.js';
import { startGateway } from './gateway.js';
import { checkMessage } from './hl7-check.js';
import { seriesExplainCommand } from './series-explain.js';
import { startWorker } from './worker.js';

const USAGE = `usage:
  ctgate serve                      start the gateway (MLLP order intake + HTTP API)
  ctgate worker [--gpu]             run screening jobs from the queue (study wait, retrieval, models, SEG/FHIR/ORU);
                                    --gpu tries CUDA first (falls back to CPU, and says so)
  ctgate hl7 check FILE [--mappings F]
                                    dry run: the order a message yields, or why it is rejected
                                    (exit 0: yields an order; 2: would be NAKed)
  ctgate demo [--once] [--via-cstore]
                                    the whole flow with local peers: studies in a PACS, orders over MLLP, results
                                    (SEG, FHIR report, ORU); --once stops after and prints a JSON summary;
                                    --via-cstore: the PACS sends the studies to ctgate by C-STORE
  ctgate synth --out DIR --seed N --kind covid|lobar-pneumonia|nodule|old-lesion|healthy [--size X,Y,Z] [--spacing X,Y,Z]
                                    write a synthetic chest-CT series (DICOM) with its ground-truth masks
  ctgate series explain --pacs URL (--study UID | --accession ACC) [--user U --password P | --token T] [--rules F] [--json]
  ctgate series explain --dimse HOST:PORT --called-ae AE [--calling-ae AE] (--study UID | --accession ACC) [--rules F] [--json]
                                    why each series of a study is taken or refused (exit 0 chosen, 3 none fits)
  ctgate analyze PATH --out DIR [--manifest F] [--threads N]
                                    run the screening models offline on DICOM files; writes findings.json and key images
  ctgate dicom echo --host H --port P [--called-ae AE] [--calling-ae AE] [--timeout S]
                                    C-ECHO a DICOM peer (exit 0 ok, 3 association rejected, 1 network/usage error)
  ctgate dicom receive [--port P] [--host H] [--ae AE] [--callers LIST] [--dir D]
                                    run the DIMSE receiver (C-ECHO, C-STORE via DCMTK storescp) in the foreground
  ctgate dicom receive --list [--dir D]
                                    list the studies in the receive folder (JSON) and exit
  ctgate config keys                list the environment variables ctgate reads`;

/** With CTGATE_PROCESSES > 1 the primary only supervises: workers share the listening ports (node:cluster). */
function supervise(processes: number, log: ReturnType<typeof createLogger>): Promise<number> {
  let stopping = false;
  const fork = () => cluster.fork();
  for (let i = 0; i < processes; i++) fork();
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return;
    log.error('gateway.process-exited', { pid: worker.process.pid, code, signal });
    setTimeout(fork, 1000);
  });
  const forward = (signal: NodeJS.Signals) => {
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill(signal);
  };
  process.on('SIGHUP', () => forward('SIGHUP'));
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.on(sig, () => {
      stopping = true;
      forward('SIGTERM');
      const wait = setInterval(() => {
        if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
      }, 100);
      setTimeout(() => process.exit(0), 10_000).unref();
      void wait;
    });
  }
  log.info('gateway.supervising', { processes });
  return new Promise<number>(() => {});
}

/** RedisPersistenceError when Redis answers and does not persist; a Redis that is down is the gateway's to wait for. */
async function requirePersistentRedis(url: string, timeoutMs: number): Promise<void> {
  const redis = connectRedis(url, timeoutMs);
  redis.on('error', () => {});
  try {
    if (!(await waitReady(redis, 3000))) return;
    const p = await redisPersistence(redis);
    if (persistenceProblem(p)) throw new RedisPersistenceError(p);
  } finally {
    redis.disconnect();
  }
}

async function serve(): Promise<number> {
  const config = loadConfig();
  const log = createLogger(config.logLevel, config.logPhi);
  if (config.processes > 1 && cluster.isPrimary) {
    requireApiToken(config);
    // Checked here too: each process would refuse to start, and the supervisor restart it, forever.
    if (config.redisRequireAof) await requirePersistentRedis(config.redisUrl, config.redisTimeoutMs);
    return supervise(config.processes, log);
  }
  const gw = await startGateway(config, log);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('gateway.stopping', { signal });
    await gw.stop();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGHUP', () => {
    try {
      gw.reloadMappings();
    } catch (e) {
      log.error('mappings.reload-failed', { error: (e as Error).message });
    }
  });
  log.info('gateway.ready', { mllpPort: gw.mllp.port, httpPort: gw.httpPort });
  return new Promise<number>(() => {});
}

async function worker(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { gpu: { type: 'boolean', default: false } } });
  const config = loadConfig();
  const log = createLogger(config.logLevel, config.logPhi);
  const w = await startWorker(config, log, { gpu: values.gpu });
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('worker.stopping', { signal });
    // Jobs in hand finish their current stage (checkpointed); a second signal exits at once.
    process.once(signal as NodeJS.Signals, () => process.exit(1));
    await w.stop();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  return new Promise<number>(() => {});
}

function hl7Check(args: string[]): number {
  const { values, positionals } = parseArgs({ args, options: { mappings: { type: 'string' } }, allowPositionals: true });
  const file = positionals[0];
  if (!file) {
    process.stderr.write(`${USAGE}\n`);
    return 1;
  }
  const mappingsFile = values.mappings ?? process.env.CTGATE_MAPPINGS_FILE ?? 'mappings/orders.yaml';
  const mappings = loadMappings(mappingsFile);
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (e) {
    process.stderr.write(`cannot read ${file}: ${(e as Error).message}\n`);
    return 1;
  }
  const report = checkMessage(bytes, mappings);
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  return report.accepted ? 0 : 2;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, sub, ...rest] = argv;
  try {
    if (cmd === 'serve') return await serve();
    if (cmd === 'worker') return await worker(argv.slice(1));
    if (cmd === 'demo') return await runDemo(argv.slice(1));
    if (cmd === 'synth') return await synthCommand(argv.slice(1));
    if (cmd === 'analyze') return await analyzeCommand(argv.slice(1));
    if (cmd === 'series' && sub === 'explain') return await seriesExplainCommand(rest);
    if (cmd === 'hl7' && sub === 'check') return hl7Check(rest);
    if (cmd === 'dicom' && sub === 'echo') return await dicomEchoCommand(rest);
    if (cmd === 'dicom' && sub === 'receive') return await dicomReceiveCommand(rest);
    if (cmd === 'config' && sub === 'keys') {
      process.stdout.write(`${configKeys.join('\n')}\n`);
      return 0;
    }
    process.stderr.write(`${USAGE}\n`);
    return cmd === undefined || cmd === 'help' || cmd === '--help' ? 0 : 1;
  } catch (e) {
    if (e instanceof ConfigError || e instanceof MappingsError || e instanceof ManifestError || e instanceof SeriesRulesError) {
      process.stderr.write(`ctgate: configuration error: ${e.message}\n`);
      return 78;
    }
    if (e instanceof RedisPersistenceError) {
      process.stderr.write(`ctgate: refusing to start: ${e.message}\n`);
      return 78;
    }
    throw e;
  }
}
