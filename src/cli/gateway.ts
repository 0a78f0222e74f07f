import type { Server } from 'node:http';
import type { Redis } from 'ioredis';
import { type Config, requireApiToken } from '../config/index.js';
import { DicomWebClient } from '../dicomweb/client.js';
import { type DimseReceiver, startDimseReceiver } from '../dimse-receive/receiver.js';
import { type MllpServer, startMllpServer } from '../hl7/mllp-server.js';
import { createApp } from '../http/app.js';
import { JobStateStore } from '../jobs/job-state.js';
import { createScreeningQueue, type ScreeningQueue } from '../jobs/queue.js';
import { studyHolds } from '../jobs/study-holds.js';
import type { Logger } from '../observability/log.js';
import { MetricsRecorder, registerRecorder } from '../observability/recorder.js';
import { Intake } from '../orders/intake.js';
import { loadMappings } from '../orders/mappings.js';
import { OrderStore } from '../orders/store.js';
import { connectRedis, waitReady } from '../redis/connection.js';
import { persistenceProblem, type RedisPersistence, RedisPersistenceError, redisPersistence } from '../redis/persistence.js';

export interface Gateway {
  mllp: MllpServer;
  httpPort: number;
  redis: Redis;
  queue: ScreeningQueue;
  store: OrderStore;
  intake: Intake;
  /** The DIMSE C-STORE receiver, when CTGATE_DIMSE_LISTEN_PORT is set. */
  dimse?: DimseReceiver;
  /** Re-reads the mappings file; on error keeps the current mappings and throws MappingsError. */
  reloadMappings(): void;
  stop(): Promise<void>;
}

/**
 * Starts the MLLP listener and the HTTP API against Redis. Redis may be down at start: intake NAKs until it returns.
 * With CTGATE_REDIS_REQUIRE_AOF (the default) a Redis that answers but does not persist (AOF off) stops the start
 * with RedisPersistenceError; one that comes back without AOF later (restarted with other settings) gets every
 * order NAKed (AE/CE) until it persists again.
 */
