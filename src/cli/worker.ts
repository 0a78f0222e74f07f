/**
 * `ctgate worker [--gpu]`: runs screening jobs from the queue (wait for the study, retrieve, analyze, write the
 * SEG, the FHIR report and the ORU). Model sessions are opened once per process and follow model installs
 * (ModelRegistry). Stops on SIGTERM/SIGINT after the jobs in hand reach a checkpoint or finish.
 */

import { Redis } from 'ioredis';
import { type Config, ConfigError } from '../config/index.js';
import { DicomWebClient } from '../dicomweb/client.js';
import { openStudyIndex } from '../dimse-receive/receiver.js';
import { loadSeriesRules } from '../imaging/series-selection.js';
import { ModelRegistry } from '../inference/model-registry.js';
import { AnalysisReuseStore } from '../jobs/analysis-reuse.js';
import { JobStateStore } from '../jobs/job-state.js';
import { isJobGoneError } from '../jobs/redis.js';
import { ScreeningRunner } from '../jobs/screening.js';
import { startScreeningWorker } from '../jobs/worker.js';
import { fhirWriter, oruWriter, segWriter } from '../jobs/writers.js';
import type { Logger } from '../observability/log.js';
import { MetricsRecorder, registerRecorder } from '../observability/recorder.js';
import { followMappings } from '../orders/mappings.js';
import { OrderStore } from '../orders/store.js';
import { connectRedis, isRedisConnectionError } from '../redis/connection.js';
import { DicomWebStudySource } from '../study-sources/dicomweb.js';
import { DimseStudySource } from '../study-sources/dimse.js';
import { ReceivedStudySource } from '../study-sources/received.js';
import type { StudySource } from '../study-sources/source.js';

export interface RunningWorker {
  stop(): Promise<void>;
  registry: ModelRegistry;
}

let rejectionsLogged = false;

/**
 * A worker must never die of a job: a rejection nobody handled (a fire-and-forget Redis call of a job, one of
 * BullMQ's own) is logged, and the process keeps running. The jobs' own promises are all handled; this is the net
 * under them. Node's default (exit on an unhandled rejection) would drop every job in hand until their locks expire.
 */
function logUnhandledRejections(log: Logger): void {
  if (rejectionsLogged) return;
  rejectionsLogged = true;
  process.on('unhandledRejection', (reason) => {
    const error = (reason as Error)?.message ?? String(reason);
    const kind = isRedisConnectionError(reason) ? 'redis' : isJobGoneError(reason) ? 'job-gone' : 'other';
    log.error('process.unhandled-rejection', { kind, error });
  });
}

/**
 * The study source of CTGATE_STUDY_SOURCE: the PACS over DICOMweb, the receive folder of ctgate's C-STORE receiver
 * (its index read from disk; this process never moves or removes a received file: the receiver does), or the PACS
 * over C-FIND and C-GET.
 */
async function openStudySource(config: Config, pacs: DicomWebClient, log: Logger): Promise<StudySource> {
  const s = config.worker.studySource;
  if (s.kind === 'received') return new ReceivedStudySource(await openStudyIndex(s, log, { readOnly: true }), log);
  if (s.kind === 'dimse') {
    const peer = { ...s.pacs, label: 'the PACS (DIMSE)' };
    if (s.retrieve === 'get') return new DimseStudySource(peer);
    // C-MOVE lands in the receive folder of ctgate's receiver (the gateway's); read here, never moved or removed.
    const index = await openStudyIndex({ dir: s.receiveDir, stableSeconds: s.stableSeconds, retentionHours: s.retentionHours }, log, { readOnly: true });
    return new DimseStudySource(peer, { move: { destinationAe: s.moveDestinationAe, index } });
  }
  return new DicomWebStudySource(pacs);
}

