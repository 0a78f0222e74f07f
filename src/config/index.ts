import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';

/** Raised when configuration is invalid; the message names the offending key. */
export class ConfigError extends Error {
  constructor(
    readonly key: string,
    readonly expected: string,
    readonly got: unknown,
  ) {
    super(`${key}: expected ${expected}, got ${JSON.stringify(got)}`);
    this.name = 'ConfigError';
  }
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface MllpConfig {
  host: string;
  port: number;
  maxMessageBytes: number;
  idleTimeoutMs: number;
  maxConnections: number;
  /** Sender addresses or CIDR blocks allowed to connect; empty means any. */
  allowIps: string[];
  tlsCertFile?: string;
  tlsKeyFile?: string;
  tlsCaFile?: string;
  tlsRequireClientCert: boolean;
}

export interface Config {
  redisUrl: string;
  redisPrefix: string;
  queueName: string;
  mllp: MllpConfig;
  httpHost: string;
  httpPort: number;
  apiToken?: string;
  mappingsFile: string;
  /** Name ctgate uses for itself in MSH-3/MSH-4 of the ACKs it writes. */
  appName: string;
  facilityName: string;
  /** How long a processed message's control id is remembered for resend detection. */
  dedupeTtlDays: number;
  /** How long dead-lettered and ignored messages are kept. */
  messageRetentionDays: number;
  redisTimeoutMs: number;
  /** Gateway processes sharing the MLLP and HTTP ports (node:cluster); 1 runs in-process. */
  processes: number;
  logLevel: LogLevel;
  /** Off by default: logs carry no patient data unless an operator asks for it. */
  logPhi: boolean;
}

type Source = Record<string, unknown>;

interface Field<T> {
  env: string;
  file: string;
  parse: (raw: unknown, key: string) => T;
  default?: T;
}

const str = (raw: unknown, key: string): string => {
  if (typeof raw !== 'string' && typeof raw !== 'number') throw new ConfigError(key, 'a string', raw);
  const s = String(raw).trim();
  if (s === '') throw new ConfigError(key, 'a non-empty string', raw);
  return s;
};

const int =
  (min: number, max: number) =>
  (raw: unknown, key: string): number => {
    const n = typeof raw === 'number' ? raw : /^-?\d+$/.test(String(raw).trim()) ? Number(raw) : Number.NaN;
    if (!Number.isInteger(n) || n < min || n > max) throw new ConfigError(key, `an integer ${min}..${max}`, raw);
    return n;
  };

const bool = (raw: unknown, key: string): boolean => {
  if (typeof raw === 'boolean') return raw;
  const s = String(raw).trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(s)) return true;
  if (['0', 'false', 'no', 'off'].includes(s)) return false;
  throw new ConfigError(key, 'true or false', raw);
};

const redisUrl = (raw: unknown, key: string): string => {
  const s = str(raw, key);
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new ConfigError(key, 'a URL like redis://host:6379', raw);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new ConfigError(key, 'a redis:// or rediss:// URL', raw);
  return s;
};

const ipList = (raw: unknown, key: string): string[] => {
  const items = Array.isArray(raw) ? raw.map(String) : String(raw).split(',');
  const out = items.map((s) => s.trim()).filter((s) => s !== '');
  for (const item of out) {
    if (!/^[0-9a-fA-F:.]+(\/\d{1,3})?$/.test(item)) throw new ConfigError(key, 'IP addresses or CIDR blocks, comma separated', item);
  }
  return out;
};

const token = (raw: unknown, key: string): string => {
  const s = str(raw, key);
  if (s.length < 16) throw new ConfigError(key, 'a token of at least 16 characters', `<${s.length} characters>`);
  return s;
};

const oneOf =
  <T extends string>(values: readonly T[]) =>
  (raw: unknown, key: string): T => {
    const s = String(raw).trim().toLowerCase();
    if (!(values as readonly string[]).includes(s)) throw new ConfigError(key, `one of ${values.join(', ')}`, raw);
    return s as T;
  };

