import type { LogLevel } from '../config/index.js';

const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(event: string, fields?: Record<string, unknown>): void;
  info(event: string, fields?: Record<string, unknown>): void;
  warn(event: string, fields?: Record<string, unknown>): void;
  error(event: string, fields?: Record<string, unknown>): void;
}

/**
 * JSON-lines logger to stderr. Callers pass only non-PHI fields (ids that are hashes, codes, counts);
 * PHI-bearing fields go under `phi` and are dropped unless logPhi is on.
 */
export function createLogger(level: LogLevel = 'info', logPhi = false, out: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): Logger {
  const emit = (lvl: LogLevel, event: string, fields: Record<string, unknown> = {}) => {
    if (rank[lvl] < rank[level]) return;
    const { phi, ...rest } = fields;
    const rec: Record<string, unknown> = { time: new Date().toISOString(), level: lvl, event, ...rest };
    if (logPhi && phi !== undefined) rec.phi = phi;
    out(JSON.stringify(rec));
  };
  return {
    debug: (e, f) => emit('debug', e, f),
    info: (e, f) => emit('info', e, f),
    warn: (e, f) => emit('warn', e, f),
    error: (e, f) => emit('error', e, f),
  };
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
