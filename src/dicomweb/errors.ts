export type PacsErrorKind = 'client' | 'server' | 'network' | 'timeout' | 'unsupported-transfer-syntax' | 'bad-response';

/** A DICOMweb failure, classified so callers know whether a retry can help. */
export class PacsError extends Error {
  constructor(
    readonly kind: PacsErrorKind,
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'PacsError';
  }

  get retryable(): boolean {
    return this.kind === 'server' || this.kind === 'network' || this.kind === 'timeout';
  }
}

const CAUSES: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  CTGATE_REDIRECT_ORIGIN: 'a redirect to another origin, refused (the PACS credentials stay with the PACS)',
  CTGATE_REDIRECT_LOOP: 'too many redirects',
  ECONNRESET: 'connection reset',
  EPIPE: 'connection closed while sending',
  ETIMEDOUT: 'connection timed out',
  UND_ERR_CONNECT_TIMEOUT: 'connection timed out',
  UND_ERR_HEADERS_TIMEOUT: 'no answer in time',
  UND_ERR_BODY_TIMEOUT: 'the answer stalled',
  UND_ERR_SOCKET: 'connection closed',
  UND_ERR_CLOSED: 'connection closed',
  ENOTFOUND: 'host name not found',
  EAI_AGAIN: 'host name lookup failed (temporary)',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  EHOSTDOWN: 'host down',
  ECONNABORTED: 'connection aborted',
  CERT_HAS_EXPIRED: 'TLS certificate expired',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'TLS certificate not trusted (self-signed)',
  SELF_SIGNED_CERT_IN_CHAIN: 'TLS certificate not trusted (self-signed chain)',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'TLS certificate not trusted',
  ERR_TLS_CERT_ALTNAME_INVALID: 'TLS certificate does not name the host',
};

/** The first error code (ECONNREFUSED, UND_ERR_…) along err.cause and AggregateError.errors, as undici and node:net nest them. */
export function networkErrorCode(e: unknown, depth = 0): string | undefined {
  if (!e || typeof e !== 'object' || depth > 5) return undefined;
  const err = e as { code?: unknown; cause?: unknown; errors?: unknown };
  if (typeof err.code === 'string' && err.code !== 'UND_ERR' && err.code !== 'ERR_INVALID_STATE') return err.code;
  const fromCause = networkErrorCode(err.cause, depth + 1);
  if (fromCause) return fromCause;
  if (Array.isArray(err.errors))
    for (const x of err.errors) {
      const c = networkErrorCode(x, depth + 1);
      if (c) return c;
    }
  return undefined;
}

/**
 * "<peer> unreachable: connection refused (ECONNREFUSED)" for an error that never got an answer (undici's bare
 * "fetch failed", node:http's "connect ECONNREFUSED 10.0.0.5:8042", a timeout). Names the peer and the cause only:
 * never a URL, an address or a header, so it is safe in job records, pages and logs.
 */
export function describeNetworkError(peer: string, e: unknown): string {
  const name = (e as { name?: unknown } | null)?.name;
  if (name === 'TimeoutError' || name === 'AbortError') return `${peer} did not answer in time (timeout)`;
  const code = networkErrorCode(e);
  if (code) return `${peer} unreachable: ${CAUSES[code] ?? 'network error'} (${code})`;
  // No code: the innermost cause's own words (undici's "bad port"), unless they could carry a URL or credentials.
  let inner = e as { cause?: unknown; message?: unknown } | undefined;
  for (let i = 0; i < 5 && inner?.cause && typeof inner.cause === 'object'; i++) inner = inner.cause as typeof inner;
  const words = inner && inner !== e && typeof inner.message === 'string' ? inner.message : '';
  if (words && words.length < 120 && !/[:@/]/.test(words)) return `${peer} unreachable: ${words}`;
  return `${peer} unreachable: no response (no error code given)`;
}

export function httpError(status: number, what: string): PacsError {
  if (status === 0) return new PacsError('network', `${what}: no response from the PACS`);
  if (status === 408 || status === 429 || status >= 500) return new PacsError('server', `${what}: PACS answered HTTP ${status}`, status);
  return new PacsError('client', `${what}: PACS answered HTTP ${status}`, status);
}

/** Runs `fn`, retrying retryable PacsErrors with exponential backoff and jitter. */
export async function withRetry<T>(
  fn: () => Promise<T>,
  opts: { retries: number; baseMs: number; onRetry?: (e: PacsError, attempt: number) => void },
): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof PacsError) || !e.retryable || attempt >= opts.retries) throw e;
      opts.onRetry?.(e, attempt + 1);
      const delay = opts.baseMs * 2 ** attempt * (0.5 + Math.random());
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/** Maps `items` through `fn` with at most `limit` calls in flight; results keep the input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
