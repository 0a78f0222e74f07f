/**
 * DIMSE through DCMTK's own programs (`echoscu`, `storescu`, `findscu` in find.ts; Debian package dcmtk), run as supervised child
 * processes: ctgate never speaks DIMSE itself. Each call is one association with DCMTK's network timeouts
 * (-to connect, -ta ACSE, -td DIMSE) and a hard kill past them. Their verbose output is parsed into an outcome:
 * success, a refusal by the peer (association rejected, or a C-STORE failure status) or a network failure.
 *
 * Messages name the peer ('pacs-dimse'), the cause and DICOM status codes only: never a host, a file name or a
 * patient attribute, so they are safe in job records, pages and logs.
 */
import { spawn } from 'node:child_process';
import type { Socket } from 'node:net';

/** A DICOM peer (SCP) ctgate associates with. */
export interface DimsePeer {
  host: string;
  port: number;
  /** The peer's AE title (Called AE). */
  calledAe: string;
  /** ctgate's AE title (Calling AE). */
  callingAe: string;
  /** Connect, ACSE and DIMSE timeouts, each (seconds). */
  timeoutS: number;
  /** DICOM TLS (storescu/echoscu +tls / +tla): a CA file to trust, and optionally a client certificate and key. */
  tls?: { caFile: string; certFile?: string; keyFile?: string };
  /** The peer's name in messages (default pacs-dimse, the results' C-STORE destination). */
  label?: string;
}

export type DimseErrorKind = 'network' | 'rejected' | 'refused' | 'usage';

/** A DIMSE failure; `retryable` tells the stage runner whether another attempt can help. */
export class DimseError extends Error {
  constructor(
    readonly kind: DimseErrorKind,
    message: string,
    readonly retryable: boolean,
    /** A C-STORE failure status (e.g. 0xa700), when the peer answered with one. */
    readonly status?: number,
  ) {
    super(message);
    this.name = 'DimseError';
  }
}

export const DIMSE_PEER = 'pacs-dimse';

/** AE title rules (PS3.5 VR AE): 1–16 characters of the default repertoire, no backslash, no control characters. */
export function aeTitleProblem(ae: string): string | undefined {
  const t = ae.trim();
  if (t.length < 1 || t.length > 16) return 'an AE title of 1 to 16 characters';
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the control characters are what is refused
  if (/[\\\u0000-\u001f\u007f-\uffff]/.test(t)) return 'an AE title without backslash, control or non-ASCII characters';
  return undefined;
}

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
  ms: number;
  spawnError?: NodeJS.ErrnoException;
}

/**
 * DCMTK 3.6.7 leaves Nagle's algorithm on unless TCP_NODELAY=1 is in its environment: every small PDU then waits
 * for a delayed ACK (bench:dimse measured 13.8 s against 0.3 s for one 300-slice series).
 */
const dcmtkEnv = (): NodeJS.ProcessEnv => ({ ...process.env, TCP_NODELAY: '1' });

export function runTool(program: string, args: string[], killAfterMs: number): Promise<Run> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    let out = '';
    let done = false;
    const child = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'], env: dcmtkEnv() });
    const add = (d: Buffer) => {
      // Verbose output of one association is small; keep a bounded tail anyway.
      out = (out + d.toString('utf8')).slice(-200_000);
    };
    child.stdout.on('data', add);
    child.stderr.on('data', add);
    const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    const finish = (r: Omit<Run, 'ms' | 'out'>) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ ...r, out, ms: Math.round(performance.now() - t0) });
    };
    child.on('error', (e: NodeJS.ErrnoException) => finish({ code: null, signal: null, spawnError: e }));
    child.on('close', (code, signal) => finish({ code, signal }));
  });
}

export function commonArgs(peer: DimsePeer): string[] {
  const t = String(peer.timeoutS);
  const args = ['-v', '-aet', peer.callingAe, '-aec', peer.calledAe, '-to', t, '-ta', t];
  if (peer.tls) {
    if (peer.tls.certFile && peer.tls.keyFile) args.push('+tls', peer.tls.keyFile, peer.tls.certFile);
    else args.push('+tla');
    args.push('+cf', peer.tls.caFile);
  }
  return args;
}

