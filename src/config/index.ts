import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { parse as parseYaml } from 'yaml';

/** Raised when configuration is invalid; the message names the offending key. */
import { type NamedToken, type Permission, PermissionSyntaxError, parseNamedTokens, parsePermissions } from './permissions.js';

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

/** Where and how ctgate delivers ORU^R01 results (absent when CTGATE_ORU_HOST is not set). */
export interface OruConfig {
  host: string;
  port: number;
  tls: boolean;
  tlsCaFile?: string;
  tlsCertFile?: string;
  tlsKeyFile?: string;
  /** TLS server name (SNI and certificate check) when it differs from host. */
  tlsServername?: string;
  connectTimeoutMs: number;
  ackTimeoutMs: number;
  /** Further attempts after the first one fails for a retryable reason. */
  retries: number;
  backoffMs: number;
  backoffMaxMs: number;
  /** A send the worker died in (no outcome recorded): 'hold' records deliveryUnknown, 'resend' sends again, same MSH-10. */
  unconfirmed: 'hold' | 'resend';
  /** MSH-3/MSH-4 of the ORU (default: appName/facilityName). */
  sendingApplication: string;
  sendingFacility: string;
  /** MSH-5/MSH-6 (default: the order's sending application/facility). */
  receivingApplication?: string;
  receivingFacility?: string;
}

export type FhirAuthMode = 'none' | 'basic' | 'bearer' | 'smart-backend';

export type FhirAuthConfig =
  | { mode: 'none' }
  | { mode: 'basic'; username: string; password: string }
  | { mode: 'bearer'; token: string }
  | { mode: 'smart-backend'; tokenUrl: string; clientId: string; privateKeyFile: string; keyId?: string; scope: string };

export interface FhirConfig {
  baseUrl: string;
  auth: FhirAuthConfig;
  timeoutMs: number;
  /** Further tries after a 5xx, 429 or network error, with exponential backoff from retryBaseMs. */
  retries: number;
  retryBaseMs: number;
}

export type PacsAuthConfig = { kind: 'none' } | { kind: 'basic'; user: string; password: string } | { kind: 'bearer'; token: string };

/** The PACS ctgate reads studies from and writes SEGs to (DICOMweb); absent when CTGATE_PACS_URL is not set. */
export interface PacsConfig {
  url: string;
  auth: PacsAuthConfig;
  timeoutMs: number;
  /** Largest STOW-RS body the /dicom-web proxy passes on (bytes); default 2 GiB. */
  proxyMaxStowBytes?: number;
}

/** How the write-seg stage's objects reach the PACS: STOW-RS, C-STORE (DIMSE, with DCMTK's storescu) or both. */
export interface ResultsConfig {
  transport: 'stow' | 'dimse' | 'both';
  /** The C-STORE destination; present unless the transport is stow. */
  dimse?: { host: string; port: number; calledAe: string; callingAe: string; timeoutS: number; tls?: { caFile: string; certFile?: string; keyFile?: string } };
}

/** What a worker (`ctgate worker`) needs besides the PACS. */
export interface WorkerConfig {
  seriesRulesFile: string;
  modelsManifest: string;
  /** onnxruntime intra-op threads; 0 = its default (one per core). */
  modelThreads: number;
  modelProviders: ('cuda' | 'cpu')[];
  concurrency: number;
  /** BullMQ lock on a running job (renewed every quarter of it); a worker silent this long is presumed dead. */
  lockMs: number;
  /** How often workers look for jobs whose lock expired (a killed worker's) and put them back in the queue. */
  stalledIntervalMs: number;
  study: { pollMs: number; stableMs: number; checkMs: number; sleepMs: number; deadlineMinutes: number };
  stageTimeoutMs: number;
  stageAttempts: number;
  stageBackoffMs: number;
  stageBackoffMaxMs: number;
  retrieveConcurrency: number;
  /** Share the analysis of an unchanged series across orders with the same model versions (jobs/analysis-reuse.ts). */
  analysisReuse: boolean;
  /** Where jobs find and read the order's study (src/study-sources). */
  studySource: StudySourceConfig;
}

/**
 * CTGATE_STUDY_SOURCE: dicomweb (default) — the PACS over QIDO-RS/WADO-RS (CTGATE_PACS_URL); received — the studies
 * pushed to ctgate's C-STORE receiver, read from its folder (CTGATE_DIMSE_RECEIVE_DIR, stable after
 * CTGATE_DIMSE_STABLE_S), which a worker may read without running the receiver itself; dimse — a PACS without
 * DICOMweb, over C-FIND and C-GET (CTGATE_PACS_DIMSE_HOST, _PORT, _CALLED_AE, _TIMEOUT_S).
 */
export type StudySourceConfig =
  | { kind: 'dicomweb' }
  | { kind: 'received'; dir: string; stableSeconds: number; retentionHours: number }
  /** A PACS without DICOMweb: C-FIND and C-GET (DCMTK findscu, getscu) as CTGATE_DICOM_AE_TITLE. */
  | {
      kind: 'dimse';
      pacs: { host: string; port: number; calledAe: string; callingAe: string; timeoutS: number };
      /**
       * get: C-GET into a private temporary folder; move: C-MOVE to ctgate's own C-STORE receiver (AE title
       * `moveDestinationAe`), whose folder `receiveDir` the worker then reads.
       */
      retrieve: 'get' | 'move';
      moveDestinationAe: string;
      receiveDir: string;
      stableSeconds: number;
      retentionHours: number;
    };

/**
 * Bearer access tokens (JWTs) from the hospital's single sign-on (Keycloak, Entra ID, Okta), accepted beside the
 * API token; absent when CTGATE_OIDC_ISSUER is not set.
 */
export interface OidcConfig {
  /** The `iss` every token must carry, exactly as the identity provider writes it. */
  issuer: string;
  /** A value the token's `aud` (string or array) must contain. */
  audience: string;
  /** Where the signing keys are; absent: the jwks_uri of `${issuer}/.well-known/openid-configuration`. */
  jwksUrl?: string;
  /** A role or group the token must carry (in `roles`, `groups` or `realm_access.roles`). */
  requiredRole?: string;
  /** Leeway for exp/nbf/iat against this host's clock. */
  clockSkewS: number;
}

export interface HttpServerConfig {
  /** The whole request, body included, must arrive within this (Node's requestTimeout). */
  requestTimeoutMs: number;
  /** The request's headers must arrive within this (Node's headersTimeout). */
  headersTimeoutMs: number;
  /** Open connections at most (Node's server.maxConnections); further ones are closed at once. */
  maxConnections: number;
}

export interface SessionConfig {
  /** Absolute lifetime of a session, seconds. */
  ttlSeconds: number;
  /** A session unused this long ends (seconds, at most ttlSeconds). */
  idleSeconds: number;
}

