/**
 * Readiness: can this process do its work now? Redis answers, the PACS answers a QIDO-RS query, the FHIR server
 * answers /metadata (each peer only when configured: an optional peer that is not configured is reported as such,
 * not failed), and the model files match the manifest's sha256 (hashed once, then again only when a file's size or
 * mtime changes). Results carry a status and a latency per check and never a URL, a credential or a file path.
 */
import { readFile, stat } from 'node:fs/promises';
import type { Redis } from 'ioredis';
import type { FhirConfig, PacsConfig } from '../config/index.js';
import { type Manifest, ManifestError, parseManifest, sha256File } from '../inference/manifest.js';
import { persistenceProblem, redisPersistence } from '../redis/persistence.js';

export type CheckStatus = 'ok' | 'fail' | 'not configured';

export interface CheckResult {
  status: CheckStatus;
  latencyMs?: number;
  /** Why it failed, in words that name no URL, credential or path. */
  error?: string;
  [detail: string]: unknown;
}

export interface Readiness {
  ready: boolean;
  checks: Record<string, CheckResult>;
  /** Names of the checks that failed. */
  failed: string[];
}

export type CheckName = 'redis' | 'pacs' | 'fhir' | 'models';
export const ALL_CHECKS: readonly CheckName[] = ['redis', 'pacs', 'fhir', 'models'];

export interface ReadinessDeps {
  redis: Redis;
  pacs?: PacsConfig;
  fhir?: FhirConfig;
  models: ModelFilesCheck;
  /** Upper bound for each peer's answer; default 3000 ms (or the peer's own timeout when shorter). */
  timeoutMs?: number;
  /** Redis must persist (AOF on) for the redis check to pass (CTGATE_REDIS_REQUIRE_AOF); it is reported either way. */
  requireAof?: boolean;
}

const ms = (t0: number) => Math.round((performance.now() - t0) * 10) / 10;