export async function startWorker(config: Config, log: Logger, opts: { gpu?: boolean } = {}): Promise<RunningWorker> {
  logUnhandledRejections(log);
  const pacsConfig = config.pacs;
  if (!pacsConfig) throw new ConfigError('CTGATE_PACS_URL', 'the DICOMweb base URL of the PACS (a worker reads studies from it)', undefined);
  const w = config.worker;
  const seriesRules = loadSeriesRules(w.seriesRulesFile);
  // The order mappings' patient identity rules (per sender); an edited file applies to the next job, a broken edit is
  // logged and the previous rules stay.
  const mappings = followMappings(config.mappingsFile, (e) => log.error('mappings.reload-failed', { file: config.mappingsFile, problems: e.problems }));
  const providers = opts.gpu ? (['cuda', 'cpu'] as const) : w.modelProviders;
  const registry = new ModelRegistry(w.modelsManifest, { executionProviders: [...providers], intraOpNumThreads: w.modelThreads || undefined });
  const set = await registry.start();
  for (const r of set.models.fallbackReasons) log.warn('models.provider-fallback', { reason: r });
  log.info('models.loaded', { models: set.manifest.modelIds, provider: set.models.executionProvider });

  const pacs = new DicomWebClient({ url: pacsConfig.url, auth: pacsConfig.auth, timeoutMs: pacsConfig.timeoutMs, retries: 2 });
  const studySource = await openStudySource(config, pacs, log);
  const redis = connectRedis(config.redisUrl, config.redisTimeoutMs);
  // Its calls fail while Redis is away (the runner retries them); the event itself is only noise then.
  redis.on('error', (e: Error) => log.debug('redis.error', { error: e.message }));
  // BullMQ's blocking commands need a connection without a per-command timeout or retry limit.
  const bullConnection = new Redis(config.redisUrl, { maxRetriesPerRequest: null });
  bullConnection.on('error', () => {});
  const orders = new OrderStore(redis, config.redisPrefix, { dedupeDays: config.dedupeTtlDays, retentionDays: config.messageRetentionDays });
  const states = new JobStateStore(redis, config.redisPrefix, config.messageRetentionDays);
  // Stage durations, model time, outcomes and peer errors, added to Redis about once a second for the gateway's /metrics.
  const metrics = registerRecorder(
    redis,
    new MetricsRecorder(redis, config.redisPrefix, { onError: (e) => log.debug('metrics.flush-failed', { error: e.message }) }).start(),
  );
  const runner = new ScreeningRunner({
    states,
    orders,
    pacs,
    studySource,
    models: registry,
    seriesRules,
    writers: { seg: segWriter(pacs, config.results), fhir: fhirWriter(config, log), oru: oruWriter(config, log) },
    links: (jobId) => ({ dicomWebBaseUrl: `${config.publicUrl}/dicom-web`, resultPageUrl: `${config.publicUrl}/jobs/${jobId}` }),
    settings: {
      studyWait: {
        pollMs: w.study.pollMs,
        stableMs: w.study.stableMs,
        checkMs: w.study.checkMs,
        sleepMs: w.study.sleepMs,
        deadlineMs: w.study.deadlineMinutes * 60_000,
      },
      stageTimeoutMs: w.stageTimeoutMs,
      stageAttempts: w.stageAttempts,
      backoffMs: w.stageBackoffMs,
      backoffMaxMs: w.stageBackoffMaxMs,
      retrieveConcurrency: w.retrieveConcurrency,
      keySliceCount: 3,
      oruUnconfirmed: config.oru?.unconfirmed ?? 'hold',
    },
    log,
    metrics,
    patientIdentity: (facility) => mappings.current().patientIdentity(facility),
    ...(w.analysisReuse ? { reuse: new AnalysisReuseStore(redis, config.redisPrefix, config.messageRetentionDays) } : {}),
  });
  const worker = startScreeningWorker({
    connection: bullConnection,
    queueName: config.queueName,
    prefix: config.redisPrefix,
    concurrency: w.concurrency,
    lockDurationMs: w.lockMs,
    stalledIntervalMs: w.stalledIntervalMs,
    runner,
    log,
  });
  await worker.waitUntilReady();
  log.info('worker.ready', { concurrency: w.concurrency, queue: config.queueName, studySource: studySource.kind });
  return {
    registry,
    stop: async () => {
      await worker.close();
      await metrics.close();
      await registry.close();
      redis.disconnect();
      bullConnection.disconnect();
    },
  };
}
