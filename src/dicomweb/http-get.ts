import http from 'node:http';
import https from 'node:https';
import { type Duplex, finished } from 'node:stream';

export interface StreamedResponse {
  status: number;
  contentType: string;
  /**
   * Hands every chunk of the body to `onChunk` as it arrives, synchronously (the chunk is the caller's to keep),
   * and resolves at the end of the body; rejects if the body fails or `onChunk` throws. Leaner than iterating the
   * body as an async iterable: no promise and no stream buffering per chunk.
   */
  read(onChunk: (chunk: Buffer) => void): Promise<void>;
  /** Stops reading and frees the socket (call when leaving before the body ends). */
  destroy(): void;
}

function readAll(res: http.IncomingMessage, onChunk: (chunk: Buffer) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    let failed = false;
    res.on('data', (chunk: Buffer) => {
      if (failed) return;
      try {
        onChunk(chunk);
      } catch (e) {
        failed = true;
        reject(e);
        res.destroy();
      }
    });
    finished(res, (err) => (err ? reject(err) : resolve()));
  });
}

/**
 * Keeps a socket for reuse after the response told a short idle timeout. Node's agent gives up on any socket whose
 * response says "Keep-Alive: timeout=1" (Orthanc's default) because its safety margin is a whole second, so every
 * request paid a TCP connect and close. Here such a socket is kept for half the announced time instead; should the
 * server close one just as it is reused, httpGetStream reconnects at once.
 */
function keepShortLived(agent: http.Agent, socket: Duplex): boolean | undefined {
  const res = (socket as { _httpMessage?: { res?: http.IncomingMessage } })._httpMessage?.res;
  const hint = /^timeout=(\d+)/.exec(String(res?.headers['keep-alive'] ?? ''))?.[1];
  if (hint === undefined || Number(hint) > 1) return undefined;
  if (Number(hint) < 1) return false;
  const s = socket as Duplex & { setKeepAlive(enable: boolean, delay: number): void; setTimeout(ms: number): void; unref(): void };
  s.setKeepAlive(true, (agent as { keepAliveMsecs?: number }).keepAliveMsecs ?? 1000);
  s.unref();
  s.setTimeout(500);
  return true;
}

class PacsHttpAgent extends http.Agent {
  override keepSocketAlive(socket: Duplex): boolean {
    return keepShortLived(this, socket) ?? (super.keepSocketAlive(socket) as unknown as boolean);
  }
}

class PacsHttpsAgent extends https.Agent {
  override keepSocketAlive(socket: Duplex): boolean {
    return keepShortLived(this, socket) ?? (super.keepSocketAlive(socket) as unknown as boolean);
  }
}

/** Keep-alive agents for a PACS (see keepShortLived), up to maxSockets per host. */
export function pacsAgents(maxSockets: number): { http: http.Agent; https: https.Agent } {
  return { http: new PacsHttpAgent({ keepAlive: true, maxSockets }), https: new PacsHttpsAgent({ keepAlive: true, maxSockets }) };
}

const agents = pacsAgents(16);

/** A request that failed on a pooled socket the server had already closed: safe to send again on another socket. */
export function staleSocket(req: http.ClientRequest, e: unknown): boolean {
  const code = (e as { code?: string }).code;
  return req.reusedSocket && (code === 'ECONNRESET' || code === 'EPIPE');
}

/**
 * GET with a streamed body over node:http(s). Used for pixel data and metadata instead of fetch and XMLHttpRequest:
 * on loopback against Orthanc it moved frames about twice as fast (bench/retrieve.ts), and the body still arrives as
 * a stream. `timeoutMs` bounds the whole exchange, body included.
 */
export function httpGetStream(url: string, headers: Record<string, string>, timeoutMs: number): Promise<StreamedResponse> {
  const u = new URL(url);
  const lib = u.protocol === 'https:' ? https : http;
  const agent = u.protocol === 'https:' ? agents.https : agents.http;
  const signal = AbortSignal.timeout(timeoutMs);
  const attempt = (staleLeft: number): Promise<StreamedResponse> =>
    new Promise((resolve, reject) => {
      let responded = false;
      const req = lib.get(u, { headers, agent, signal }, (res) => {
        responded = true;
        resolve({
          status: res.statusCode ?? 0,
          contentType: String(res.headers['content-type'] ?? ''),
          read: (onChunk) => readAll(res, onChunk),
          destroy: () => {
            if (!res.complete) res.destroy();
          },
        });
      });
      req.on('error', (e) => {
        if (!responded && staleLeft > 0 && staleSocket(req, e) && !signal.aborted) resolve(attempt(staleLeft - 1));
        else reject(e);
      });
    });
  return attempt(2);
}

/** GET of a whole (small) body, e.g. DICOM JSON. */
export async function httpGetBuffer(
  url: string,
  headers: Record<string, string>,
  timeoutMs: number,
): Promise<{ status: number; contentType: string; body: Buffer }> {
  const res = await httpGetStream(url, headers, timeoutMs);
  try {
    const chunks: Buffer[] = [];
    await res.read((chunk) => chunks.push(chunk));
    return { status: res.status, contentType: res.contentType, body: Buffer.concat(chunks) };
  } finally {
    res.destroy();
  }
}