export interface AuthFailuresConfig {
  /** Failed logins, bearer tokens and session cookies allowed per client address within the window. */
  limit: number;
  windowSeconds: number;
}

/** Who may do what over HTTP (src/config/permissions.ts names the permissions). */
export interface AccessConfig {
  /** What CTGATE_API_TOKEN may do. */
  apiTokenPermissions: Permission[];
  /** Further named tokens (CTGATE_API_TOKENS, environment only), each with its own permissions. */
  tokens: NamedToken[];
  /** OIDC roles that add a permission to an accepted access token (which can always read results). */
  oidcRoles: Partial<Record<Permission, string>>;
  /** STOW-RS through the /dicom-web proxy at all (still only with pacs:write). Off by default. */
  proxyStow: boolean;
}

/**
 * Who may open a DIMSE association with ctgate's C-STORE receiver: a calling AE title, a sender address (IP or CIDR
 * block), or both. Absent parts match anything; `*` alone (both absent) lets anyone in.
 */
export interface DimseCaller {
  ae?: string;
  address?: string;
}

/** ctgate's C-STORE SCP (src/dimse-receive): absent when CTGATE_DIMSE_LISTEN_PORT is not set. */
export interface DimseReceiveConfig {
  host: string;
  /** 0 picks a free port (tests). */
  port: number;
  /** The Called AE title senders must use (default CTGATE_DICOM_AE_TITLE). */
  aeTitle: string;
  allowedCallers: DimseCaller[];
  /** Received studies (one folder per StudyInstanceUID) and quarantined files live here. */
  dir: string;
  /** A study's files are removed this long after its last instance arrived, and only when no job holds it. */
  retentionHours: number;
  /** A study is stable when no instance arrived for this long. */
  stableSeconds: number;
  /** ct: only CT Image Storage and Enhanced CT (other SOP classes get no presentation context); all: every storage SOP class. */
  accept: 'ct' | 'all';
  maxAssociations: number;
  /** DCMTK's socket, ACSE and DIMSE timeouts (seconds). */
  timeoutS: number;
  /**
   * DICOM TLS, terminated by ctgate's gate (storescp behind it speaks plain DIMSE over a private socket). With a CA
   * file, senders must present a certificate that CA signed.
   */
  tls?: { certFile: string; keyFile: string; caFile?: string };
}

export interface Config {
  access: AccessConfig;
  /** The DIMSE C-STORE receiver; absent when CTGATE_DIMSE_LISTEN_PORT is not set. */
  dimseReceive?: DimseReceiveConfig;
  pacs?: PacsConfig;
  /** Where and how the SEG, SR, KOS and key images go (STOW-RS by default). */
  results: ResultsConfig;
  /** ctgate's own AE title (Calling AE of its associations); default CTGATE. */
  dicomAeTitle: string;
  worker: WorkerConfig;
  /** Base URL people and viewers reach ctgate at (result page, DICOMweb proxy); default http://HTTP_HOST:HTTP_PORT. */
  publicUrl: string;
  redisUrl: string;
  redisPrefix: string;
  /**
   * `serve` refuses to start, and the intake NAKs orders, unless Redis persists every write (AOF on): otherwise
   * every acknowledged order vanishes when Redis restarts. Off only for tests and development.
   */
  redisRequireAof: boolean;
  queueName: string;
  mllp: MllpConfig;
  httpHost: string;
  httpPort: number;
  /** The HTTP server's limits: a request must arrive within these, and connections beyond the cap are refused. */
  httpServer: HttpServerConfig;
  /** Trust X-Forwarded-For / X-Forwarded-Proto (Koa app.proxy): only behind a reverse proxy that sets them. */
  trustProxy: boolean;
  /** The pages' sessions (server-side, in Redis). */
  sessions: SessionConfig;
  /** Failed authentications allowed per client address (429 beyond). */
  authFailures: AuthFailuresConfig;
  apiToken?: string;
  /** OIDC bearer tokens accepted beside apiToken; absent when CTGATE_OIDC_ISSUER is not set. */
  oidc?: OidcConfig;
  /** GET /metrics without the bearer token (for a scraper on a trusted network); off by default. */
  metricsOpen: boolean;
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
  /**
   * Off by default: a NAK's reason (MSA-3, ERR-8, the log line, the dead-letter entry) names the segment, field and
   * position of the problem but never quotes the message's text. On (for debugging a sender): it quotes the value too.
   */
  hl7ReasonValues: boolean;
  oru?: OruConfig;
  /** Where results go as FHIR; absent when CTGATE_FHIR_BASE_URL is not set (no FHIR output). */
  fhir?: FhirConfig;
  resultMappingsFile: string;
}

type Source = Record<string, unknown>;

interface Field<T> {
  env: string;
  file: string;
  parse: (raw: unknown, key: string) => T;
  default?: T;
  /** Secrets: read from the environment only, refused in the config file. */
  envOnly?: boolean;
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

const httpUrl = (raw: unknown, key: string): string => {
  const s = str(raw, key);
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new ConfigError(key, 'an http(s) URL', raw);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ConfigError(key, 'an http(s) URL', raw);
  return s.replace(/\/+$/, '');
};

/**
 * An https URL (plain http only for a loopback host: a local identity provider in a test or behind a sidecar).
 * Kept exactly as written (a trailing slash is part of an OIDC issuer).
 */
const secureUrl = (raw: unknown, key: string): string => {
  const s = str(raw, key);
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new ConfigError(key, 'an https URL', raw);
  }
  const loopback = u.hostname === 'localhost' || u.hostname === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(u.hostname);
  if (u.protocol !== 'https:' && !(u.protocol === 'http:' && loopback)) throw new ConfigError(key, 'an https URL (http only for a loopback host)', raw);
  if (u.search || u.hash || u.username || u.password) throw new ConfigError(key, 'an https URL without query, fragment or credentials', raw);
  return s;
};

/** Like str, but the error never echoes the value. */
const secret = (raw: unknown, key: string): string => {
  if ((typeof raw !== 'string' && typeof raw !== 'number') || String(raw) === '') throw new ConfigError(key, 'a non-empty value', '<hidden>');
  return String(raw);
};

const permissionList = (raw: unknown, key: string): Permission[] => {
  try {
    return parsePermissions(Array.isArray(raw) ? raw.map(String).join(',') : String(raw));
  } catch (e) {
    if (e instanceof PermissionSyntaxError) throw new ConfigError(key, `permissions from results:read, jobs:admin, pacs:write: ${e.message}`, raw);
    throw e;
  }
};

/** Never echoes the value: it holds tokens. */
const namedTokens = (raw: unknown, key: string): NamedToken[] => {
  try {
    return parseNamedTokens(String(raw));
  } catch (e) {
    if (e instanceof PermissionSyntaxError) throw new ConfigError(key, e.message, '<hidden>');
    throw e;
  }
};

