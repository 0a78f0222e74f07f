import type { LogLevel } from '../config/index.js';

const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(event: string, fields?: Record<string, unknown>): void;
  info(event: string, fields?: Record<string, unknown>): void;
  warn(event: string, fields?: Record<string, unknown>): void;
  error(event: string, fields?: Record<string, unknown>): void;
}

/**
 * Lines for stderr, written together: the lines logged in one turn of the event loop's microtask queue (the
 * intake logs one per message, and messages confirmed by one Redis round trip finish in the same turn) go out
 * in one write instead of one write each: at the end of that turn, so an intake line follows its message's ACK
 * by microseconds rather than preceding it. What is still buffered when the process exits is written then.
 */
let pending = '';
let exitHook = false;

function flushStderr(): void {
  if (pending === '') return;
  const out = pending;
  pending = '';
  process.stderr.write(out);
}

function stderrLine(line: string): void {
  if (pending === '') {
    process.nextTick(flushStderr);
    if (!exitHook) {
      exitHook = true;
      process.on('exit', flushStderr);
    }
  }
  pending += `${line}\n`;
  if (pending.length >= 64 * 1024) flushStderr();
}

/** The record { time, level, event, ...fields } (phi only when logPhi) as one JSON line. */
function formatLine(lvl: LogLevel, event: string, fields: Record<string, unknown>, logPhi: boolean): string {
  if ('phi' in fields || 'time' in fields || 'level' in fields || 'event' in fields) {
    const { phi, ...rest } = fields;
    const rec: Record<string, unknown> = { time: new Date().toISOString(), level: lvl, event, ...rest };
    if (logPhi && phi !== undefined) rec.phi = phi;
    return JSON.stringify(rec);
  }
  // No field clashes with the head: the fields' own JSON, spliced after it, is the record's.
  const head = `{"time":"${new Date().toISOString()}","level":"${lvl}","event":${JSON.stringify(event)}`;
  const body = JSON.stringify(fields);
  return body.length > 2 ? `${head},${body.slice(1)}` : `${head}}`;
}

/**
 * JSON-lines logger to stderr. Callers pass only non-PHI fields (ids that are hashes, codes, counts);
 * PHI-bearing fields go under `phi` and are dropped unless logPhi is on.
 */
export function createLogger(level: LogLevel = 'info', logPhi = false, out: (line: string) => void = stderrLine): Logger {
  const emit = (lvl: LogLevel, event: string, fields: Record<string, unknown> = {}) => {
    if (rank[lvl] < rank[level]) return;
    out(formatLine(lvl, event, fields, logPhi));
  };
  return {
    debug: (e, f) => emit('debug', e, f),
    info: (e, f) => emit('info', e, f),
    warn: (e, f) => emit('warn', e, f),
    error: (e, f) => emit('error', e, f),
  };
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
