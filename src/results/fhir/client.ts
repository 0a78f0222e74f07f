/**
 * Sends a result Bundle to the FHIR server as one transaction (fhir-kit-client). Retries with exponential backoff
 * on 5xx, 429, timeouts and network errors; a 4xx is final and its OperationOutcome text is in the error. Logs
 * carry status codes, counts and timings only; server-supplied text (which may echo patient data) goes under phi.
 */
import type { Bundle, OperationOutcome } from 'fhir/r4.js';
import { Client } from 'fhir-kit-client';
import type { FhirConfig } from '../../config/index.js';
import { type Logger, silentLogger } from '../../observability/log.js';
import { authFromConfig, type FhirAuth } from './auth.js';
import { SmartAuthError } from './smart.js';
import { needsSplit, resolveReferences, splitConditional } from './split.js';

export interface SentResource {
  resourceType: string;
  id: string;
  /** HTTP status of the entry: 201 created, 200 updated or matched. */
  status: string;
  /** The entry's OperationOutcome text, when it has one. */
  detail?: string;
}

export interface SendResult {
  resources: SentResource[];
  attempts: number;
}

export class FhirSendError extends Error {
  constructor(
    message: string,
    /** HTTP status; undefined for network errors and timeouts. */
    readonly status: number | undefined,
    /** True when trying again later may succeed (5xx, 429, network); false for rejections (4xx). */
    readonly retryable: boolean,
  ) {
    super(message);
    this.name = 'FhirSendError';
  }
}

export interface FhirSenderOptions {
  baseUrl: string;
  auth: FhirAuth;
  timeoutMs: number;
  retries: number;
  retryBaseMs: number;
  /** Largest transaction with conditional entries the server takes (default 8, as Medplum). */
  strictTransactionEntries?: number;
  log?: Logger;
  sleep?: (ms: number) => Promise<void>;
}

/** Text of an OperationOutcome's issues, one per line; the body as text when it is not one. */
export function outcomeText(data: unknown): string {
  const oo = data as OperationOutcome | undefined;
  if (oo?.resourceType === 'OperationOutcome' && Array.isArray(oo.issue)) {
    return oo.issue.map((i) => [i.severity, i.code, i.details?.text ?? i.diagnostics, i.expression?.join(',')].filter(Boolean).join(' ')).join('; ');
  }
  if (typeof data === 'string') return data.slice(0, 500);
  return data === undefined ? '' : JSON.stringify(data).slice(0, 500);
}

interface HttpFailure {
  response?: { status: number; data: unknown };
}

const statusOf = (e: unknown): number | undefined => (e as HttpFailure)?.response?.status;
const retryableStatus = (s: number) => s >= 500 || s === 429 || s === 408;

function summarize(response: unknown): SentResource[] {
  const entries = (response as Bundle | undefined)?.entry ?? [];
  return entries.map((e) => {
    const [resourceType = '', id = ''] = (e.response?.location ?? '').replace(/^.*?([A-Za-z]+\/[^/]+)(\/_history\/.*)?$/, '$1').split('/');
    const status = (e.response?.status ?? '').split(' ')[0] as string;
    const detail = e.response?.outcome && Number(status) >= 400 ? outcomeText(e.response.outcome) : undefined;
    return { resourceType: e.resource?.resourceType ?? resourceType, id: e.resource?.id ?? id, status, ...(detail ? { detail } : {}) };
  });
}

export class FhirSender {
  private readonly client: Client;
  private readonly log: Logger;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(private readonly opts: FhirSenderOptions) {
    this.client = new Client({ baseUrl: opts.baseUrl });
    this.log = opts.log ?? silentLogger;
    this.sleep = opts.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  static fromConfig(config: FhirConfig, log?: Logger): FhirSender {
    return new FhirSender({ ...config, auth: authFromConfig(config.auth), log });
  }

  /**
   * Posts the result Bundle as one transaction, or as two where a strict server needs it (see split.ts); resolves
   * with what the server made of each entry.
   */
  async send(bundle: Bundle, jobId?: string): Promise<SendResult> {
    if (!needsSplit(bundle, this.opts.strictTransactionEntries)) return this.transaction(bundle, jobId);
    const [identities, rest] = splitConditional(bundle);
    const first = await this.transaction(identities, jobId);
    const resolved = new Map<string, string>();
    (identities.entry ?? []).forEach((e, i) => {
      const r = first.resources[i];
      if (e.fullUrl && r?.id) resolved.set(e.fullUrl, `${r.resourceType}/${r.id}`);
    });
    const second = await this.transaction(resolveReferences(rest, resolved), jobId);
    return { resources: [...first.resources, ...second.resources], attempts: first.attempts + second.attempts };
  }

  private async transaction(bundle: Bundle, jobId?: string): Promise<SendResult> {
    let refreshedAuth = false;
    for (let attempt = 1; ; attempt++) {
      const started = Date.now();
      try {
        const authorization = await this.opts.auth.header();
        const response = await this.client.transaction({
          body: bundle as unknown as Parameters<Client['transaction']>[0]['body'],
          options: {
            headers: { 'content-type': 'application/fhir+json', ...(authorization ? { authorization } : {}) },
            signal: AbortSignal.timeout(this.opts.timeoutMs),
          },
        });
        const resources = summarize(response);
        // A server that runs the entries one by one (batch semantics) answers 200 with failed entries inside.
        const failed = resources.find((r) => Number(r.status) >= 400);
        if (failed)
          throw new FhirSendError(
            `FHIR server rejected the ${failed.resourceType || 'entry'} of the transaction (${failed.status}): ${failed.detail}`,
            Number(failed.status),
            false,
          );
        this.log.info('fhir.sent', { jobId, attempt, entries: resources.length, ms: Date.now() - started });
        return { resources, attempts: attempt };
      } catch (e) {
        if (e instanceof FhirSendError) throw e;
        if (e instanceof SmartAuthError) {
          const retryable = e.status === undefined || retryableStatus(e.status);
          if (!retryable || attempt > this.opts.retries) throw new FhirSendError(e.message, e.status, retryable);
          this.log.warn('fhir.retry', { jobId, attempt, stage: 'token', status: e.status });
          await this.sleep(this.backoff(attempt));
          continue;
        }
        const status = statusOf(e);
        const detail = status === undefined ? (e as Error).message : outcomeText((e as HttpFailure).response?.data);
        if (status === 401 && this.opts.auth.refreshable && !refreshedAuth) {
          refreshedAuth = true;
          this.opts.auth.invalidate();
          this.log.warn('fhir.unauthorized', { jobId, attempt, action: 'fresh token' });
          continue;
        }
        const retryable = status === undefined || retryableStatus(status);
        if (!retryable || attempt > this.opts.retries) {
          this.log.error('fhir.failed', { jobId, attempt, status, retryable, phi: detail });
          const what = status === undefined ? `FHIR server unreachable (${detail})` : `FHIR server answered ${status}: ${detail || 'no OperationOutcome'}`;
          throw new FhirSendError(`${what} after ${attempt} attempt${attempt > 1 ? 's' : ''}`, status, retryable);
        }
        const delay = this.backoff(attempt);
        this.log.warn('fhir.retry', { jobId, attempt, status, delayMs: Math.round(delay) });
        await this.sleep(delay);
      }
    }
  }

  /** Exponential backoff with ±25 % jitter, so workers that failed together do not retry together. */
  private backoff(attempt: number): number {
    return this.opts.retryBaseMs * 2 ** (attempt - 1) * (0.75 + Math.random() * 0.5);
  }
}