const oneOf =
  <T extends string>(values: readonly T[]) =>
  (raw: unknown, key: string): T => {
    const s = String(raw).trim().toLowerCase();
    if (!(values as readonly string[]).includes(s)) throw new ConfigError(key, `one of ${values.join(', ')}`, raw);
    return s as T;
  };

/** A DICOM AE title: 1–16 characters, no backslash or control characters (PS3.5 VR AE). */
const aeTitle = (raw: unknown, key: string): string => {
  const s = str(raw, key);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the control characters are what is refused
  if (s.length > 16 || /[\\\u0000-\u001f\u007f-\uffff]/.test(s)) throw new ConfigError(key, 'an AE title of 1 to 16 ASCII characters, no backslash', raw);
  return s;
};

/** `AE`, `AE@ADDRESS`, `@ADDRESS` / `*@ADDRESS` (any AE from there) or `*` (anyone); ADDRESS an IP or a CIDR block. */
const callerList = (raw: unknown, key: string): DimseCaller[] => {
  const items = (Array.isArray(raw) ? raw.map(String) : String(raw).split(',')).map((s) => s.trim()).filter((s) => s !== '');
  const expected = 'calling AE titles and/or addresses, comma separated: AE, AE@10.0.0.5, @10.0.0.0/24 or *';
  if (items.length === 0) throw new ConfigError(key, expected, raw);
  return items.map((item) => {
    if (item === '*') return {};
    const at = item.lastIndexOf('@');
    const aePart = at < 0 ? item : item.slice(0, at);
    const addrPart = at < 0 ? undefined : item.slice(at + 1);
    const caller: DimseCaller = {};
    if (aePart !== '' && aePart !== '*') {
      // biome-ignore lint/suspicious/noControlCharactersInRegex: the control characters are what is refused
      if (aePart.length > 16 || /[\\\u0000-\u001f\u007f-\uffff]/.test(aePart)) throw new ConfigError(key, `${expected} (bad AE title)`, item);
      caller.ae = aePart;
    }
    if (addrPart !== undefined) {
      const [ip, bits, extra] = addrPart.split('/');
      const family = isIP(ip ?? '');
      const max = family === 6 ? 128 : 32;
      const bitsOk = bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= max);
      if (family === 0 || !bitsOk || extra !== undefined) throw new ConfigError(key, `${expected} (bad address)`, item);
      caller.address = addrPart;
    }
    return caller;
  });
};

const providerList = (raw: unknown, key: string): ('cuda' | 'cpu')[] => {
  const items = (Array.isArray(raw) ? raw.map(String) : String(raw).split(',')).map((p) => p.trim().toLowerCase()).filter((p) => p !== '');
  if (items.length === 0 || items.some((p) => p !== 'cuda' && p !== 'cpu'))
    throw new ConfigError(key, 'execution providers from cuda, cpu (comma separated)', raw);
  return items as ('cuda' | 'cpu')[];
};

