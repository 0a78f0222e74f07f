import { api } from 'dicomweb-client';
import XHR2 from 'xhr2';
import { describeSyntax, TRANSFER_SYNTAXES } from '../imaging/pixel-codecs.js';
import type { DicomJson } from './dicom-json.js';
import { describeNetworkError, httpError, PacsError, withRetry } from './errors.js';
import { httpGetBuffer, httpGetStream, type StreamedResponse } from './http-get.js';
import { MultipartParser, type PartSink, parseContentType } from './multipart.js';

export type PacsAuth = { kind: 'none' } | { kind: 'basic'; user: string; password: string } | { kind: 'bearer'; token: string };

export interface PacsOptions {
  /** DICOMweb root, e.g. http://pacs:8042/dicom-web */
  url: string;
  auth: PacsAuth;
  timeoutMs: number;
  retries: number;
  retryBaseMs?: number;
  /**
   * How frames are asked for: 'explicit-le' (the default) asks the PACS to transcode to explicit VR little endian
   * and also accepts the stored syntax (decoded here when compressed); 'as-stored' asks for the stored syntax only
   * (less work for the PACS, fewer bytes on the wire; decoded here).
   */
  frameSyntax?: 'explicit-le' | 'as-stored';
}

export const EXPLICIT_VR_LE = '1.2.840.10008.1.2.1';
export const IMPLICIT_VR_LE = '1.2.840.10008.1.2';
export const EXPLICIT_VR_BE = '1.2.840.10008.1.2.2';
const NATIVE = new Set([EXPLICIT_VR_LE, IMPLICIT_VR_LE, EXPLICIT_VR_BE]);

// dicomweb-client speaks XMLHttpRequest; Node has none, and xhr2 is the polyfill that handles QIDO and STOW.
const g = globalThis as { XMLHttpRequest?: unknown };
g.XMLHttpRequest ??= XHR2;

/** Where keepXhrCause leaves the Node error under an XMLHttpRequest that got no answer (xhr2 drops it otherwise). */
const XHR_CAUSE = Symbol('ctgate.xhrCause');

/** Records on an xhr2 request why it got no answer (refused, reset, DNS, timeout), for the PacsError's message. */
function keepXhrCause(xhr: unknown): void {
  const x = xhr as {
    [XHR_CAUSE]?: unknown;
    _onHttpRequestError?: (req: unknown, err: unknown) => unknown;
    _onHttpTimeout?: (req: unknown) => unknown;
  };
  const onError = x._onHttpRequestError;
  const onTimeout = x._onHttpTimeout;
  if (typeof onError === 'function') {
    x._onHttpRequestError = function (this: unknown, req, err) {
      x[XHR_CAUSE] ??= err;
      return onError.call(this, req, err);
    };
  }
  if (typeof onTimeout === 'function') {
    x._onHttpTimeout = function (this: unknown, req) {
      x[XHR_CAUSE] ??= Object.assign(new Error('timeout'), { name: 'TimeoutError' });
      return onTimeout.call(this, req);
    };
  }
}

const MAX_REDIRECTS = 5;

/**
 * xhr2 follows every redirect, to any origin, without limit, and sends the PACS credentials (Authorization) along.
 * Here a redirect is followed only to the PACS's own origin and at most MAX_REDIRECTS times; any other is the
 * request's error (a PacsError naming the redirect), so ctgate's PACS credentials never leave for another host.
 */