/**
 * The association-level failure in DCMTK's output, if any: a rejection (with its result and reason), or a network
 * failure (refused, unknown host, timeout, abort).
 */
export function associationFailure(out: string, what: string, peerName: string): DimseError | undefined {
  if (/Association Rejected/.test(out)) {
    const result = /Result:\s*([^\n,]+)/.exec(out)?.[1]?.trim() ?? 'rejected';
    const reason = /Reason:\s*([^\n]+)/.exec(out)?.[1]?.trim() ?? 'no reason given';
    return new DimseError('rejected', `${peerName} rejected the association for ${what}: ${reason} (${result})`, /Transient/i.test(result));
  }
  const failed = /Association Request Failed:\s*([^\n]+)/.exec(out)?.[1];
  if (failed) return new DimseError('network', `${peerName} unreachable: ${networkCause(failed)}`, true);
  if (/Association Aborted|Peer aborted Association|Peer Aborted/i.test(out))
    return new DimseError('network', `${peerName} aborted the association during ${what}`, true);
  return undefined;
}

/** DCMTK's words for a connection failure, without the host name it may quote. */
function networkCause(line: string): string {
  const code = /(0006:0[0-9a-f]{3})/i.exec(line)?.[1] ?? '';
  if (/Connection refused/i.test(line)) return `connection refused (${code})`;
  if (/unknown host/i.test(line)) return `host name not found (${code})`;
  if (/timeout|timed out/i.test(line)) return `no answer in time (${code})`;
  if (/unreachable/i.test(line)) return `host unreachable (${code})`;
  return `network error (${code || 'no code given'})`;
}

export interface EchoResult {
  ok: boolean;
  ms: number;
  error?: DimseError;
}

/** C-ECHO (verification) with echoscu. Never throws for a peer's failure: `error` says what happened. */
export async function echo(peer: DimsePeer): Promise<EchoResult> {
  const args = [...commonArgs(peer), '-td', String(peer.timeoutS), peer.host, String(peer.port)];
  const r = await runTool('echoscu', args, (peer.timeoutS * 3 + 5) * 1000);
  if (r.spawnError) return { ok: false, ms: r.ms, error: new DimseError('usage', `echoscu could not run (install dcmtk): ${r.spawnError.code}`, false) };
  if (r.code === 0) return { ok: true, ms: r.ms };
  const name = peer.label ?? DIMSE_PEER;
  const assoc = associationFailure(r.out, 'C-ECHO', name);
  if (assoc) return { ok: false, ms: r.ms, error: assoc };
  if (r.signal) return { ok: false, ms: r.ms, error: new DimseError('network', `${name} did not answer in time (C-ECHO killed)`, true) };
  const last = r.out.trim().split('\n').pop() ?? '';
  return { ok: false, ms: r.ms, error: new DimseError('network', `C-ECHO failed: ${scrub(last)}`, true) };
}

/** A line of DCMTK's output with paths and host names taken out. */
export function scrub(line: string): string {
  return line
    .replace(/^[A-Z]:\s*/, '')
    .replace(/\S*\/\S*/g, '<path>')
    .slice(0, 160);
}

export interface StoreStatus {
  /** Index in the files given. */
  index: number;
  /** DCMTK's words for the C-STORE response status, e.g. "Success", "Warning: CoercionOfDataElements". */
  status: string;
}

/**
 * C-STORE of Part 10 files in one association with storescu (-R: it proposes only the SOP classes and transfer
 * syntaxes of the files, so SEG, SR and KOS get a presentation context). Returns each file's response status;
 * throws DimseError for a rejected association, a network failure or a failure status (which halts the send).
 * `what` names the objects in messages (e.g. "SEG").
 */