const fields = {
  redisUrl: { env: 'CTGATE_REDIS_URL', file: 'redisUrl', parse: redisUrl, default: 'redis://127.0.0.1:6379' },
  redisPrefix: { env: 'CTGATE_REDIS_PREFIX', file: 'redisPrefix', parse: str, default: 'ctgate' },
  redisRequireAof: { env: 'CTGATE_REDIS_REQUIRE_AOF', file: 'redisRequireAof', parse: bool, default: true },
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
  oidcIssuer: { env: 'CTGATE_OIDC_ISSUER', file: 'oidcIssuer', parse: secureUrl },
  oidcAudience: { env: 'CTGATE_OIDC_AUDIENCE', file: 'oidcAudience', parse: str },
  oidcJwksUrl: { env: 'CTGATE_OIDC_JWKS_URL', file: 'oidcJwksUrl', parse: secureUrl },
  oidcRequiredRole: { env: 'CTGATE_OIDC_REQUIRED_ROLE', file: 'oidcRequiredRole', parse: str },
  oidcClockSkewS: { env: 'CTGATE_OIDC_CLOCK_SKEW_S', file: 'oidcClockSkewS', parse: int(0, 600), default: 60 },
  apiTokenPermissions: {
    env: 'CTGATE_API_TOKEN_PERMISSIONS',
    file: 'apiTokenPermissions',
    parse: permissionList,
    default: ['results:read', 'jobs:admin'] as Permission[],
  },
  apiTokens: { env: 'CTGATE_API_TOKENS', file: 'apiTokens', parse: namedTokens, envOnly: true, default: [] as NamedToken[] },
  oidcAdminRole: { env: 'CTGATE_OIDC_ADMIN_ROLE', file: 'oidcAdminRole', parse: str },
  oidcPacsWriteRole: { env: 'CTGATE_OIDC_PACS_WRITE_ROLE', file: 'oidcPacsWriteRole', parse: str },
  proxyStow: { env: 'CTGATE_PROXY_STOW', file: 'proxyStow', parse: bool, default: false },
  httpRequestTimeoutMs: { env: 'CTGATE_HTTP_REQUEST_TIMEOUT_MS', file: 'httpRequestTimeoutMs', parse: int(10_000, 24 * 3600_000), default: 1_800_000 },
  httpHeadersTimeoutMs: { env: 'CTGATE_HTTP_HEADERS_TIMEOUT_MS', file: 'httpHeadersTimeoutMs', parse: int(1000, 600_000), default: 20_000 },
  httpMaxConnections: { env: 'CTGATE_HTTP_MAX_CONNECTIONS', file: 'httpMaxConnections', parse: int(1, 1_000_000), default: 1024 },
  trustProxy: { env: 'CTGATE_TRUST_PROXY', file: 'trustProxy', parse: bool, default: false },
  sessionTtlS: { env: 'CTGATE_SESSION_TTL_S', file: 'sessionTtlS', parse: int(60, 7 * 86_400), default: 8 * 3600 },
  sessionIdleS: { env: 'CTGATE_SESSION_IDLE_S', file: 'sessionIdleS', parse: int(60, 7 * 86_400), default: 3600 },
  authFailLimit: { env: 'CTGATE_AUTH_FAIL_LIMIT', file: 'authFailLimit', parse: int(1, 1_000_000), default: 20 },
  authFailWindowS: { env: 'CTGATE_AUTH_FAIL_WINDOW_S', file: 'authFailWindowS', parse: int(1, 86_400), default: 300 },
  metricsOpen: { env: 'CTGATE_METRICS_OPEN', file: 'metricsOpen', parse: bool, default: false },
  mappingsFile: { env: 'CTGATE_MAPPINGS_FILE', file: 'mappingsFile', parse: str, default: 'mappings/orders.yaml' },
  appName: { env: 'CTGATE_APP_NAME', file: 'appName', parse: str, default: 'CTGATE' },
  facilityName: { env: 'CTGATE_FACILITY_NAME', file: 'facilityName', parse: str, default: 'CTGATE' },
  dedupeTtlDays: { env: 'CTGATE_DEDUPE_TTL_DAYS', file: 'dedupeTtlDays', parse: int(1, 3650), default: 30 },
  messageRetentionDays: { env: 'CTGATE_MESSAGE_RETENTION_DAYS', file: 'messageRetentionDays', parse: int(1, 3650), default: 90 },
  redisTimeoutMs: { env: 'CTGATE_REDIS_TIMEOUT_MS', file: 'redisTimeoutMs', parse: int(50, 60_000), default: 2000 },
  processes: { env: 'CTGATE_PROCESSES', file: 'processes', parse: int(1, 64), default: 1 },
  logLevel: { env: 'CTGATE_LOG_LEVEL', file: 'logLevel', parse: oneOf(['debug', 'info', 'warn', 'error'] as const), default: 'info' as LogLevel },
  logPhi: { env: 'CTGATE_LOG_PHI', file: 'logPhi', parse: bool, default: false },
  hl7ReasonValues: { env: 'CTGATE_HL7_REASON_VALUES', file: 'hl7ReasonValues', parse: bool, default: false },
  resultMappingsFile: { env: 'CTGATE_RESULT_MAPPINGS_FILE', file: 'resultMappingsFile', parse: str, default: 'mappings/results.yaml' },
  fhirBaseUrl: { env: 'CTGATE_FHIR_BASE_URL', file: 'fhirBaseUrl', parse: httpUrl },
  fhirAuth: {
    env: 'CTGATE_FHIR_AUTH',
    file: 'fhirAuth',
    parse: oneOf(['none', 'basic', 'bearer', 'smart-backend'] as const),
    default: 'none' as FhirAuthMode,
  },
  fhirUsername: { env: 'CTGATE_FHIR_USERNAME', file: 'fhirUsername', parse: str },
  fhirPassword: { env: 'CTGATE_FHIR_PASSWORD', file: 'fhirPassword', parse: secret, envOnly: true },
  fhirToken: { env: 'CTGATE_FHIR_TOKEN', file: 'fhirToken', parse: secret, envOnly: true },
  fhirSmartTokenUrl: { env: 'CTGATE_FHIR_SMART_TOKEN_URL', file: 'fhirSmartTokenUrl', parse: httpUrl },
  fhirSmartClientId: { env: 'CTGATE_FHIR_SMART_CLIENT_ID', file: 'fhirSmartClientId', parse: str },
  fhirSmartPrivateKeyFile: { env: 'CTGATE_FHIR_SMART_PRIVATE_KEY_FILE', file: 'fhirSmartPrivateKeyFile', parse: str },
  fhirSmartKeyId: { env: 'CTGATE_FHIR_SMART_KEY_ID', file: 'fhirSmartKeyId', parse: str },
  fhirSmartScope: { env: 'CTGATE_FHIR_SMART_SCOPE', file: 'fhirSmartScope', parse: str, default: 'system/*.write' },
  fhirTimeoutMs: { env: 'CTGATE_FHIR_TIMEOUT_MS', file: 'fhirTimeoutMs', parse: int(100, 600_000), default: 30_000 },
  fhirRetries: { env: 'CTGATE_FHIR_RETRIES', file: 'fhirRetries', parse: int(0, 20), default: 4 },
  fhirRetryBaseMs: { env: 'CTGATE_FHIR_RETRY_BASE_MS', file: 'fhirRetryBaseMs', parse: int(1, 600_000), default: 500 },
  oruHost: { env: 'CTGATE_ORU_HOST', file: 'oruHost', parse: str },
  oruPort: { env: 'CTGATE_ORU_PORT', file: 'oruPort', parse: int(1, 65535), default: 2575 },
  oruTls: { env: 'CTGATE_ORU_TLS', file: 'oruTls', parse: bool, default: false },
  oruTlsCaFile: { env: 'CTGATE_ORU_TLS_CA_FILE', file: 'oruTlsCaFile', parse: str },
  oruTlsCertFile: { env: 'CTGATE_ORU_TLS_CERT_FILE', file: 'oruTlsCertFile', parse: str },
  oruTlsKeyFile: { env: 'CTGATE_ORU_TLS_KEY_FILE', file: 'oruTlsKeyFile', parse: str },
  oruTlsServername: { env: 'CTGATE_ORU_TLS_SERVERNAME', file: 'oruTlsServername', parse: str },
  oruConnectTimeoutMs: { env: 'CTGATE_ORU_CONNECT_TIMEOUT_MS', file: 'oruConnectTimeoutMs', parse: int(100, 600_000), default: 5000 },
  oruAckTimeoutMs: { env: 'CTGATE_ORU_ACK_TIMEOUT_MS', file: 'oruAckTimeoutMs', parse: int(100, 3_600_000), default: 30_000 },
  oruRetries: { env: 'CTGATE_ORU_RETRIES', file: 'oruRetries', parse: int(0, 100), default: 5 },
  oruBackoffMs: { env: 'CTGATE_ORU_BACKOFF_MS', file: 'oruBackoffMs', parse: int(10, 3_600_000), default: 1000 },
  oruBackoffMaxMs: { env: 'CTGATE_ORU_BACKOFF_MAX_MS', file: 'oruBackoffMaxMs', parse: int(10, 3_600_000), default: 60_000 },
  oruUnconfirmed: { env: 'CTGATE_ORU_UNCONFIRMED', file: 'oruUnconfirmed', parse: oneOf(['hold', 'resend'] as const), default: 'hold' as 'hold' | 'resend' },
  oruSendingApplication: { env: 'CTGATE_ORU_SENDING_APPLICATION', file: 'oruSendingApplication', parse: str },
  oruSendingFacility: { env: 'CTGATE_ORU_SENDING_FACILITY', file: 'oruSendingFacility', parse: str },
  oruReceivingApplication: { env: 'CTGATE_ORU_RECEIVING_APPLICATION', file: 'oruReceivingApplication', parse: str },
  oruReceivingFacility: { env: 'CTGATE_ORU_RECEIVING_FACILITY', file: 'oruReceivingFacility', parse: str },
  pacsUrl: { env: 'CTGATE_PACS_URL', file: 'pacsUrl', parse: httpUrl },
  dicomAeTitle: { env: 'CTGATE_DICOM_AE_TITLE', file: 'dicomAeTitle', parse: aeTitle, default: 'CTGATE' },
  dimseListenPort: { env: 'CTGATE_DIMSE_LISTEN_PORT', file: 'dimseListenPort', parse: int(0, 65535) },
  dimseListenHost: { env: 'CTGATE_DIMSE_LISTEN_HOST', file: 'dimseListenHost', parse: str, default: '127.0.0.1' },
  dimseAeTitle: { env: 'CTGATE_DIMSE_AE_TITLE', file: 'dimseAeTitle', parse: aeTitle },
  dimseAllowedCallers: { env: 'CTGATE_DIMSE_ALLOWED_CALLERS', file: 'dimseAllowedCallers', parse: callerList },
  dimseReceiveDir: { env: 'CTGATE_DIMSE_RECEIVE_DIR', file: 'dimseReceiveDir', parse: str, default: '.data/dimse-receive' },
  dimseRetentionHours: { env: 'CTGATE_DIMSE_RETENTION_HOURS', file: 'dimseRetentionHours', parse: int(1, 24 * 3650), default: 72 },
  dimseStableS: { env: 'CTGATE_DIMSE_STABLE_S', file: 'dimseStableS', parse: int(1, 86_400), default: 30 },
  dimseAccept: { env: 'CTGATE_DIMSE_ACCEPT', file: 'dimseAccept', parse: oneOf(['ct', 'all'] as const), default: 'ct' as 'ct' | 'all' },
  dimseMaxAssociations: { env: 'CTGATE_DIMSE_MAX_ASSOCIATIONS', file: 'dimseMaxAssociations', parse: int(1, 1000), default: 16 },
  dimseTimeoutS: { env: 'CTGATE_DIMSE_TIMEOUT_S', file: 'dimseTimeoutS', parse: int(1, 3600), default: 60 },
  dimseTlsCertFile: { env: 'CTGATE_DIMSE_TLS_CERT_FILE', file: 'dimseTlsCertFile', parse: str },
  dimseTlsKeyFile: { env: 'CTGATE_DIMSE_TLS_KEY_FILE', file: 'dimseTlsKeyFile', parse: str },
  dimseTlsCaFile: { env: 'CTGATE_DIMSE_TLS_CA_FILE', file: 'dimseTlsCaFile', parse: str },
  resultsTransport: {
    env: 'CTGATE_RESULTS_TRANSPORT',
    file: 'resultsTransport',
    parse: oneOf(['stow', 'dimse', 'both'] as const),
    default: 'stow' as ResultsConfig['transport'],
  },
  resultsDimseHost: { env: 'CTGATE_RESULTS_DIMSE_HOST', file: 'resultsDimseHost', parse: str },
  resultsDimsePort: { env: 'CTGATE_RESULTS_DIMSE_PORT', file: 'resultsDimsePort', parse: int(1, 65535), default: 104 },
  resultsDimseCalledAe: { env: 'CTGATE_RESULTS_DIMSE_CALLED_AE', file: 'resultsDimseCalledAe', parse: aeTitle },
  resultsDimseTimeoutS: { env: 'CTGATE_RESULTS_DIMSE_TIMEOUT_S', file: 'resultsDimseTimeoutS', parse: int(1, 3600), default: 30 },
  resultsDimseTlsCaFile: { env: 'CTGATE_RESULTS_DIMSE_TLS_CA_FILE', file: 'resultsDimseTlsCaFile', parse: str },
  resultsDimseTlsCertFile: { env: 'CTGATE_RESULTS_DIMSE_TLS_CERT_FILE', file: 'resultsDimseTlsCertFile', parse: str },
  resultsDimseTlsKeyFile: { env: 'CTGATE_RESULTS_DIMSE_TLS_KEY_FILE', file: 'resultsDimseTlsKeyFile', parse: str },
  pacsUser: { env: 'CTGATE_PACS_USER', file: 'pacsUser', parse: str },
  pacsPassword: { env: 'CTGATE_PACS_PASSWORD', file: 'pacsPassword', parse: secret, envOnly: true },
  pacsToken: { env: 'CTGATE_PACS_TOKEN', file: 'pacsToken', parse: secret, envOnly: true },
  pacsTimeoutMs: { env: 'CTGATE_PACS_TIMEOUT_MS', file: 'pacsTimeoutMs', parse: int(100, 600_000), default: 30_000 },
  proxyMaxStowBytes: { env: 'CTGATE_PROXY_MAX_STOW_BYTES', file: 'proxyMaxStowBytes', parse: int(1, 2 ** 40), default: 2 * 2 ** 30 },
  publicUrl: { env: 'CTGATE_PUBLIC_URL', file: 'publicUrl', parse: httpUrl },
  seriesRulesFile: { env: 'CTGATE_SERIES_RULES_FILE', file: 'seriesRulesFile', parse: str, default: 'mappings/series.yaml' },
  modelsManifest: { env: 'CTGATE_MODELS_MANIFEST', file: 'modelsManifest', parse: str, default: 'models/manifest.json' },
  modelThreads: { env: 'CTGATE_MODEL_THREADS', file: 'modelThreads', parse: int(0, 256), default: 0 },
  modelProviders: { env: 'CTGATE_MODEL_PROVIDERS', file: 'modelProviders', parse: providerList, default: ['cpu'] as ('cuda' | 'cpu')[] },
  workerConcurrency: { env: 'CTGATE_WORKER_CONCURRENCY', file: 'workerConcurrency', parse: int(1, 64), default: 1 },
  workerLockMs: { env: 'CTGATE_WORKER_LOCK_MS', file: 'workerLockMs', parse: int(2000, 600_000), default: 8000 },
  workerStalledIntervalMs: { env: 'CTGATE_WORKER_STALLED_INTERVAL_MS', file: 'workerStalledIntervalMs', parse: int(500, 600_000), default: 3000 },
  studyPollMs: { env: 'CTGATE_STUDY_POLL_MS', file: 'studyPollMs', parse: int(100, 3_600_000), default: 2000 },
  studyStableMs: { env: 'CTGATE_STUDY_STABLE_MS', file: 'studyStableMs', parse: int(0, 3_600_000), default: 10_000 },
  studyCheckMs: { env: 'CTGATE_STUDY_CHECK_MS', file: 'studyCheckMs', parse: int(1000, 3_600_000), default: 60_000 },
  studySleepMs: { env: 'CTGATE_STUDY_SLEEP_MS', file: 'studySleepMs', parse: int(100, 86_400_000), default: 60_000 },
  studyDeadlineMinutes: { env: 'CTGATE_STUDY_DEADLINE_MINUTES', file: 'studyDeadlineMinutes', parse: int(1, 60 * 24 * 30), default: 24 * 60 },
  stageTimeoutMs: { env: 'CTGATE_STAGE_TIMEOUT_MS', file: 'stageTimeoutMs', parse: int(1000, 86_400_000), default: 600_000 },
  stageAttempts: { env: 'CTGATE_STAGE_ATTEMPTS', file: 'stageAttempts', parse: int(1, 100), default: 5 },
  stageBackoffMs: { env: 'CTGATE_STAGE_BACKOFF_MS', file: 'stageBackoffMs', parse: int(10, 86_400_000), default: 5000 },
  stageBackoffMaxMs: { env: 'CTGATE_STAGE_BACKOFF_MAX_MS', file: 'stageBackoffMaxMs', parse: int(10, 86_400_000), default: 300_000 },
  retrieveConcurrency: { env: 'CTGATE_RETRIEVE_CONCURRENCY', file: 'retrieveConcurrency', parse: int(1, 64), default: 4 },
  analysisReuse: { env: 'CTGATE_ANALYSIS_REUSE', file: 'analysisReuse', parse: bool, default: true },
  studySource: {
    env: 'CTGATE_STUDY_SOURCE',
    file: 'studySource',
    parse: oneOf(['dicomweb', 'received', 'dimse'] as const),
    default: 'dicomweb' as 'dicomweb' | 'received' | 'dimse',
  },
  pacsDimseHost: { env: 'CTGATE_PACS_DIMSE_HOST', file: 'pacsDimseHost', parse: str },
  pacsDimsePort: { env: 'CTGATE_PACS_DIMSE_PORT', file: 'pacsDimsePort', parse: int(1, 65535), default: 104 },
  pacsDimseCalledAe: { env: 'CTGATE_PACS_DIMSE_CALLED_AE', file: 'pacsDimseCalledAe', parse: aeTitle },
  pacsDimseTimeoutS: { env: 'CTGATE_PACS_DIMSE_TIMEOUT_S', file: 'pacsDimseTimeoutS', parse: int(1, 3600), default: 30 },
  pacsDimseRetrieve: { env: 'CTGATE_PACS_DIMSE_RETRIEVE', file: 'pacsDimseRetrieve', parse: oneOf(['get', 'move'] as const), default: 'get' as 'get' | 'move' },
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
  const known = new Set((Object.values(fields) as Field<unknown>[]).filter((f) => !f.envOnly).map((f) => f.file));
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
    else if (!f.envOnly && file[f.file] !== undefined) v[name] = f.parse(file[f.file], f.file);
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
    access: accessConfig(x),
    dimseReceive: dimseReceiveConfig(x),
    pacs: pacsConfig(x),
    results: resultsConfig(x),
    dicomAeTitle: x.dicomAeTitle,
    worker: {
      seriesRulesFile: x.seriesRulesFile,
      modelsManifest: x.modelsManifest,
      modelThreads: x.modelThreads,
      modelProviders: x.modelProviders,
      concurrency: x.workerConcurrency,
      lockMs: x.workerLockMs,
      stalledIntervalMs: x.workerStalledIntervalMs,
      study: { pollMs: x.studyPollMs, stableMs: x.studyStableMs, checkMs: x.studyCheckMs, sleepMs: x.studySleepMs, deadlineMinutes: x.studyDeadlineMinutes },
      stageTimeoutMs: x.stageTimeoutMs,
      stageAttempts: x.stageAttempts,
      stageBackoffMs: x.stageBackoffMs,
      stageBackoffMaxMs: x.stageBackoffMaxMs,
      retrieveConcurrency: x.retrieveConcurrency,
      analysisReuse: x.analysisReuse,
      studySource: studySourceConfig(x),
    },
    publicUrl: x.publicUrl ?? `http://${x.httpHost.includes(':') ? `[${x.httpHost}]` : x.httpHost}:${x.httpPort}`,
    fhir: fhirConfig(x),
    resultMappingsFile: x.resultMappingsFile,
    redisUrl: x.redisUrl,
    redisPrefix: x.redisPrefix,
    redisRequireAof: x.redisRequireAof,
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
    httpServer: httpServerConfig(x),
    trustProxy: x.trustProxy,
    sessions: sessionConfig(x),
    authFailures: { limit: x.authFailLimit, windowSeconds: x.authFailWindowS },
    apiToken: x.apiToken,
    oidc: oidcConfig(x),
    metricsOpen: x.metricsOpen,
    mappingsFile: x.mappingsFile,
    appName: x.appName,
    facilityName: x.facilityName,
    dedupeTtlDays: x.dedupeTtlDays,
    messageRetentionDays: x.messageRetentionDays,
    redisTimeoutMs: x.redisTimeoutMs,
    processes: x.processes,
    logLevel: x.logLevel,
    logPhi: x.logPhi,
    hl7ReasonValues: x.hl7ReasonValues,
    oru: oruConfig(x),
  };
}

