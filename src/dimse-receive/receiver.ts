/**
 * ctgate's DIMSE receiver: C-ECHO and C-STORE for hospitals whose PACS or scanners push images. The gate (gate.ts)
 * checks who calls and hands each accepted association to DCMTK's storescp (storescp.ts), which writes every
 * instance to disk before it answers; the study index (study-index.ts) reads what arrived and removes studies past
 * their retention that no job holds.
 *
 * A job uses `index.findStudies({ accessionNumber })` (or `{ studyInstanceUid }`), waits for `stable`, checks the
 * patient against `patient`, picks a series and reads `index.seriesFiles(study, series)` instead of WADO-RS.
 */
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import type { DimseReceiveConfig } from '../config/index.js';
import type { Logger } from '../observability/log.js';
import { type Gate, startGate } from './gate.js';
import { storescpArgs, writeProfile } from './storescp.js';
import { type StudyHolds, StudyIndex } from './study-index.js';

export interface DimseReceiver {
  port: number;
  index: StudyIndex;
  gate: Gate;
  stop(): Promise<void>;
}

export interface ReceiverOptions {
  /** Whether a job holds a study (retention never removes it then). Default: none held. */
  holds?: StudyHolds;
  /** How often the folder is scanned besides after each association (ms). */
  scanMs?: number;
  /** How often retention runs (ms). */
  sweepMs?: number;
}

/**
 * The index of the receive folder for a process that does not receive (a worker): read from disk, rescanned by
 * `scan()`; it never removes anything unless its caller runs `sweep()`, and with `readOnly` it never moves a file to
 * quarantine either (the receiver's own index does that).
 */
export async function openStudyIndex(
  config: Pick<DimseReceiveConfig, 'dir' | 'stableSeconds' | 'retentionHours'>,
  log: Logger,
  opts: { readOnly?: boolean } = {},
): Promise<StudyIndex> {
  const index = new StudyIndex(
    { dir: resolve(config.dir), stableMs: config.stableSeconds * 1000, retentionMs: config.retentionHours * 3600_000, readOnly: opts.readOnly === true },
    log,
  );
  await index.init();
  await index.scan();
  return index;
}

export async function startDimseReceiver(config: DimseReceiveConfig, log: Logger, opts: ReceiverOptions = {}): Promise<DimseReceiver> {
  const dir = resolve(config.dir);
  mkdirSync(dir, { recursive: true });
  const index = new StudyIndex(
    { dir, stableMs: config.stableSeconds * 1000, retentionMs: config.retentionHours * 3600_000, ...(opts.holds ? { holds: opts.holds } : {}) },
    log,
  );
  await index.init();
  // Rebuilt from disk: whatever was received before a restart is indexed again.
  const first = await index.scan();
  log.info('dimse.index-rebuilt', { studies: index.list().length, files: first.added, unreadable: first.unreadable, quarantined: first.quarantined });
  const profileFile = writeProfile(dir, config.accept);
  const scan = () => {
    index.scan().catch((e: Error) => log.error('dimse.scan-failed', { error: e.message }));
  };
  const gate = await startGate(
    {
      host: config.host,
      port: config.port,
      aeTitle: config.aeTitle,
      allowedCallers: config.allowedCallers,
      maxAssociations: config.maxAssociations,
      timeoutS: config.timeoutS,
      ...(config.tls ? { tls: config.tls } : {}),
      storescpArgs: storescpArgs({ aeTitle: config.aeTitle, studiesDir: index.studiesDir, profileFile, timeoutS: config.timeoutS }),
      onAssociationEnd: scan,
    },
    log,
  );
  const scanTimer = setInterval(scan, opts.scanMs ?? 2000);
  let sweeping = false;
  const sweepTimer = setInterval(
    () => {
      if (sweeping) return;
      sweeping = true;
      index
        .scan()
        .then(() => index.sweep())
        .catch((e: Error) => log.error('dimse.retention-failed', { error: e.message }))
        .finally(() => {
          sweeping = false;
        });
    },
    opts.sweepMs ?? 10 * 60_000,
  );
  scanTimer.unref();
  sweepTimer.unref();
  return {
    port: gate.port,
    index,
    gate,
    stop: async () => {
      clearInterval(scanTimer);
      clearInterval(sweepTimer);
      await gate.close();
      await index.scan().catch(() => undefined);
    },
  };
}