function sameOriginRedirectsOnly(xhr: unknown, pacsUrl: string): void {
  const x = xhr as {
    _onHttpResponse?: (req: unknown, res: { statusCode?: number; headers: Record<string, string | undefined>; resume(): void }) => unknown;
    _onHttpRequestError?: (req: unknown, err: unknown) => unknown;
  };
  const onResponse = x._onHttpResponse;
  if (typeof onResponse !== 'function') return;
  const origin = new URL(pacsUrl).origin;
  let hops = 0;
  x._onHttpResponse = function (this: unknown, req, res) {
    const code = res.statusCode ?? 0;
    if ([301, 302, 303, 307, 308].includes(code)) {
      const base = (this as { _url?: { href?: string } })._url?.href ?? pacsUrl;
      let target: URL | undefined;
      try {
        target = new URL(res.headers.location ?? '', base);
      } catch {
        target = undefined;
      }
      hops++;
      if (target?.origin !== origin || hops > MAX_REDIRECTS) {
        res.resume();
        const reason = target?.origin !== origin ? 'CTGATE_REDIRECT_ORIGIN' : 'CTGATE_REDIRECT_LOOP';
        return x._onHttpRequestError?.call(this, req, Object.assign(new Error(reason), { code: reason }));
      }
      // xhr2 cannot follow a relative Location.
      res.headers.location = target.href;
    }
    return onResponse.call(this, req, res);
  };
}

function authHeaders(auth: PacsAuth): Record<string, string> {
  if (auth.kind === 'basic') return { Authorization: `Basic ${Buffer.from(`${auth.user}:${auth.password}`).toString('base64')}` };
  if (auth.kind === 'bearer') return { Authorization: `Bearer ${auth.token}` };
  return {};
}

/** One uncompressed frame as the PACS sent it. */
export interface Frame {
  bytes: Buffer;
  transferSyntax: string;
}

/** Where retrieveFrameInto puts a frame's bytes as they arrive (see PartSink: copy them during the call). */
export type FrameSink = PartSink;

/**
 * DICOMweb client: QIDO-RS and STOW through dicomweb-client and fetch; series metadata and frame retrieval through
 * a small node:http layer of our own, because dicomweb-client buffers whole responses (and copies them again to
 * split the parts), and its XMLHttpRequest polyfill was more than half the time of a metadata request.
 */
export class DicomWebClient {
  private readonly dw: api.DICOMwebClient;
  private readonly headers: Record<string, string>;

  constructor(private readonly opts: PacsOptions) {
    this.headers = authHeaders(opts.auth);
    const timeout = opts.timeoutMs;
    this.dw = new api.DICOMwebClient({
      url: opts.url.replace(/\/+$/, ''),
      headers: this.headers,
      verbose: false,
      requestHooks: [
        // dicomweb-client ignores hooks that do not declare both parameters.
        (xhr, _metadata) => {
          xhr.timeout = timeout;
          keepXhrCause(xhr);
          sameOriginRedirectsOnly(xhr, opts.url);
          return xhr;
        },
      ],
    });
  }