function oruConfig(x: Values): OruConfig | undefined {
  const tlsFiles = { CTGATE_ORU_TLS_CA_FILE: x.oruTlsCaFile, CTGATE_ORU_TLS_CERT_FILE: x.oruTlsCertFile, CTGATE_ORU_TLS_KEY_FILE: x.oruTlsKeyFile };
  if (!x.oruTls) {
    // A certificate configured but TLS off would silently send results in clear text.
    const given = Object.entries(tlsFiles).find(([, v]) => v !== undefined);
    if (given) throw new ConfigError('CTGATE_ORU_TLS', `true when ${given[0]} is set`, false);
  }
  if ((x.oruTlsCertFile === undefined) !== (x.oruTlsKeyFile === undefined)) {
    const missing = x.oruTlsCertFile ? 'CTGATE_ORU_TLS_KEY_FILE' : 'CTGATE_ORU_TLS_CERT_FILE';
    throw new ConfigError(missing, 'a path (a client certificate needs both a certificate and a key)', undefined);
  }
  if (x.oruBackoffMaxMs < x.oruBackoffMs)
    throw new ConfigError('CTGATE_ORU_BACKOFF_MAX_MS', `at least CTGATE_ORU_BACKOFF_MS (${x.oruBackoffMs})`, x.oruBackoffMaxMs);
  if (!x.oruHost) return undefined;
  return {
    host: x.oruHost,
    port: x.oruPort,
    tls: x.oruTls,
    tlsCaFile: x.oruTlsCaFile,
    tlsCertFile: x.oruTlsCertFile,
    tlsKeyFile: x.oruTlsKeyFile,
    tlsServername: x.oruTlsServername,
    connectTimeoutMs: x.oruConnectTimeoutMs,
    ackTimeoutMs: x.oruAckTimeoutMs,
    retries: x.oruRetries,
    backoffMs: x.oruBackoffMs,
    backoffMaxMs: x.oruBackoffMaxMs,
    unconfirmed: x.oruUnconfirmed,
    sendingApplication: x.oruSendingApplication ?? x.appName,
    sendingFacility: x.oruSendingFacility ?? x.facilityName,
    receivingApplication: x.oruReceivingApplication,
    receivingFacility: x.oruReceivingFacility,
  };
}

