/**
 * Delivers one ORU^R01 over MLLP (optionally TLS) and waits for its acknowledgment.
 *
 * One connection per attempt: results are a few per minute, and a fresh connection can never hold a stale ACK
 * from an earlier message. Every attempt sends the same bytes with the same MSH-10, so a receiver that did get the
 * message before the ACK was lost can recognise the resend. Logs carry job and control ids only: the message and
 * the receiver's error text may hold patient data.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import tls from 'node:tls';
import type { OruConfig } from '../../config/index.js';
import type { AckCode } from '../../hl7/ack.js';
import { readHeader } from '../../hl7/header.js';
import { encodeFrame, MllpDecoder } from '../../hl7/mllp-framing.js';
import { decodeMessageBytes } from '../../hl7/text.js';
import { type Logger, silentLogger } from '../../observability/log.js';
import { readAckReply } from './ack-reply.js';

export interface OruTlsOptions {
  /** Trusted CA certificates (PEM); default: Node's bundled roots. */
  ca?: string | Buffer;
  /** Client certificate and key (PEM) for receivers that require one. */
  cert?: string | Buffer;
  key?: string | Buffer;
  servername?: string;
}

export interface OruSenderOptions {
  host: string;
  port: number;
  tls?: OruTlsOptions;
  connectTimeoutMs: number;
  ackTimeoutMs: number;
  /** Further attempts after a retryable failure. */
  retries: number;
  backoffMs: number;
  backoffMaxMs: number;
  /** Negative ACK codes worth another attempt (default AE, CE: the receiver had a problem; AR/CR reject the message). */
  retryableAckCodes?: readonly string[];
  logger?: Logger;
  /** Stops waiting between attempts (shutdown). */
  signal?: AbortSignal;
}

export interface DeliveryRecord {
  controlId: string;
  ackCode: 'AA' | 'CA';
  attempts: number;
  /** Earlier attempts that sent the message and got no ACK: the EMR may have it that many times more. */
  unacked: number;
  /** ISO 8601. */
  ackedAt: string;
}

/** Delivery failed for good. `reason` may quote the receiver (MSA-3/ERR), which can hold patient data. */
export class OruDeliveryError extends Error {
  constructor(
    readonly jobId: string,
    readonly controlId: string,
    readonly attempts: number,
    readonly reason: string,
    /** The receiver's MSA-1 when it answered; undefined for connection failures and timeouts. */
    readonly ackCode: string | undefined,
    /** Whether a later, separate delivery could succeed (false for AR/CR and certificate errors). */
    readonly retryable: boolean,
    /** Attempts that sent the message and got no ACK (the EMR may have it). */
    readonly unacked = 0,
  ) {
    super(`ORU ${controlId} (job ${jobId}) not delivered after ${attempts} attempt(s): ${ackCode ? `${ackCode} ` : ''}${reason}`);
    this.name = 'OruDeliveryError';
  }
}

const DEFAULT_RETRYABLE: readonly AckCode[] = ['AE', 'CE'];
const MAX_ACK_BYTES = 1024 * 1024;

/** `written`: the message went out before the failure (no ACK in time, closed after sending): the EMR may have it. */
type Outcome = { kind: 'ack'; code: string; reason: string } | { kind: 'failed'; reason: string; retryable: boolean; written?: boolean };

/** Sender options from the ORU configuration (reads the TLS files). */
export function oruSenderOptions(c: OruConfig, logger?: Logger): OruSenderOptions {
  const read = (f: string | undefined) => (f ? readFileSync(f) : undefined);
  return {
    host: c.host,
    port: c.port,
    tls: c.tls ? { ca: read(c.tlsCaFile), cert: read(c.tlsCertFile), key: read(c.tlsKeyFile), servername: c.tlsServername } : undefined,
    connectTimeoutMs: c.connectTimeoutMs,
    ackTimeoutMs: c.ackTimeoutMs,
    retries: c.retries,
    backoffMs: c.backoffMs,
    backoffMaxMs: c.backoffMaxMs,
    logger,
  };
}