export async function storeFiles(peer: DimsePeer, files: string[], what: string): Promise<StoreStatus[]> {
  if (files.length === 0) return [];
  const args = [...commonArgs(peer), '-td', String(peer.timeoutS), '-R', peer.host, String(peer.port), ...files];
  const r = await runTool('storescu', args, (peer.timeoutS * (3 + files.length) + 10) * 1000);
  if (r.spawnError) throw new DimseError('usage', `storescu could not run (install dcmtk): ${r.spawnError.code}`, false);
  const name = peer.label ?? DIMSE_PEER;
  const statuses: StoreStatus[] = [];
  let current = -1;
  for (const line of r.out.split('\n')) {
    const sending = /Sending file:\s*(.+)$/.exec(line);
    if (sending) current = files.indexOf(sending[1]?.trim() ?? '');
    const rsp = /Received Store Response \(([^)]*)\)/.exec(line);
    if (rsp && current >= 0) statuses.push({ index: current, status: rsp[1]?.trim() ?? '' });
  }
  const failed = statuses.find((s) => !/^(Success|Warning)/i.test(s.status));
  if (failed) {
    // storescu exits with the high byte of the last failure status (0xa7 for 0xa700); DCMTK names the rest.
    const status = r.code !== null && r.code > 1 && r.code < 256 ? r.code << 8 : undefined;
    const hex = status !== undefined ? `0x${status.toString(16).padStart(4, '0')}` : 'status not known';
    // Out of resources (0xa7xx) may pass (storage freed); a data set the peer cannot understand or that does not
    // match its SOP class (0xa9xx, 0xcxxx) fails again on a resend of the same bytes.
    const retryable = /OutOfResources/i.test(failed.status) || status === 0xa700;
    throw new DimseError('refused', `${name} refused the ${what} instance: C-STORE status ${hex} (${failed.status})`, retryable, status);
  }
  const assoc = associationFailure(r.out, `C-STORE of ${what}`, name);
  if (assoc) throw assoc;
  if (r.signal) throw new DimseError('network', `${name} did not answer in time (C-STORE of ${what} killed)`, true);
  const noContext = /No presentation context|No valid Presentation Context|0006:0208/i.test(r.out);
  if (noContext) throw new DimseError('refused', `${name} accepts no presentation context for the ${what} SOP class (0006:0208)`, false);
  if (r.code !== 0 || statuses.length !== files.length) {
    const err = r.out.split('\n').find((l) => /^[EF]:/.test(l)) ?? `exit ${r.code}`;
    throw new DimseError('network', `C-STORE of ${what} to ${name} failed: ${scrub(err)}`, true);
  }
  return statuses;
}

/** A DCMTK program running with a socket as its stdin and stdout (inetd mode: `storescp -id`). */
export interface SocketTool {
  /** Settles when the program exits (its stderr tail in `out`); never rejects. */
  done: Promise<Run>;
  kill(signal?: NodeJS.Signals): void;
}

/**
 * Runs `program` on a connected socket, the way inetd would (DCMTK's `-id`): the socket's descriptor becomes the
 * child's stdin and stdout, stderr is collected like runTool's output. The caller should not read the socket
 * (create it paused) and may close its own copy once this returns. Killed past `killAfterMs`.
 */
export function runToolOnSocket(program: string, args: string[], socket: Socket, killAfterMs: number): SocketTool {
  const t0 = performance.now();
  let out = '';
  // Without TCP_NODELAY: on the Unix socket it is handed, DCMTK's setsockopt(TCP_NODELAY) fails and storescp -id
  // ends the association at once (the gate already turns Nagle off on its TCP side).
  const child = spawn(program, args, { stdio: [socket, socket, 'pipe'] });
  child.stderr?.on('data', (d: Buffer) => {
    out = (out + d.toString('utf8')).slice(-20_000);
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
  const done = new Promise<Run>((resolve) => {
    let settled = false;
    const finish = (r: Omit<Run, 'ms' | 'out'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ...r, out, ms: Math.round(performance.now() - t0) });
    };
    child.on('error', (e: NodeJS.ErrnoException) => finish({ code: null, signal: null, spawnError: e }));
    child.on('close', (code, signal) => finish({ code, signal }));
  });
  return {
    done,
    kill: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
  };
}
