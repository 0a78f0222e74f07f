/**
 * `ctgate dicom receive [--port P] [--host H] [--ae AE] [--callers LIST] [--dir D]`: runs the DIMSE receiver (C-ECHO,
 * C-STORE through DCMTK's storescp) in the foreground until SIGTERM/SIGINT. Flags override the CTGATE_DIMSE_* keys.
 * Prints one JSON line {ready, port, aeTitle, dir} once listening; logs go to stderr.
 *
 * `ctgate dicom receive --list [--dir D]`: prints the studies in the receive folder as JSON (no PHI: UIDs, accession,
 * series and counts) and exits.
 */
import { parseArgs } from 'node:util';
import { ConfigError, type DimseReceiveConfig, loadConfig } from '../config/index.js';
import { openStudyIndex, startDimseReceiver } from '../dimse-receive/receiver.js';
import { createLogger } from '../observability/log.js';

const USAGE = 'usage: ctgate dicom receive [--port P] [--host H] [--ae AE] [--callers LIST] [--dir D] | --list [--dir D]';

export async function dicomReceiveCommand(args: string[]): Promise<number> {
  let values: { port?: string; host?: string; ae?: string; callers?: string; dir?: string; list?: boolean };
  try {
    values = parseArgs({
      args,
      options: {
        port: { type: 'string' },
        host: { type: 'string' },
        ae: { type: 'string' },
        callers: { type: 'string' },
        dir: { type: 'string' },
        list: { type: 'boolean', default: false },
      },
    }).values;
  } catch (e) {
    process.stderr.write(`ctgate dicom receive: ${(e as Error).message}\n${USAGE}\n`);
    return 1;
  }
  // Flags are applied as the keys they stand for, so they get the same checks and messages.
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (values.port !== undefined) env.CTGATE_DIMSE_LISTEN_PORT = values.port;
  if (values.host !== undefined) env.CTGATE_DIMSE_LISTEN_HOST = values.host;
  if (values.ae !== undefined) env.CTGATE_DIMSE_AE_TITLE = values.ae;
  if (values.callers !== undefined) env.CTGATE_DIMSE_ALLOWED_CALLERS = values.callers;
  if (values.dir !== undefined) env.CTGATE_DIMSE_RECEIVE_DIR = values.dir;
  if (values.list) {
    // Listing needs only the folder; a port is not required.
    env.CTGATE_DIMSE_LISTEN_PORT ??= '0';
    env.CTGATE_DIMSE_ALLOWED_CALLERS ??= '*';
  }
  const config = loadConfig(env);
  const log = createLogger(config.logLevel, config.logPhi);
  const rc = config.dimseReceive as DimseReceiveConfig | undefined;
  if (!rc) throw new ConfigError('CTGATE_DIMSE_LISTEN_PORT', 'a port (or --port) for ctgate dicom receive', undefined);
  if (values.list) {
    const index = await openStudyIndex(rc, log);
    const studies = index.list().map(({ patient: _patient, ...s }) => s);
    process.stdout.write(`${JSON.stringify({ studies }, null, 2)}\n`);
    return 0;
  }
  let receiver: Awaited<ReturnType<typeof startDimseReceiver>>;
  try {
    receiver = await startDimseReceiver(rc, log);
  } catch (e) {
    process.stderr.write(`ctgate dicom receive: ${(e as Error).message}\n`);
    return 1;
  }
  process.stdout.write(`${JSON.stringify({ ready: true, port: receiver.port, aeTitle: rc.aeTitle, dir: rc.dir })}\n`);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('dimse.stopping', { signal });
    await receiver.stop();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  return new Promise<number>(() => {});
}