/** Sends `message` (CR segment ends, MSH-10 set) until it is accepted, rejected, or the attempts run out. */
export async function sendOru(message: string, jobId: string, opts: OruSenderOptions): Promise<DeliveryRecord> {
  const controlId = readHeader(message)?.controlId;
  if (!controlId) throw new Error('ORU has no MSH-10 control id');
  const log = opts.logger ?? silentLogger;
  const retryableCodes = opts.retryableAckCodes ?? DEFAULT_RETRYABLE;
  const frame = encodeFrame(message);
  let unacked = 0;
  for (let attempt = 1; ; attempt++) {
    const out = await attemptOnce(frame, controlId, jobId, opts, log);
    if (out.kind === 'failed' && out.written) unacked++;
    let reason: string;
    let retryable: boolean;
    let ackCode: string | undefined;
    if (out.kind === 'ack') {
      if (out.code === 'AA' || out.code === 'CA') {
        log.info('oru.delivered', { jobId, controlId, ackCode: out.code, attempts: attempt });
        return { controlId, ackCode: out.code, attempts: attempt, unacked, ackedAt: new Date().toISOString() };
      }
      ackCode = out.code;
      reason = out.reason || 'no reason given';
      retryable = retryableCodes.includes(out.code);
      log.warn('oru.nak', { jobId, controlId, ackCode, attempt, retryable });
    } else {
      reason = out.reason;
      retryable = out.retryable;
      log.warn('oru.attempt_failed', { jobId, controlId, attempt, reason, retryable });
    }
    if (!retryable || attempt > opts.retries || opts.signal?.aborted) {
      log.error('oru.failed', { jobId, controlId, attempts: attempt, ackCode });
      throw new OruDeliveryError(jobId, controlId, attempt, reason, ackCode, retryable, unacked);
    }
    const delayMs = Math.min(opts.backoffMaxMs, opts.backoffMs * 2 ** (attempt - 1));
    try {
      await sleep(delayMs, undefined, { signal: opts.signal });
    } catch {
      throw new OruDeliveryError(jobId, controlId, attempt, `aborted while waiting to retry (${reason})`, ackCode, true, unacked);
    }
  }
}

/** Node error codes for a peer certificate we do not trust: another attempt cannot fix them. */
const CERT_ERROR = /CERT|SELF_SIGNED|ALTNAME|UNABLE_TO_(GET|VERIFY)/;

function attemptOnce(frame: Buffer, controlId: string, jobId: string, o: OruSenderOptions, log: Logger): Promise<Outcome> {
  return new Promise((resolve) => {
    const decoder = new MllpDecoder(MAX_ACK_BYTES);
    let connected = false;
    let written = false;
    let done = false;
    const socket = o.tls
      ? tls.connect({ host: o.host, port: o.port, ca: o.tls.ca, cert: o.tls.cert, key: o.tls.key, servername: o.tls.servername })
      : net.connect({ host: o.host, port: o.port });
    const finish = (out: Outcome) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(out);
    };
    let timer = setTimeout(() => finish({ kind: 'failed', reason: `no connection within ${o.connectTimeoutMs} ms`, retryable: true }), o.connectTimeoutMs);
    socket.once(o.tls ? 'secureConnect' : 'connect', () => {
      connected = true;
      clearTimeout(timer);
      timer = setTimeout(() => finish({ kind: 'failed', reason: `no ACK within ${o.ackTimeoutMs} ms`, retryable: true, written }), o.ackTimeoutMs);
      socket.write(frame);
      written = true;
    });
    socket.on('data', (chunk: Buffer) => {
      for (const ev of decoder.push(chunk)) {
        if (ev.type !== 'message') {
          log.warn('oru.ack_garbage', { jobId, controlId, what: ev.type });
          continue;
        }
        let reply: ReturnType<typeof readAckReply>;
        try {
          reply = readAckReply(decodeMessageBytes(ev.data));
        } catch (e) {
          log.warn('oru.ack_unreadable', { jobId, controlId, error: (e as Error).message });
          continue;
        }
        if (reply.controlId !== controlId) {
          // A late ACK of an earlier message, or a confused peer: it says nothing about this one.
          log.warn('oru.ack_other_message', { jobId, controlId, ackFor: reply.controlId, ackCode: reply.code });
          continue;
        }
        finish({ kind: 'ack', code: reply.code, reason: reply.reason });
      }
    });
    socket.on('error', (e: NodeJS.ErrnoException) => {
      const code = e.code ?? '';
      const where = connected ? 'connection failed' : 'cannot connect';
      finish({ kind: 'failed', reason: `${where} to ${o.host}:${o.port}: ${code || e.message}`, retryable: !CERT_ERROR.test(code), written });
    });
    socket.on('close', () => finish({ kind: 'failed', reason: 'connection closed before an ACK', retryable: true, written }));
  });
}