const fields = {
  redisUrl: { env: 'CTGATE_REDIS_URL', file: 'redisUrl', parse: redisUrl, default: 'redis://127.0.0.1:6379' },
  redisPrefix: { env: 'CTGATE_REDIS_PREFIX', file: 'redisPrefix', parse: str, default: 'ctgate' },
  queueName: { env: 'CTGATE_QUEUE_NAME', file: 'queueName', parse: str, default: 'screening' },
  mllpHost: { env: 'CTGATE_MLLP_HOST', file: 'mllpHost', parse: str, default: '127.0.0.1' },
  mllpPort: { env: 'CTGATE_MLLP_PORT', file: 'mllpPort', parse: int(0, 65535), default: 2575 },
  mllpMaxMessageBytes: { env: 'CTGATE_MLLP_MAX_MESSAGE_BYTES', file: 'mllpMaxMessageBytes', parse: int(1024, 256 * 1024 * 1024), default: 4 * 1024 * 1024 },
  mllpIdleTimeoutMs: { env: 'CTGATE_MLLP_IDLE_TIMEOUT_MS', file: 'mllpIdleTimeoutMs', parse: int(100, 24 * 3600 * 1000), default: 600_000 },
  mllpMaxConnections: { env: 'CTGATE_MLLP_MAX_CONNECTIONS', file: 'mllpMaxConnections', parse: int(1, 100_000), default: 200 },
  mllpAllowIps: { env: 'CTGATE_MLLP_ALLOW_IPS', file: 'mllpAllowIps', parse: ipList, default: [] as string[] },
  mllpTlsCertFile: { env: 'CTGATE_MLLP_TLS_CERT_FILE', file: 'mllpTlsCertFile', parse: str },
  mllpTlsKeyFile: { env: 'CTGATE_MLLP_TLS_KEY_FILE', file: 'mllpTlsKeyFile', parse: str },
  mllpTlsCaFile: { env: 'CTGATE_MLLP_TLS_CA_FILE', file: 'mllpTlsCaFile', parse: str },
  mllpTlsRequireClientCert: { env: 'CTGATE_MLLP_TLS_REQUIRE_CLIENT_CERT', file: 'mllpTlsRequireClientCert', parse: bool, default: false },
  httpHost: { env: 'CTGATE_HTTP_HOST', file: 'httpHost', parse: str, default: '127.0.0.1' },
  httpPort: { env: 'CTGATE_HTTP_PORT', file: 'httpPort', parse: int(0, 65535), default: 8080 },
  apiToken: { env: 'CTGATE_API_TOKEN', file: 'apiToken', parse: token },
  mappingsFile: { env: 'CTGATE_MAPPINGS_FILE', file: 'mappingsFile', parse: str, default: 'mappings/orders.yaml' },
  appName: { env: 'CTGATE_APP_NAME', file: 'appName', parse: str, default: 'CTGATE' },
  facilityName: { env: 'CTGATE_FACILITY_NAME', file: 'facilityName', parse: str, default: 'CTGATE' },
  dedupeTtlDays: { env: 'CTGATE_DEDUPE_TTL_DAYS', file: 'dedupeTtlDays', parse: int(1, 3650), default: 30 },
  messageRetentionDays: { env: 'CTGATE_MESSAGE_RETENTION_DAYS', file: 'messageRetentionDays', parse: int(1, 3650), default: 90 },
  redisTimeoutMs: { env: 'CTGATE_REDIS_TIMEOUT_MS', file: 'redisTimeoutMs', parse: int(50, 60_000), default: 2000 },
  processes: { env: 'CTGATE_PROCESSES', file: 'processes', parse: int(1, 64), default: 1 },
  logLevel: { env: 'CTGATE_LOG_LEVEL', file: 'logLevel', parse: oneOf(['debug', 'info', 'warn', 'error'] as const), default: 'info' as LogLevel },
  logPhi: { env: 'CTGATE_LOG_PHI', file: 'logPhi', parse: bool, default: false },
} satisfies Record<string, Field<unknown>>;

