/**
 * The receiver's listening port. For each connection: the sender's address and the A-ASSOCIATE-RQ's Called and
 * Calling AE titles are checked against the configuration; a stranger gets an A-ASSOCIATE-RJ naming why (calling AE
 * not recognized, called AE not recognized) and the connection closes. An accepted connection is handed to a new
 * storescp (inetd mode) through a private Unix socket, first PDU included, and relayed byte for byte until either
 * side closes: DCMTK negotiates and answers everything from the A-ASSOCIATE-AC on.
 *
 * Never throws out of a connection: a broken peer costs its own connection only. Logs carry AE titles, the outcome
 * and counts, never a patient attribute (the gate never sees data sets).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import type { DimseCaller } from '../config/index.js';
import { runToolOnSocket, type SocketTool } from '../dicom/dcmtk.js';
import type { Logger } from '../observability/log.js';
import { associateRj, MAX_ASSOCIATE_RQ_BYTES, REJECT_REASON, readAssociateRq } from './acse.js';

export interface GateOptions {
  host: string;
  port: number;
  aeTitle: string;
  allowedCallers: DimseCaller[];
  maxAssociations: number;
  /** Seconds a sender has to send its A-ASSOCIATE-RQ. */
  timeoutS: number;
  /** storescp's arguments for one association. */
  storescpArgs: string[];
  /** DICOM TLS on the listening port (ctgate terminates it; storescp behind it sees plain DIMSE). */
  tls?: { certFile: string; keyFile: string; caFile?: string };
  /** Called when an association's storescp exits (the index can look for new files). */
  onAssociationEnd?: () => void;
}

export interface Gate {
  port: number;
  /** Associations in progress. */
  active(): number;
  close(): Promise<void>;
}

/** Whether `caller` (AE title and address) is allowed by one of the entries. */
export function callerAllowed(callers: DimseCaller[], ae: string, address: string): boolean {
  return callers.some((c) => (c.ae === undefined || c.ae === ae) && (c.address === undefined || addressMatches(c.address, address)));
}

function addressMatches(rule: string, address: string): boolean {
  const plain = address.startsWith('::ffff:') ? address.slice(7) : address;
  const [ip, bits] = rule.split('/');
  if (!ip) return false;
  const list = new net.BlockList();
  const family = net.isIP(ip) === 6 ? 'ipv6' : 'ipv4';
  if (bits === undefined) list.addAddress(ip, family);
  else list.addSubnet(ip, Number(bits), family);
  const fam = net.isIP(plain) === 6 ? 'ipv6' : 'ipv4';
  return list.check(plain, fam);
}

