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