function resultsConfig(x: Values): ResultsConfig {
  const given = (
    [
      ['CTGATE_RESULTS_DIMSE_HOST', x.resultsDimseHost],
      ['CTGATE_RESULTS_DIMSE_CALLED_AE', x.resultsDimseCalledAe],
      ['CTGATE_RESULTS_DIMSE_TLS_CA_FILE', x.resultsDimseTlsCaFile],
    ] as const
  ).find(([, v]) => v !== undefined);
  if (x.resultsTransport === 'stow') {
    // A destination configured but never used is a mistake worth stopping for.
    if (given) throw new ConfigError('CTGATE_RESULTS_TRANSPORT', `dimse or both when ${given[0]} is set`, x.resultsTransport);
    return { transport: 'stow' };
  }
  const why = `when CTGATE_RESULTS_TRANSPORT is ${x.resultsTransport}`;
  if ((x.resultsDimseTlsCertFile === undefined) !== (x.resultsDimseTlsKeyFile === undefined)) {
    const missing = x.resultsDimseTlsCertFile ? 'CTGATE_RESULTS_DIMSE_TLS_KEY_FILE' : 'CTGATE_RESULTS_DIMSE_TLS_CERT_FILE';
    throw new ConfigError(missing, 'a path (a client certificate needs both a certificate and a key)', undefined);
  }
  if (x.resultsDimseTlsCertFile && !x.resultsDimseTlsCaFile)
    throw new ConfigError('CTGATE_RESULTS_DIMSE_TLS_CA_FILE', 'a CA file when a TLS client certificate is set', undefined);
  const tls = x.resultsDimseTlsCaFile
    ? { caFile: x.resultsDimseTlsCaFile, ...(x.resultsDimseTlsCertFile ? { certFile: x.resultsDimseTlsCertFile, keyFile: x.resultsDimseTlsKeyFile } : {}) }
    : undefined;
  return {
    transport: x.resultsTransport,
    dimse: {
      host: need(x.resultsDimseHost, 'CTGATE_RESULTS_DIMSE_HOST', `the C-STORE destination's host ${why}`),
      port: x.resultsDimsePort,
      calledAe: need(x.resultsDimseCalledAe, 'CTGATE_RESULTS_DIMSE_CALLED_AE', `the C-STORE destination's AE title ${why}`),
      callingAe: x.dicomAeTitle,
      timeoutS: x.resultsDimseTimeoutS,
      ...(tls ? { tls } : {}),
    },
  };
}