function withTimeout<T>(p: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** A fetch failure in words, without the URL (undici puts it in some messages). */
export function describeFetchError(e: unknown, timeoutMs: number): string {
  const err = e as { name?: string; message?: string; cause?: { code?: string; name?: string } };
  if (err?.name === 'TimeoutError' || err?.name === 'AbortError' || err?.cause?.name === 'ConnectTimeoutError') return `no answer within ${timeoutMs} ms`;
  const code = err?.cause?.code;
  if (code === 'ECONNREFUSED') return 'connection refused';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return 'host name not resolved';
  if (code) return `connection failed (${code})`;
  return 'request failed';
}

async function httpCheck(url: string, headers: Record<string, string>, timeoutMs: number, what: string): Promise<CheckResult> {
  const t0 = performance.now();
  try {
    const res = await fetch(url, { headers, signal: AbortSignal.timeout(timeoutMs), redirect: 'manual' });
    await res.arrayBuffer().catch(() => undefined);
    if (res.status >= 200 && res.status < 300) return { status: 'ok', latencyMs: ms(t0) };
    const hint = res.status === 401 || res.status === 403 ? ` (check the ${what} credentials)` : '';
    return { status: 'fail', latencyMs: ms(t0), error: `HTTP ${res.status}${hint}` };
  } catch (e) {
    return { status: 'fail', latencyMs: ms(t0), error: describeFetchError(e, timeoutMs) };
  }
}

/** PING, then whether Redis persists (`persistence`); without AOF the check fails when `requireAof`. */
export async function checkRedis(redis: Redis, timeoutMs = 2000, requireAof = false): Promise<CheckResult> {
  const t0 = performance.now();
  try {
    const pong = await withTimeout(redis.ping(), timeoutMs);
    if (pong !== 'PONG') return { status: 'fail', latencyMs: ms(t0), error: `unexpected reply ${String(pong).slice(0, 20)}` };
  } catch (e) {
    return { status: 'fail', latencyMs: ms(t0), error: `not reachable: ${(e as Error).message.slice(0, 120)}` };
  }
  const p = await withTimeout(redisPersistence(redis), timeoutMs).catch((e: Error) => ({ aof: null, error: e.message.slice(0, 120) }));
  const persistence = {
    aof: p.aof,
    required: requireAof,
    ...('via' in p && p.via ? { via: p.via } : {}),
    ...('fsync' in p && p.fsync ? { fsync: p.fsync } : {}),
  };
  const problem = persistenceProblem(p);
  if (problem && requireAof) return { status: 'fail', latencyMs: ms(t0), persistence, error: problem };
  return { status: 'ok', latencyMs: ms(t0), persistence, ...(problem ? { warning: problem } : {}) };
}

/** QIDO-RS: one study at most, just to see that the DICOMweb service answers with these credentials. */
export function checkPacs(pacs: PacsConfig | undefined, timeoutMs = 3000): Promise<CheckResult> {
  if (!pacs) return Promise.resolve({ status: 'not configured' });
  const headers: Record<string, string> = { Accept: 'application/dicom+json' };
  if (pacs.auth.kind === 'basic') headers.Authorization = `Basic ${Buffer.from(`${pacs.auth.user}:${pacs.auth.password}`).toString('base64')}`;
  else if (pacs.auth.kind === 'bearer') headers.Authorization = `Bearer ${pacs.auth.token}`;
  return httpCheck(`${pacs.url}/studies?limit=1`, headers, Math.min(timeoutMs, pacs.timeoutMs), 'PACS');
}

/** GET [base]/metadata (the CapabilityStatement, readable without a token by the spec; static credentials are sent). */
export function checkFhir(fhir: FhirConfig | undefined, timeoutMs = 3000): Promise<CheckResult> {
  if (!fhir) return Promise.resolve({ status: 'not configured' });
  const headers: Record<string, string> = { Accept: 'application/fhir+json' };
  if (fhir.auth.mode === 'basic') headers.Authorization = `Basic ${Buffer.from(`${fhir.auth.username}:${fhir.auth.password}`).toString('base64')}`;
  else if (fhir.auth.mode === 'bearer') headers.Authorization = `Bearer ${fhir.auth.token}`;
  return httpCheck(`${fhir.baseUrl}/metadata`, headers, Math.min(timeoutMs, fhir.timeoutMs), 'FHIR');
}

type Stamp = string;

async function stampOf(path: string): Promise<Stamp> {
  const s = await stat(path);
  return `${s.size}:${s.mtimeMs}`;
}

/**
 * The model files against the manifest's sha256, cached by the size and mtime of the manifest and of each file:
 * a call costs a few stat() calls unless something changed. Concurrent calls share one verification.
 */
export class ModelFilesCheck {
  private cached: { stamp: string; result: CheckResult } | undefined;
  private manifest: { stamp: Stamp; manifest: Manifest } | undefined;
  private inFlight: Promise<CheckResult> | undefined;

  constructor(readonly manifestPath: string) {}

  check(): Promise<CheckResult> {
    this.inFlight ??= this.run().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  private async run(): Promise<CheckResult> {
    const t0 = performance.now();
    let manifestStamp: Stamp;
    try {
      manifestStamp = await stampOf(this.manifestPath);
    } catch (e) {
      return {
        status: 'fail',
        latencyMs: ms(t0),
        error: `the model manifest (CTGATE_MODELS_MANIFEST) cannot be read (${(e as NodeJS.ErrnoException).code ?? 'error'})`,
      };
    }
    let m: Manifest;
    if (this.manifest?.stamp === manifestStamp) m = this.manifest.manifest;
    else {
      try {
        m = parseManifest(JSON.parse(await readFile(this.manifestPath, 'utf8')), this.manifestPath);
      } catch (e) {
        this.cached = undefined;
        const why = e instanceof ManifestError ? e.problems.slice(0, 3).join('; ') : 'not valid JSON';
        return { status: 'fail', latencyMs: ms(t0), error: `the model manifest is not valid: ${why}` };
      }
      this.manifest = { stamp: manifestStamp, manifest: m };
    }
    const files = [m.lesion, m.classifier];
    const stamps = await Promise.all(files.map((f) => stampOf(f.path).catch(() => 'missing')));
    const stamp = `${manifestStamp}|${stamps.join('|')}`;
    if (this.cached?.stamp === stamp) return { ...this.cached.result, latencyMs: ms(t0), cached: true };
    const problems: string[] = [];
    for (const f of files) {
      const id = `${f.name}@${f.version}`;
      try {
        const actual = await sha256File(f.path);
        if (actual.toLowerCase() !== f.sha256.toLowerCase()) problems.push(`${id}: sha256 differs from the manifest`);
      } catch (e) {
        problems.push(`${id}: model file cannot be read (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
      }
    }
    const result: CheckResult =
      problems.length === 0 ? { status: 'ok', models: m.modelIds } : { status: 'fail', models: m.modelIds, error: problems.join('; ') };
    this.cached = { stamp, result };
    return { ...result, latencyMs: ms(t0), cached: false };
  }
}

/** Runs the checks side by side. `ready` is true when none failed ('not configured' is not a failure). */
export async function checkReadiness(deps: ReadinessDeps, which: readonly CheckName[] = ALL_CHECKS): Promise<Readiness> {
  const timeout = deps.timeoutMs ?? 3000;
  const run: Record<CheckName, () => Promise<CheckResult>> = {
    redis: () => checkRedis(deps.redis, timeout, deps.requireAof),
    pacs: () => checkPacs(deps.pacs, timeout),
    fhir: () => checkFhir(deps.fhir, timeout),
    models: () => deps.models.check(),
  };
  const results = await Promise.all(which.map((n) => run[n]()));
  const checks: Record<string, CheckResult> = {};
  which.forEach((n, i) => {
    checks[n] = results[i] as CheckResult;
  });
  const failed = which.filter((n) => checks[n]?.status === 'fail');
  return { ready: failed.length === 0, checks, failed };
}