export async function startGateway(config: Config, log: Logger): Promise<Gateway> {
  const apiToken = requireApiToken(config);
  let mappings = loadMappings(config.mappingsFile);
  const reloadMappings = () => {
    mappings = loadMappings(config.mappingsFile);
    log.info('mappings.reloaded', { file: config.mappingsFile });
  };
  const redis = connectRedis(config.redisUrl, config.redisTimeoutMs);
  redis.on('error', (e: Error) => log.debug('redis.error', { error: e.message }));
  // Whether Redis persists, asked again each time the connection is (re)established: a Redis restarted in between
  // may have come back with other settings. Only the latest check counts.
  let persistence: RedisPersistence = { aof: null, error: 'not checked yet' };
  let checking: Promise<RedisPersistence> | undefined;
  let checks = 0;
  const checkPersistence = (): Promise<RedisPersistence> => {
    const mine = ++checks;
    persistence = { aof: null, error: 'being checked' };
    checking = redisPersistence(redis).then((p) => {
      if (mine !== checks) return p;
      persistence = p;
      const problem = persistenceProblem(p);
      if (!problem) log.info('redis.persistence', { aof: true, via: p.via, fsync: p.fsync });
      else if (config.redisRequireAof) log.error('redis.not-persistent', { problem, note: 'orders are NAKed (AE/CE) until Redis persists' });
      else log.warn('redis.not-persistent', { problem, note: 'CTGATE_REDIS_REQUIRE_AOF=false: orders are acknowledged anyway' });
      return p;
    });
    return checking;
  };
  let redisUp = false;
  redis.on('ready', () => {
    if (!redisUp) log.info('redis.up', {});
    redisUp = true;
    void checkPersistence();
  });
  redis.on('close', () => {
    if (redisUp) log.warn('redis.down', {});
    redisUp = false;
  });
  if (await waitReady(redis, 3000)) {
    const p = await (checking ?? checkPersistence());
    if (config.redisRequireAof && persistenceProblem(p)) {
      redis.disconnect();
      throw new RedisPersistenceError(p);
    }
  } else log.warn('redis.unavailable-at-start', { note: 'orders are NAKed (AE/CE) until Redis answers' });
  const notDurable = (): string | null => {
    if (!config.redisRequireAof || persistence.aof === true) return null;
    return persistence.aof === false
      ? 'Redis does not persist (appendonly no); message not stored, please resend'
      : 'Redis persistence not verified yet; message not stored, please resend';
  };
  const queue = createScreeningQueue(redis, config.queueName, config.redisPrefix);
  // Order counters: in memory, added to Redis about once a second (shared by every gateway process; /metrics reads them).
  const metrics = registerRecorder(
    redis,
    new MetricsRecorder(redis, config.redisPrefix, { onError: (e) => log.debug('metrics.flush-failed', { error: e.message }) }).start(),
  );
  const store = new OrderStore(redis, config.redisPrefix, { dedupeDays: config.dedupeTtlDays, retentionDays: config.messageRetentionDays });
  const intake = new Intake({
    store,
    queue,
    mappings: () => mappings,
    log,
    appName: config.appName,
    facilityName: config.facilityName,
    metrics,
    quoteValues: config.hl7ReasonValues,
    notDurable,
  });
  const mllp = await startMllpServer(
    config.mllp,
    {
      message: async (data, peer) => (await intake.handle(data, peer)).ack,
      oversized: async (head, size, peer) => (await intake.handleOversized(head, size, config.mllp.maxMessageBytes, peer)).ack,
    },
    log,
    metrics,
  );
  const states = new JobStateStore(redis, config.redisPrefix, config.messageRetentionDays);
  const pacs = config.pacs ? new DicomWebClient({ url: config.pacs.url, auth: config.pacs.auth, timeoutMs: config.pacs.timeoutMs, retries: 2 }) : undefined;
  const app = createApp({ config, states, pacs, apiToken, redis, queue, store, intake, log, reloadMappings });
  // Behind a reverse proxy (CTGATE_TRUST_PROXY): the client address is the last X-Forwarded-For hop, the one the
  // proxy itself appended; never trusted otherwise (anyone could pick the address the sign-in limits count).
  app.proxy = config.trustProxy;
  app.maxIpsCount = 1;
  const http: Server = await new Promise((resolve, reject) => {
    const s = app.listen(config.httpPort, config.httpHost, () => resolve(s));
    s.once('error', reject);
  });
  // A request must arrive whole within CTGATE_HTTP_REQUEST_TIMEOUT_MS (default 30 min: a large STOW-RS through the
  // DICOMweb proxy over a hospital link can take long), its headers within CTGATE_HTTP_HEADERS_TIMEOUT_MS; at most
  // CTGATE_HTTP_MAX_CONNECTIONS connections are open at once. A request refused before its body was read (401, 403,
  // 413, 429) has its connection closed once answered (auth-limits.ts refuseAndClose), whatever these say.
  http.requestTimeout = config.httpServer.requestTimeoutMs;
  http.headersTimeout = config.httpServer.headersTimeoutMs;
  http.maxConnections = config.httpServer.maxConnections;
  const httpPort = (http.address() as { port: number }).port;
  log.info('http.listening', { host: config.httpHost, port: httpPort });
  // Images pushed by C-STORE land in the receive folder; any process (a worker too) can index that folder. Retention
  // removes an expired study only when no unfinished job uses it (found it, names it, or waits for its accession).
  const dimse = config.dimseReceive ? await startDimseReceiver(config.dimseReceive, log, { holds: studyHolds(queue, states) }) : undefined;
  return {
    dimse,
    mllp,
    httpPort,
    redis,
    queue,
    store,
    intake,
    reloadMappings,
    stop: async () => {
      await dimse?.stop();
      await mllp.close();
      await new Promise<void>((r) => http.close(() => r()));
      await metrics.close();
      await queue.close().catch(() => {});
      redis.disconnect();
    },
  };
}