function studySourceConfig(x: Values): StudySourceConfig {
  if (x.studySource !== 'dimse') {
    // A PACS DIMSE peer configured but not used would leave studies looked for over DICOMweb without a word.
    const given = (
      [
        ['CTGATE_PACS_DIMSE_HOST', x.pacsDimseHost],
        ['CTGATE_PACS_DIMSE_CALLED_AE', x.pacsDimseCalledAe],
        ['CTGATE_PACS_DIMSE_RETRIEVE', x.pacsDimseRetrieve === 'move' ? 'move' : undefined],
      ] as const
    ).find(([, v]) => v !== undefined);
    if (given) throw new ConfigError('CTGATE_STUDY_SOURCE', `dimse when ${given[0]} is set`, x.studySource);
  }
  if (x.studySource === 'dimse') {
    const why = 'when CTGATE_STUDY_SOURCE is dimse';
    return {
      kind: 'dimse',
      pacs: {
        host: need(x.pacsDimseHost, 'CTGATE_PACS_DIMSE_HOST', `the PACS host for C-FIND and C-GET ${why}`),
        port: x.pacsDimsePort,
        calledAe: need(x.pacsDimseCalledAe, 'CTGATE_PACS_DIMSE_CALLED_AE', `the PACS AE title ${why}`),
        callingAe: x.dicomAeTitle,
        timeoutS: x.pacsDimseTimeoutS,
      },
      retrieve: x.pacsDimseRetrieve,
      // The C-MOVE destination is ctgate's own receiver, under the AE title it answers to.
      moveDestinationAe: x.dimseAeTitle ?? x.dicomAeTitle,
      receiveDir: x.dimseReceiveDir,
      stableSeconds: x.dimseStableS,
      retentionHours: x.dimseRetentionHours,
    };
  }
  if (x.studySource === 'received') {
    return { kind: 'received', dir: x.dimseReceiveDir, stableSeconds: x.dimseStableS, retentionHours: x.dimseRetentionHours };
  }
  return { kind: 'dicomweb' };
}

function dimseReceiveConfig(x: Values): DimseReceiveConfig | undefined {
  if (x.dimseListenPort === undefined) {
    const given = (
      [
        ['CTGATE_DIMSE_AE_TITLE', x.dimseAeTitle],
        ['CTGATE_DIMSE_ALLOWED_CALLERS', x.dimseAllowedCallers],
        ['CTGATE_DIMSE_TLS_CERT_FILE', x.dimseTlsCertFile],
        ['CTGATE_DIMSE_TLS_CA_FILE', x.dimseTlsCaFile],
      ] as const
    ).find(([, v]) => v !== undefined);
    if (given) throw new ConfigError('CTGATE_DIMSE_LISTEN_PORT', `a port when ${given[0]} is set`, undefined);
    return undefined;
  }
  if ((x.dimseTlsCertFile === undefined) !== (x.dimseTlsKeyFile === undefined)) {
    const missing = x.dimseTlsCertFile ? 'CTGATE_DIMSE_TLS_KEY_FILE' : 'CTGATE_DIMSE_TLS_CERT_FILE';
    throw new ConfigError(missing, 'a path (TLS needs both a certificate and a key)', undefined);
  }
  if (x.dimseTlsCaFile && !x.dimseTlsCertFile) throw new ConfigError('CTGATE_DIMSE_TLS_CERT_FILE', 'a path when CTGATE_DIMSE_TLS_CA_FILE is set', undefined);
  const tls =
    x.dimseTlsCertFile && x.dimseTlsKeyFile
      ? { certFile: x.dimseTlsCertFile, keyFile: x.dimseTlsKeyFile, ...(x.dimseTlsCaFile ? { caFile: x.dimseTlsCaFile } : {}) }
      : undefined;
  return {
    host: x.dimseListenHost,
    port: x.dimseListenPort,
    aeTitle: x.dimseAeTitle ?? x.dicomAeTitle,
    // No silent default: who may send images is a decision (`*` lets anyone in).
    allowedCallers: need(
      x.dimseAllowedCallers,
      'CTGATE_DIMSE_ALLOWED_CALLERS',
      'the calling AE titles and/or addresses allowed to send (or *) when CTGATE_DIMSE_LISTEN_PORT is set',
    ),
    dir: x.dimseReceiveDir,
    retentionHours: x.dimseRetentionHours,
    stableSeconds: x.dimseStableS,
    accept: x.dimseAccept,
    maxAssociations: x.dimseMaxAssociations,
    timeoutS: x.dimseTimeoutS,
    ...(tls ? { tls } : {}),
  };
}