  private retry<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return withRetry(
      async () => {
        try {
          return await fn();
        } catch (e) {
          if (e instanceof PacsError) throw e;
          const status = (e as { status?: number }).status;
          if (status === 0) {
            const cause = (e as { request?: { [XHR_CAUSE]?: unknown } }).request?.[XHR_CAUSE];
            const timedOut = (cause as { name?: string } | undefined)?.name === 'TimeoutError';
            throw new PacsError(timedOut ? 'timeout' : 'network', `${what}: ${describeNetworkError('PACS', cause)}`);
          }
          if (typeof status === 'number') throw httpError(status, what);
          throw new PacsError('network', `${what}: ${describeNetworkError('PACS', e)}`);
        }
      },
      { retries: this.opts.retries, baseMs: this.opts.retryBaseMs ?? 500 },
    );
  }

  searchStudies(query: Record<string, string>): Promise<DicomJson[]> {
    return this.retry('QIDO studies', async () => (await this.dw.searchForStudies({ queryParams: query })) as DicomJson[]);
  }

  searchSeries(studyUid: string, query: Record<string, string> = {}): Promise<DicomJson[]> {
    return this.retry('QIDO series', async () => (await this.dw.searchForSeries({ studyInstanceUID: studyUid, queryParams: query })) as DicomJson[]);
  }

  searchInstances(studyUid: string, seriesUid: string): Promise<DicomJson[]> {
    return this.retry(
      'QIDO instances',
      async () => (await this.dw.searchForInstances({ studyInstanceUID: studyUid, seriesInstanceUID: seriesUid })) as DicomJson[],
    );
  }

  /**
   * WADO-RS series metadata (DICOM JSON). Answers as dicomweb-client gave them: 200/202/206 the JSON, 204 none;
   * other statuses are classified by httpError, and no answer at all (refused, reset, timed out) is 'network'.
   */
  seriesMetadata(studyUid: string, seriesUid: string): Promise<DicomJson[]> {
    const url = `${this.opts.url.replace(/\/+$/, '')}/studies/${studyUid}/series/${seriesUid}/metadata`;
    const what = 'WADO-RS series metadata';
    return this.retry(what, async () => {
      let res: { status: number; body: Buffer };
      try {
        res = await httpGetBuffer(url, { ...this.headers, Accept: 'application/dicom+json' }, this.opts.timeoutMs);
      } catch (e) {
        const name = (e as Error).name;
        throw new PacsError(name === 'TimeoutError' || name === 'AbortError' ? 'timeout' : 'network', `${what}: ${describeNetworkError('PACS', e)}`);
      }
      if (res.status === 204) return [];
      if (res.status !== 200 && res.status !== 202 && res.status !== 206) throw httpError(res.status, what);
      let json: unknown;
      try {
        json = JSON.parse(res.body.toString('utf8'));
      } catch (e) {
        throw new PacsError('bad-response', `${what}: the answer is not JSON (${(e as Error).message})`);
      }
      if (!Array.isArray(json)) throw new PacsError('bad-response', `${what}: expected a JSON array of instances`);
      return json as DicomJson[];
    });
  }

  /** STOW-RS: stores Part-10 instances in one multipart request; returns the PACS's DICOM JSON answer. */
  store(instances: Uint8Array[]): Promise<DicomJson> {
    const what = `STOW-RS of ${instances.length} instance(s)`;
    return this.retry(what, async () => {
      const boundary = `ctgate-${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
      const parts: Uint8Array[] = [];
      for (const inst of instances) {
        parts.push(Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`), inst, Buffer.from('\r\n'));
      }
      parts.push(Buffer.from(`--${boundary}--\r\n`));
      let res: Response;
      try {
        res = await fetch(`${this.opts.url.replace(/\/+$/, '')}/studies`, {
          method: 'POST',
          body: Buffer.concat(parts),
          headers: { ...this.headers, 'Content-Type': `multipart/related; type="application/dicom"; boundary=${boundary}`, Accept: 'application/dicom+json' },
          signal: AbortSignal.timeout(this.opts.timeoutMs),
        });
      } catch (e) {
        throw new PacsError((e as Error).name === 'TimeoutError' ? 'timeout' : 'network', `${what}: ${describeNetworkError('PACS', e)}`);
      }
      if (!res.ok) throw httpError(res.status, what);
      return (await res.json()) as DicomJson;
    });
  }

  /**
   * WADO-RS frame 1 of an instance, asking for explicit VR little endian and accepting any native syntax.
   * An encapsulated (compressed) answer is a PacsError naming its transfer syntax (retrieveVolume decodes those).
   */
  async retrieveFrame(studyUid: string, seriesUid: string, sopUid: string, frame = 1): Promise<Frame> {
    let got: Frame | undefined;
    await this.retrieveFrameInto(
      studyUid,
      seriesUid,
      sopUid,
      (transferSyntax) => {
        const chunks: Buffer[] = [];
        return {
          write: (bytes) => chunks.push(Buffer.from(bytes)),
          end: () => {
            got = { bytes: Buffer.concat(chunks), transferSyntax };
          },
        };
      },
      frame,
    );
    return got as Frame;
  }

  /**
   * Like retrieveFrame, but streams the frame's bytes into a sink as they arrive instead of gathering them, so
   * they can go straight to their place (see SliceWriter). `open` is called once per attempt with the frame's
   * (native) transfer syntax: a retry starts over with a new sink. The promise resolves once the response was
   * read to its end and the sink's `end` was called; it rejects with a PacsError (what `open` or the sink throw
   * is passed on as it is, and not retried). With `compressed`, an answer in a compressed syntax ctgate decodes
   * (src/imaging/pixel-codecs.ts) goes to `open` too, as the frame's encoded bytes; otherwise it is a PacsError.
   */
  retrieveFrameInto(
    studyUid: string,
    seriesUid: string,
    sopUid: string,
    open: (transferSyntax: string) => FrameSink,
    frame = 1,
    opts: { compressed?: boolean } = {},
  ): Promise<void> {
    const url = `${this.opts.url.replace(/\/+$/, '')}/studies/${studyUid}/series/${seriesUid}/instances/${sopUid}/frames/${frame}`;
    const what = `WADO-RS frame of instance ${sopUid}`;
    // What `open` or the sink threw: passed on as it is, past the retries.
    let sinkError: { error: unknown } | undefined;
    return this.retry(what, async () => {
      const failed = (e: unknown) => {
        const name = (e as Error).name;
        return new PacsError(name === 'TimeoutError' || name === 'AbortError' ? 'timeout' : 'network', `${what}: ${describeNetworkError('PACS', e)}`);
      };
      let res: StreamedResponse;
      try {
        res = await httpGetStream(
          url,
          {
            ...this.headers,
            Accept:
              this.opts.frameSyntax === 'as-stored' && opts.compressed
                ? 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
                : `multipart/related; type="application/octet-stream"; transfer-syntax=${EXPLICIT_VR_LE}, multipart/related; type="application/octet-stream"; transfer-syntax=*`,
          },
          this.opts.timeoutMs,
        );
      } catch (e) {
        throw failed(e);
      }
      try {
        if (res.status === 406) {
          throw new PacsError('unsupported-transfer-syntax', `${what}: the PACS cannot supply it uncompressed (HTTP 406)`, 406);
        }
        if (res.status < 200 || res.status > 299) throw httpError(res.status, what);
        const ct = parseContentType(res.contentType);
        if (!ct.mediaType.startsWith('multipart/') || !ct.params.boundary) {
          throw new PacsError('bad-response', `${what}: expected a multipart/related response, got "${ct.mediaType}"`);
        }
        const outer = parseContentType(ct.params.type ?? '').params['transfer-syntax'];
        let parts = 0;
        let complete = false;
        const guard =
          <A extends unknown[]>(fn: (...args: A) => void) =>
          (...args: A) => {
            try {
              fn(...args);
            } catch (error) {
              sinkError = { error };
              throw error;
            }
          };
        // Only the first part is the frame; any further parts are read past.
        const parser = new MultipartParser(ct.params.boundary, (headers) => {
          if (parts++ > 0) return undefined;
          const ts = parseContentType(headers['content-type'] ?? '').params['transfer-syntax'] ?? outer ?? EXPLICIT_VR_LE;
          if (!NATIVE.has(ts) && !(opts.compressed && TRANSFER_SYNTAXES.get(ts)?.codec)) {
            throw new PacsError(
              'unsupported-transfer-syntax',
              `${what}: the PACS sent transfer syntax ${describeSyntax(ts)}${opts.compressed ? ', which ctgate cannot decode' : ' (compressed), not decoded here'}`,
            );
          }
          let sink: FrameSink;
          guard(() => {
            sink = open(ts);
          })();
          return {
            write: guard((bytes: Buffer) => sink.write(bytes)),
            end: guard(() => {
              sink.end();
              complete = true;
            }),
          };
        });
        // After the closing boundary the rest is still read, so the keep-alive connection can be reused.
        await res.read((chunk) => parser.push(chunk));
        parser.finish();
        if (complete) return;
      } catch (e) {
        if (sinkError) throw new PacsError('bad-response', `${what}: the frame's receiver failed`);
        if (e instanceof PacsError) throw e;
        throw failed(e);
      } finally {
        // A no-op after a complete read (the connection goes back to the pool); frees the socket after an error.
        res.destroy();
      }
      throw new PacsError('bad-response', `${what}: empty multipart response`);
    }).catch((e: unknown) => {
      throw sinkError ? sinkError.error : e;
    });
  }
}
