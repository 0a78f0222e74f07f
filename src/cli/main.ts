import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ConfigError, configKeys, loadConfig } from '../config/index.js';
import { createLogger } from '../observability/log.js';
import { loadMappings, MappingsError } from '../orders/mappings.js';
import { runDemo } from './demo.js';
import { startGateway } from './gateway.js';
import { checkMessage } from './hl7-check.js';

const USAGE = `usage:
  ctgate serve                      start the gateway (MLLP order intake + HTTP API)
  ctgate hl7 check FILE [--mappings F]
                                    dry run: the order a message yields, or why it is rejected
                                    (exit 0: yields an order; 2: would be NAKed)
  ctgate demo [--keep]              send sample orders through a gateway and show ACKs and jobs
  ctgate config keys                list the environment variables ctgate reads`;

async function serve(): Promise<number> {
  const config = loadConfig();
  const log = createLogger(config.logLevel, config.logPhi);
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
    if (cmd === 'demo') return await runDemo(argv.slice(1));
    if (cmd === 'hl7' && sub === 'check') return hl7Check(rest);
    if (cmd === 'config' && sub === 'keys') {
      process.stdout.write(`${configKeys.join('\n')}\n`);
      return 0;
    }
    process.stderr.write(`${USAGE}\n`);
    return cmd === undefined || cmd === 'help' || cmd === '--help' ? 0 : 1;
  } catch (e) {
    if (e instanceof ConfigError || e instanceof MappingsError) {
      process.stderr.write(`ctgate: configuration error: ${e.message}\n`);
      return 78;
    }
    throw e;
  }
}