type Fields = typeof fields;
type Values = { [K in keyof Fields]: Fields[K] extends { default: infer D } ? D : ReturnType<Fields[K]['parse']> | undefined };

/** Names of every environment variable ctgate reads, for docs and `ctgate config`. */
export const configKeys = Object.values(fields).map((f) => f.env);

function readFile(path: string): Source {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError('CTGATE_CONFIG_FILE', 'a readable YAML or JSON file', `${path} (${(e as Error).message})`);
  }
  const doc: unknown = parseYaml(text);
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError('CTGATE_CONFIG_FILE', 'a mapping of keys to values', path);
  const known = new Set(Object.values(fields).map((f) => f.file));
  for (const k of Object.keys(doc)) {
    if (!known.has(k)) throw new ConfigError(`${path}: ${k}`, `one of ${[...known].join(', ')}`, k);
  }
  return doc as Source;
}

/**
 * Builds the configuration from an optional file (CTGATE_CONFIG_FILE) overlaid by environment variables.
 * Throws ConfigError naming the first bad key.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const file = env.CTGATE_CONFIG_FILE ? readFile(env.CTGATE_CONFIG_FILE) : {};
  const v = {} as Record<string, unknown>;
  for (const [name, f] of Object.entries(fields) as [string, Field<unknown>][]) {
    const fromEnv = env[f.env];
    if (fromEnv !== undefined && fromEnv !== '') v[name] = f.parse(fromEnv, f.env);
    else if (file[f.file] !== undefined) v[name] = f.parse(file[f.file], f.file);
    else v[name] = f.default;
  }
  const x = v as Values;
  const tlsGiven = [x.mllpTlsCertFile, x.mllpTlsKeyFile].filter((s) => s !== undefined).length;
  if (tlsGiven === 1) {
    const missing = x.mllpTlsCertFile ? 'CTGATE_MLLP_TLS_KEY_FILE' : 'CTGATE_MLLP_TLS_CERT_FILE';
    throw new ConfigError(missing, 'a path (TLS needs both a certificate and a key)', undefined);
  }
  if (x.mllpTlsRequireClientCert && !x.mllpTlsCaFile) {
    throw new ConfigError('CTGATE_MLLP_TLS_CA_FILE', 'a CA file when CTGATE_MLLP_TLS_REQUIRE_CLIENT_CERT is on', undefined);
  }
  return {
    redisUrl: x.redisUrl,
    redisPrefix: x.redisPrefix,
    queueName: x.queueName,
    mllp: {
      host: x.mllpHost,
      port: x.mllpPort,
      maxMessageBytes: x.mllpMaxMessageBytes,
      idleTimeoutMs: x.mllpIdleTimeoutMs,
      maxConnections: x.mllpMaxConnections,
      allowIps: x.mllpAllowIps,
      tlsCertFile: x.mllpTlsCertFile,
      tlsKeyFile: x.mllpTlsKeyFile,
      tlsCaFile: x.mllpTlsCaFile,
      tlsRequireClientCert: x.mllpTlsRequireClientCert,
    },
    httpHost: x.httpHost,
    httpPort: x.httpPort,
    apiToken: x.apiToken,
    mappingsFile: x.mappingsFile,
    appName: x.appName,
    facilityName: x.facilityName,
    dedupeTtlDays: x.dedupeTtlDays,
    messageRetentionDays: x.messageRetentionDays,
    redisTimeoutMs: x.redisTimeoutMs,
    processes: x.processes,
    logLevel: x.logLevel,
    logPhi: x.logPhi,
  };
}

/** The HTTP API must never run open: `serve` calls this before listening. */
export function requireApiToken(config: Config): string {
  if (!config.apiToken) throw new ConfigError('CTGATE_API_TOKEN', 'a token of at least 16 characters (HTTP API auth)', undefined);
  return config.apiToken;
}
