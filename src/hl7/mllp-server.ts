import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { MllpConfig } from '../config/index.js';
import type { Logger } from '../observability/log.js';
import { METRICS } from '../observability/metric-names.js';
import { type MetricsSink, noMetrics } from '../observability/recorder.js';
import { MllpDecoder } from './mllp-framing.js';

/** encodeFrame(ack) as one string: the same bytes (VT, the ACK as UTF-8, FS CR), written without copying buffers. */
const frameText = (ack: string) => `\x0b${ack}\x1c\r`;

/** What the listener asks of the application for each frame; returns the reply, or null for none. */
export interface MllpHandler {
  message(data: Buffer, peer: { remoteAddress: string }): Promise<string | null>;
  oversized(head: Buffer, size: number, peer: { remoteAddress: string }): Promise<string | null>;
}

export interface MllpServer {
  /** The port actually bound (useful with port 0). */
  port: number;
  connections(): number;
  close(): Promise<void>;
}

/** Replies waiting to be written per connection before the socket is paused (back-pressure). */
const MAX_IN_FLIGHT = 16;
/** How long close() lets messages being processed finish and their ACKs go out. */
const DRAIN_MS = 5000;

function allowList(ips: string[]): net.BlockList | null {
  if (ips.length === 0) return null;
  const list = new net.BlockList();
  for (const entry of ips) {
    const [addr = '', bits] = entry.split('/');
    const type = addr.includes(':') ? 'ipv6' : 'ipv4';
    if (bits !== undefined) list.addSubnet(addr, Number(bits), type);
    else list.addAddress(addr, type);
  }
  return list;
}

function peerAllowed(list: net.BlockList | null, address: string | undefined): boolean {
  if (!list) return true;
  if (!address) return false;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(address);
  if (mapped?.[1]) return list.check(mapped[1], 'ipv4') || list.check(address, 'ipv6');
  return list.check(address, address.includes(':') ? 'ipv6' : 'ipv4');
}

/**
 * The MLLP listener: each connection decodes frames as bytes arrive and answers them in order, one at a
 * time. A bad connection (garbage, endless frame, dropped socket) only ever affects itself.
 */
export function startMllpServer(cfg: MllpConfig, handler: MllpHandler, log: Logger, metrics: MetricsSink = noMetrics): Promise<MllpServer> {
  const allowed = allowList(cfg.allowIps);
  const sockets = new Set<net.Socket>();
  const chains = new Map<net.Socket, () => Promise<void>>();
  let draining = false;

  const onSocket = (socket: net.Socket) => {
    const remoteAddress = socket.remoteAddress ?? 'unknown';
    if (!peerAllowed(allowed, socket.remoteAddress)) {
      log.warn('mllp.refused', { remote: remoteAddress, reason: 'address not in CTGATE_MLLP_ALLOW_IPS' });
      metrics.inc(METRICS.mllpRefused, { reason: 'allow-list' });
      socket.destroy();
      return;
    }
    if (sockets.size >= cfg.maxConnections) {
      log.warn('mllp.refused', { remote: remoteAddress, reason: `connection cap ${cfg.maxConnections} reached` });
      metrics.inc(METRICS.mllpRefused, { reason: 'connection-cap' });
      socket.destroy();
      return;
    }
    if (draining) {
      socket.destroy();
      return;
    }
    sockets.add(socket);
    const peer = { remoteAddress };
    const decoder = new MllpDecoder(cfg.maxMessageBytes);
    let chain: Promise<void> = Promise.resolve();
    let inFlight = 0;
    let closed = false;
    socket.setNoDelay(true);
    socket.setTimeout(cfg.idleTimeoutMs);
    socket.on('timeout', () => {
      log.info('mllp.idle-close', { remote: remoteAddress, partialFrame: decoder.pending });
      socket.destroy();
    });
    socket.on('error', (e) => log.debug('mllp.socket-error', { remote: remoteAddress, error: e.message }));
    socket.on('close', () => {
      closed = true;
      sockets.delete(socket);
      chains.delete(socket);
    });
    chains.set(socket, () => chain);

    const reply = (work: () => Promise<string | null>) => {
      inFlight++;
      if (inFlight >= MAX_IN_FLIGHT) socket.pause();
      chain = chain
        .then(work)
        .then((ack) => {
          if (ack !== null && !closed) socket.write(frameText(ack));
        })
        .catch((e: unknown) => {
          // The handler answers every failure itself; reaching here is a bug, and the only safe move is to
          // close this connection so the sender resends rather than wait for an ACK that will not come.
          log.error('mllp.handler-failed', { remote: remoteAddress, error: (e as Error).message });
          socket.destroy();
        })
        .finally(() => {
          inFlight--;
          if (inFlight < MAX_IN_FLIGHT && !closed && !draining) socket.resume();
        });
    };

    socket.on('data', (chunk: Buffer) => {
      for (const ev of decoder.push(chunk)) {
        if (ev.type === 'message') reply(() => handler.message(ev.data, peer));
        else if (ev.type === 'oversized') reply(() => handler.oversized(ev.head, ev.size, peer));
        else {
          log.warn('mllp.garbage', { remote: remoteAddress, bytes: ev.bytes, reason: ev.reason });
          metrics.inc(METRICS.mllpGarbage);
        }
      }
    });
  };

  const tlsOn = Boolean(cfg.tlsCertFile && cfg.tlsKeyFile);
  const server: net.Server = tlsOn
    ? tls.createServer(
        {
          cert: readFileSync(cfg.tlsCertFile as string),
          key: readFileSync(cfg.tlsKeyFile as string),
          ca: cfg.tlsCaFile ? readFileSync(cfg.tlsCaFile) : undefined,
          requestCert: cfg.tlsRequireClientCert,
          rejectUnauthorized: cfg.tlsRequireClientCert,
          minVersion: 'TLSv1.2',
        },
        onSocket,
      )
    : net.createServer(onSocket);
  server.on('tlsClientError', (e: Error, s: tls.TLSSocket) => {
    log.warn('mllp.tls-error', { remote: s.remoteAddress, error: e.message });
  });
  server.on('error', (e) => log.error('mllp.server-error', { error: e.message }));

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(cfg.port, cfg.host, () => {
      server.off('error', reject);
      const addr = server.address() as net.AddressInfo;
      log.info('mllp.listening', { host: cfg.host, port: addr.port, tls: tlsOn });
      resolve({
        port: addr.port,
        connections: () => sockets.size,
        close: async () => {
          const stopped = new Promise<void>((done) => server.close(() => done()));
          // Stop reading, let messages already taken finish so their ACKs go out, then close.
          draining = true;
          for (const s of sockets) s.pause();
          const pending = Promise.all([...chains.values()].map((c) => c()));
          await Promise.race([pending, new Promise((r) => setTimeout(r, DRAIN_MS).unref())]);
          for (const s of sockets) s.destroy();
          await stopped;
        },
      });
    });
  });
}