function readTlsFile(path: string, key: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new Error(`${key}: cannot read the file (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

export async function startGate(o: GateOptions, log: Logger): Promise<Gate> {
  // Read first: a missing certificate stops the start before anything listens.
  const tlsOptions: tls.TlsOptions | undefined = o.tls
    ? {
        cert: readTlsFile(o.tls.certFile, 'CTGATE_DIMSE_TLS_CERT_FILE'),
        key: readTlsFile(o.tls.keyFile, 'CTGATE_DIMSE_TLS_KEY_FILE'),
        ...(o.tls.caFile ? { ca: readTlsFile(o.tls.caFile, 'CTGATE_DIMSE_TLS_CA_FILE'), requestCert: true, rejectUnauthorized: true } : {}),
        handshakeTimeout: o.timeoutS * 1000,
        minVersion: 'TLSv1.2',
      }
    : undefined;
  const sockDir = mkdtempSync(join(tmpdir(), 'ctgate-scp-'));
  const sockPath = join(sockDir, 'scp.sock');
  const children = new Set<SocketTool>();
  let expected = 0;
  let open = 0;

  // The private side: each connection to it becomes one storescp's stdin/stdout. Only this process connects to it
  // (the folder is 0700, and a connection that no relay announced is closed).
  const inner = net.createServer({ pauseOnConnect: true }, (scpSide) => {
    if (expected === 0) {
      scpSide.destroy();
      return;
    }
    expected--;
    const t0 = Date.now();
    const tool = runToolOnSocket('storescp', o.storescpArgs, scpSide, 6 * 3600 * 1000);
    children.add(tool);
    // storescp holds its own copy of the descriptor now.
    scpSide.destroy();
    void tool.done.then((r) => {
      children.delete(tool);
      if (r.spawnError) log.error('dimse.storescp-failed', { error: `storescp could not run (install dcmtk): ${r.spawnError.code}` });
      else if (r.code !== 0) log.warn('dimse.storescp-exit', { code: r.code, signal: r.signal });
      log.info('dimse.association-ended', { ms: Date.now() - t0 });
      o.onAssociationEnd?.();
    });
  });
  await new Promise<void>((resolve, reject) => {
    inner.once('error', reject);
    inner.listen(sockPath, () => resolve());
  });

  const handle = (sock: net.Socket) => {
    const address = sock.remoteAddress ?? '';
    sock.on('error', () => {});
    // C-STORE responses are small: no Nagle delay on them.
    sock.setNoDelay(true);
    if (open >= o.maxAssociations) {
      log.warn('dimse.association-refused', { reason: 'too many associations', max: o.maxAssociations });
      // rejected-transient, by the service-provider (presentation related function): local limit exceeded (2).
      sock.end(associateRj(2, { transient: true, source: 3 }));
      return;
    }
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => {
      log.warn('dimse.association-refused', { reason: 'no A-ASSOCIATE-RQ in time' });
      sock.destroy();
    }, o.timeoutS * 1000);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const rq = readAssociateRq(buf);
      if (rq.state === 'incomplete') {
        if (buf.length > MAX_ASSOCIATE_RQ_BYTES) sock.destroy();
        return;
      }
      clearTimeout(timer);
      sock.off('data', onData);
      sock.pause();
      if (rq.state === 'invalid') {
        log.warn('dimse.association-refused', { reason: rq.why });
        sock.destroy();
        return;
      }
      if (rq.calledAe !== o.aeTitle) {
        log.warn('dimse.association-rejected', { reason: 'called AE not recognized', calledAe: rq.calledAe, callingAe: rq.callingAe });
        sock.end(associateRj(REJECT_REASON.calledAeNotRecognized));
        return;
      }
      if (!callerAllowed(o.allowedCallers, rq.callingAe, address)) {
        log.warn('dimse.association-rejected', { reason: 'calling AE not recognized', callingAe: rq.callingAe, address });
        sock.end(associateRj(REJECT_REASON.callingAeNotRecognized));
        return;
      }
      relay(sock, buf, rq.callingAe);
    };
    sock.on('data', onData);
    sock.once('close', () => clearTimeout(timer));
  };

  const relay = (outer: net.Socket, first: Buffer, callingAe: string) => {
    open++;
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      open--;
    };
    expected++;
    const up = net.connect(sockPath);
    let connected = false;
    up.on('error', () => {
      if (!connected) expected = Math.max(0, expected - 1);
      outer.destroy();
    });
    outer.on('error', () => up.destroy());
    up.once('connect', () => {
      connected = true;
      up.write(first);
      outer.pipe(up);
      up.pipe(outer);
      outer.resume();
    });
    up.once('close', () => {
      end();
      outer.end();
    });
    outer.once('close', () => {
      end();
      up.end();
    });
    log.info('dimse.association-accepted', { callingAe });
  };

  const server = tlsOptions ? tls.createServer(tlsOptions, handle) : net.createServer(handle);
  // Connections still owing their A-ASSOCIATE-RQ count too (each for at most the timeout).
  server.maxConnections = o.maxAssociations + 16;
  server.on('tlsClientError', (e: NodeJS.ErrnoException) => log.warn('dimse.tls-refused', { error: e.code ?? e.message }));
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(o.port, o.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (e) {
    await new Promise<void>((r) => inner.close(() => r()));
    rmSync(sockDir, { recursive: true, force: true });
    const code = (e as NodeJS.ErrnoException).code ?? 'error';
    throw new Error(`the DIMSE receiver cannot listen on ${o.host}:${o.port} (${code === 'EADDRINUSE' ? 'port in use' : code})`);
  }
  server.on('error', (e) => log.error('dimse.listener-error', { error: e.message }));
  const port = (server.address() as net.AddressInfo).port;
  log.info('dimse.listening', { host: o.host, port, aeTitle: o.aeTitle, tls: Boolean(o.tls) });
  return {
    port,
    active: () => open,
    close: async () => {
      await new Promise<void>((r) => server.close(() => r()));
      // Associations in progress get storescp's own handling of a terminated process (the sender sees an abort;
      // every instance answered with success is on disk already).
      for (const c of children) c.kill('SIGTERM');
      await Promise.all([...children].map((c) => c.done));
      await new Promise<void>((r) => inner.close(() => r()));
      rmSync(sockDir, { recursive: true, force: true });
    },
  };
}