function pacsConfig(x: Values): PacsConfig | undefined {
  if (x.pacsPassword !== undefined && x.pacsUser === undefined)
    throw new ConfigError('CTGATE_PACS_USER', 'a user name when CTGATE_PACS_PASSWORD is set', undefined);
  if (x.pacsUser !== undefined && x.pacsPassword === undefined)
    throw new ConfigError('CTGATE_PACS_PASSWORD', 'a password (environment only) when CTGATE_PACS_USER is set', undefined);
  if (x.pacsToken !== undefined && x.pacsUser !== undefined)
    throw new ConfigError('CTGATE_PACS_TOKEN', 'unset when CTGATE_PACS_USER is set (one kind of PACS auth)', '<hidden>');
  if (x.stageBackoffMaxMs < x.stageBackoffMs)
    throw new ConfigError('CTGATE_STAGE_BACKOFF_MAX_MS', `at least CTGATE_STAGE_BACKOFF_MS (${x.stageBackoffMs})`, x.stageBackoffMaxMs);
  if (!x.pacsUrl) return undefined;
  const auth: PacsAuthConfig =
    x.pacsUser !== undefined
      ? { kind: 'basic', user: x.pacsUser, password: x.pacsPassword as string }
      : x.pacsToken !== undefined
        ? { kind: 'bearer', token: x.pacsToken }
        : { kind: 'none' };
  return { url: x.pacsUrl, auth, timeoutMs: x.pacsTimeoutMs, proxyMaxStowBytes: x.proxyMaxStowBytes };
}

function accessConfig(x: Values): AccessConfig {
  const names = new Set(x.apiTokens.map((t) => t.token));
  if (x.apiToken !== undefined && names.has(x.apiToken)) throw new ConfigError('CTGATE_API_TOKENS', 'tokens that differ from CTGATE_API_TOKEN', '<hidden>');
  if (names.size !== x.apiTokens.length) throw new ConfigError('CTGATE_API_TOKENS', 'a different token for every name', '<hidden>');
  const oidcRoles: Partial<Record<Permission, string>> = {};
  if (x.oidcAdminRole) oidcRoles['jobs:admin'] = x.oidcAdminRole;
  if (x.oidcPacsWriteRole) oidcRoles['pacs:write'] = x.oidcPacsWriteRole;
  return { apiTokenPermissions: x.apiTokenPermissions, tokens: x.apiTokens, oidcRoles, proxyStow: x.proxyStow };
}

function httpServerConfig(x: Values): HttpServerConfig {
  if (x.httpHeadersTimeoutMs > x.httpRequestTimeoutMs)
    throw new ConfigError('CTGATE_HTTP_HEADERS_TIMEOUT_MS', `at most CTGATE_HTTP_REQUEST_TIMEOUT_MS (${x.httpRequestTimeoutMs})`, x.httpHeadersTimeoutMs);
  return { requestTimeoutMs: x.httpRequestTimeoutMs, headersTimeoutMs: x.httpHeadersTimeoutMs, maxConnections: x.httpMaxConnections };
}

function sessionConfig(x: Values): SessionConfig {
  if (x.sessionIdleS > x.sessionTtlS) throw new ConfigError('CTGATE_SESSION_IDLE_S', `at most CTGATE_SESSION_TTL_S (${x.sessionTtlS})`, x.sessionIdleS);
  return { ttlSeconds: x.sessionTtlS, idleSeconds: x.sessionIdleS };
}

function oidcConfig(x: Values): OidcConfig | undefined {
  if (!x.oidcIssuer) {
    const given = (
      [
        ['CTGATE_OIDC_AUDIENCE', x.oidcAudience],
        ['CTGATE_OIDC_JWKS_URL', x.oidcJwksUrl],
        ['CTGATE_OIDC_REQUIRED_ROLE', x.oidcRequiredRole],
        ['CTGATE_OIDC_ADMIN_ROLE', x.oidcAdminRole],
        ['CTGATE_OIDC_PACS_WRITE_ROLE', x.oidcPacsWriteRole],
      ] as const
    ).find(([, v]) => v !== undefined);
    if (given) throw new ConfigError('CTGATE_OIDC_ISSUER', `the identity provider's issuer URL when ${given[0]} is set`, undefined);
    return undefined;
  }
  return {
    issuer: x.oidcIssuer,
    audience: need(x.oidcAudience, 'CTGATE_OIDC_AUDIENCE', 'the audience ctgate accepts (the client id or API identifier) when CTGATE_OIDC_ISSUER is set'),
    jwksUrl: x.oidcJwksUrl,
    requiredRole: x.oidcRequiredRole,
    clockSkewS: x.oidcClockSkewS,
  };
}

function need<T>(value: T | undefined, key: string, why: string): T {
  if (value === undefined) throw new ConfigError(key, why, undefined);
  return value;
}

function fhirAuthConfig(x: Values): FhirAuthConfig {
  const why = (what: string) => `${what} when CTGATE_FHIR_AUTH is ${x.fhirAuth}`;
  switch (x.fhirAuth) {
    case 'none':
      return { mode: 'none' };
    case 'basic':
      return {
        mode: 'basic',
        username: need(x.fhirUsername, 'CTGATE_FHIR_USERNAME', why('a user name')),
        password: need(x.fhirPassword, 'CTGATE_FHIR_PASSWORD', why('a password (environment only)')),
      };
    case 'bearer':
      return { mode: 'bearer', token: need(x.fhirToken, 'CTGATE_FHIR_TOKEN', why('a token (environment only)')) };
    case 'smart-backend':
      return {
        mode: 'smart-backend',
        tokenUrl: need(x.fhirSmartTokenUrl, 'CTGATE_FHIR_SMART_TOKEN_URL', why('the token endpoint URL')),
        clientId: need(x.fhirSmartClientId, 'CTGATE_FHIR_SMART_CLIENT_ID', why('the registered client id')),
        privateKeyFile: need(x.fhirSmartPrivateKeyFile, 'CTGATE_FHIR_SMART_PRIVATE_KEY_FILE', why('a PEM private key (RSA or P-384)')),
        keyId: x.fhirSmartKeyId,
        scope: x.fhirSmartScope,
      };
  }
}

function fhirConfig(x: Values): FhirConfig | undefined {
  if (!x.fhirBaseUrl) {
    if (x.fhirAuth !== 'none') throw new ConfigError('CTGATE_FHIR_BASE_URL', `a URL when CTGATE_FHIR_AUTH is ${x.fhirAuth}`, undefined);
    return undefined;
  }
  return { baseUrl: x.fhirBaseUrl, auth: fhirAuthConfig(x), timeoutMs: x.fhirTimeoutMs, retries: x.fhirRetries, retryBaseMs: x.fhirRetryBaseMs };
}

/** The HTTP API must never run open: `serve` calls this before listening. */
export function requireApiToken(config: Config): string {
  if (!config.apiToken) throw new ConfigError('CTGATE_API_TOKEN', 'a token of at least 16 characters (HTTP API auth)', undefined);
  return config.apiToken;
}
