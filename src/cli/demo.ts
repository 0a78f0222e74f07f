/**
 * `ctgate demo [--once]`: the whole flow on one machine, with real peers.
 *
 *   1. starts Orthanc (PACS, DICOMweb), Medplum's FHIR engine and python-hl7's MLLP server (the EMR);
 *   2. starts ctgate: the gateway (MLLP, HTTP page, DICOMweb proxy) and a worker (models);
 *   3. stores a synthetic positive and a synthetic negative chest CT in the PACS, and the real CT of
 *      ../shared/data (TotalSegmentator's example) when it is there;
 *   4. sends their ORM orders with mllp_send and shows the ACKs;
 *   5. waits for every job with a progress display, then prints where to look and a verdict per study.
 *
 * Without --once everything keeps running until Ctrl-C. With --once it stops what it started and prints a JSON
 * summary as its last line; the exit code is 0 only when every study finished.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { loadConfig } from '../config/index.js';
import { readNifti } from '../imaging/nifti.js';
import type { HuVolume } from '../imaging/volume.js';
import { jobIdFor } from '../jobs/queue.js';
import { deleteByPrefix } from '../jobs/redis.js';
import type { ScreeningResult } from '../jobs/screening.js';
import { createLogger } from '../observability/log.js';
import { writeCtSeries } from '../synthetic/dicom-writer.js';
import { generateChestCt, type PhantomKind } from '../synthetic/phantom.js';
import { startGateway } from './gateway.js';
import { LocalFhirServer } from './local-peers/fhir.js';
import { LocalOrthanc } from './local-peers/orthanc.js';
import { startReceiver } from './local-peers/oru-receiver.js';

const execFileP = promisify(execFile);
const SENDER = { application: 'DEMO-EMR', facility: 'GENHOSP' };

interface DemoStudy {
  label: string;
  accession: string;
  placer: string;
  patient: { id: string; family: string; given: string; birthDate: string; sex: 'M' | 'F' };
  volume: HuVolume;
  seed: number;
}

export interface DemoSummary {
  studies: {
    accession: string;
    label: string;
    verdict: string | null;
    probability: number | null;
    diagnosticReport: string | null;
    segSeriesInstanceUid: string | null;
    oruAcked: boolean;
    state: string;
    reason?: string;
  }[];
  elapsedMs: number;
}

function synthetic(kind: PhantomKind, seed: number): HuVolume {
  return generateChestCt({ seed, kind, size: [128, 128, 52], spacing: [2.6, 2.6, 5] }).volume;
}

function realCt(): HuVolume | undefined {
  const dir = process.env.CTGATE_SHARED_DATA ?? resolve('../shared/data');
  const file = join(dir, 'totalseg-ct-small', 'example_ct_sm.nii.gz');
  if (!existsSync(file)) return undefined;
  const n = readNifti(file);
  if (!(n.data instanceof Int16Array)) return undefined;
  return { geometry: n.geometry, data: n.data };
}

const hl7Date = (d: Date) => d.toISOString().replace(/[-:T]/g, '').slice(0, 14);

/** An ORM^O01 for a chest CT (CPT 71250) in the shape EMRs send (see fixtures/hl7/orm-chest-ct.hl7). */
export function demoOrm(s: DemoStudy, controlId: string, now = new Date()): string {
  const t = hl7Date(now);
  return [
    `MSH|^~\\&|${SENDER.application}|${SENDER.facility}|CTGATE|RADIOLOGY|${t}||ORM^O01^ORM_O01|${controlId}|P|2.5.1`,
    `PID|1||${s.patient.id}^^^GENHOSP^MR||${s.patient.family}^${s.patient.given}||${s.patient.birthDate}|${s.patient.sex}`,
    'PV1|1|O|CT1',
    `ORC|NW|${s.placer}^DEMO-EMR|||SC||^^^${t}^^R||${t}|||4411^CHEN^LI^^^DR`,
    `OBR|1|${s.placer}^DEMO-EMR||71250^CT THORAX WO CONTRAST^C4|||${t}||||||||4411^CHEN^LI|||${s.accession}`,
  ].join('\r');
}

interface SpawnedWorker {
  pid: number;
  ready: { models: string[]; provider: string };
  stop(): Promise<void>;
}

/** `ctgate worker` as a child process; resolves when it logs worker.ready (its log lines are JSON on stderr). */
function spawnWorker(env: NodeJS.ProcessEnv): Promise<SpawnedWorker> {
  const child = spawn(process.execPath, ['bin/ctgate.mjs', 'worker'], { env: { ...env, CTGATE_LOG_LEVEL: 'info' }, stdio: ['ignore', 'ignore', 'pipe'] });
  let buf = '';
  let tail = '';
  const ready = { models: [] as string[], provider: '' };
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await new Promise((r) => child.once('exit', r));
    clearTimeout(t);
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`the worker did not start within 60 s: ${tail}`));
    }, 60_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the worker exited (${code}): ${tail}`));
    });
    child.stderr.on('data', (d: Buffer) => {
      buf += d.toString();
      tail = (tail + d.toString()).slice(-2000);
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        nl = buf.indexOf('\n');
        let rec: { event?: string; models?: string[]; provider?: string; level?: string };
        try {
          rec = JSON.parse(line);
        } catch {
          continue;
        }
        if (rec.event === 'models.loaded') Object.assign(ready, { models: rec.models ?? [], provider: rec.provider ?? '' });
        if (rec.event === 'worker.ready') {
          clearTimeout(timer);
          child.removeAllListeners('exit');
          resolve({ pid: child.pid ?? 0, ready, stop });
        }
        if (rec.level === 'error') process.stderr.write(`worker: ${line}\n`);
      }
    });
  });
}

const pct = (p: unknown) => (typeof p === 'object' && p !== null ? (p as { percent?: number; stage?: string }) : {});

export async function runDemo(args: string[]): Promise<number> {
  const once = args.includes('--once');
  const t0 = Date.now();
  const out = (s = '') => process.stdout.write(`${s}\n`);
  const stops: (() => Promise<void>)[] = [];
  const stopAll = async () => {
    for (const stop of stops.reverse()) await stop().catch(() => {});
  };
  const work = mkdtempSync(join(tmpdir(), 'ctgate-demo-'));
  stops.push(async () => rmSync(work, { recursive: true, force: true }));
  try {
    out('ctgate demo — AI chest-CT screening from HL7 order to SEG, FHIR report and ORU (NOT FOR CLINICAL USE)\n');
    out('1. Starting the peers: Orthanc (PACS with DICOMweb), Medplum FHIR engine, python-hl7 MLLP server (the EMR)');
    const orthanc = new LocalOrthanc();
    const fhir = new LocalFhirServer();
    await Promise.all([orthanc.start(), fhir.start()]);
    stops.push(
      () => orthanc.stop(),
      () => fhir.stop(),
    );
    const emr = await startReceiver();
    stops.push(() => emr.stop());
    out(`   PACS ${orthanc.dicomweb}   FHIR ${fhir.url}   EMR MLLP 127.0.0.1:${emr.port}`);

    const token = process.env.CTGATE_API_TOKEN ?? `demo-${randomBytes(12).toString('hex')}`;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      CTGATE_REDIS_PREFIX: process.env.CTGATE_REDIS_PREFIX ?? 'ctgate-demo',
      CTGATE_MLLP_PORT: process.env.CTGATE_MLLP_PORT ?? '0',
      CTGATE_HTTP_PORT: process.env.CTGATE_HTTP_PORT ?? '0',
      CTGATE_API_TOKEN: token,
      CTGATE_PACS_URL: orthanc.dicomweb,
      CTGATE_FHIR_BASE_URL: fhir.url,
      CTGATE_ORU_HOST: '127.0.0.1',
      CTGATE_ORU_PORT: String(emr.port),
      CTGATE_STUDY_POLL_MS: '500',
      CTGATE_STUDY_STABLE_MS: '1500',
      CTGATE_STUDY_SLEEP_MS: '2000',
      CTGATE_LOG_LEVEL: process.env.CTGATE_LOG_LEVEL ?? 'error',
      // The demo uses whatever Redis answers (and deletes its own keys first); a deployment keeps the check on.
      CTGATE_REDIS_REQUIRE_AOF: process.env.CTGATE_REDIS_REQUIRE_AOF ?? 'false',
    };
    const gwConfig = loadConfig(env);
    const log = createLogger(gwConfig.logLevel, gwConfig.logPhi);
    await deleteByPrefix(gwConfig.redisUrl, gwConfig.redisPrefix);
    out('\n2. Starting ctgate: the gateway (MLLP intake, web page, DICOMweb proxy) and a worker (models, SEG, FHIR, ORU)');
    const gw = await startGateway(gwConfig, log);
    stops.push(() => gw.stop());
    const base = `http://127.0.0.1:${gw.httpPort}`;
    // The worker in its own process, as at a site: model runs hold its event loop for seconds, which would
    // otherwise delay the gateway's ACKs.
    const worker = await spawnWorker({ ...env, CTGATE_PUBLIC_URL: base });
    stops.push(() => worker.stop());
    const models = worker.ready;
    out(`   MLLP 127.0.0.1:${gw.mllp.port}   HTTP ${base}   worker pid ${worker.pid}: models ${models.models.join(', ')} on ${models.provider}`);

    out('\n3. Storing the studies in the PACS (STOW-RS)');
    const studies: DemoStudy[] = [
      {
        label: 'synthetic COVID-19 pneumonia',
        accession: 'DEMO-ACC-1',
        placer: 'DEMO-ORD-1',
        patient: { id: 'DEMO-MRN-1', family: 'DEMO', given: 'POSITIVE', birthDate: '19650314', sex: 'F' },
        volume: synthetic('covid', 501),
        seed: 501,
      },
      {
        label: 'synthetic healthy lungs',
        accession: 'DEMO-ACC-2',
        placer: 'DEMO-ORD-2',
        patient: { id: 'DEMO-MRN-2', family: 'DEMO', given: 'NEGATIVE', birthDate: '19720101', sex: 'M' },
        volume: synthetic('healthy', 503),
        seed: 503,
      },
    ];
    const real = realCt();
    if (real) {
      studies.push({
        label: 'real CT (TotalSegmentator example, lung bases only)',
        accession: 'DEMO-ACC-3',
        placer: 'DEMO-ORD-3',
        patient: { id: 'DEMO-MRN-3', family: 'DEMO', given: 'REALCT', birthDate: '19600101', sex: 'M' },
        volume: real,
        seed: 3,
      });
    } else out('   (../shared/data/totalseg-ct-small not found: two studies only)');
    const pacs = orthanc.client();
    for (const s of studies) {
      const series = writeCtSeries(s.volume, {
        seed: s.seed,
        accessionNumber: s.accession,
        patientId: s.patient.id,
        patientName: `${s.patient.family}^${s.patient.given}`,
        patientSex: s.patient.sex,
        patientBirthDate: s.patient.birthDate,
        seriesDescription: s.label,
      });
      await pacs.store(series.files.map((f) => f.bytes));
      const [nx, ny, nz] = s.volume.geometry.size;
      out(`   ${s.accession}  ${s.label}: ${nz} slices of ${nx}×${ny}, study ${series.studyInstanceUid}`);
    }

    out('\n4. Sending the orders (ORM^O01) with mllp_send (python-hl7)');
    const ormFile = join(work, 'orders.hl7');
    writeFileSync(ormFile, `${studies.map((s, i) => demoOrm(s, `DEMO${String(i + 1).padStart(4, '0')}`)).join('\r\r')}\r`);
    const { stdout } = await execFileP('/usr/bin/mllp_send', ['--loose', '-p', String(gw.mllp.port), '-f', ormFile, '127.0.0.1'], { timeout: 30_000 });
    for (const ack of stdout.split(/(?=MSH\|)/).filter((a) => a.startsWith('MSH'))) {
      const msa = ack.split(/\r|\n/).find((l) => l.startsWith('MSA')) ?? '';
      out(`   ACK ${msa.split('|').slice(1, 3).join(' for ')}`);
    }

    out('\n5. Waiting for the results');
    const ids = studies.map((s) => jobIdFor(SENDER, s.placer));
    const deadline = Date.now() + Number(process.env.CTGATE_DEMO_TIMEOUT_MS ?? 15 * 60_000);
    const last = new Map<string, string>();
    const states = new Map<string, string>();
    const tty = process.stdout.isTTY === true;
    for (;;) {
      let running = 0;
      const line: string[] = [];
      for (const [i, id] of ids.entries()) {
        const job = await gw.queue.getJob(id);
        const state = job ? await job.getState() : 'missing';
        states.set(id, state);
        const p = pct(job?.progress);
        const text = state === 'completed' || state === 'failed' ? state : `${p.stage ?? state} ${p.percent ?? 0}%`;
        if (state !== 'completed' && state !== 'failed') running++;
        const acc = studies[i]?.accession ?? id;
        line.push(`${acc} ${text}`);
        if (!tty && last.get(id) !== text) out(`   ${acc}: ${text}`);
        last.set(id, text);
      }
      if (tty) process.stdout.write(`\r   ${line.join('   ')}   `);
      if (running === 0 || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    if (tty) out();

    const summary: DemoSummary = { studies: [], elapsedMs: 0 };
    out('\n6. Results');
    for (const [i, id] of ids.entries()) {
      const s = studies[i] as DemoStudy;
      const job = await gw.queue.getJob(id);
      const state = states.get(id) ?? 'missing';
      const r = job?.returnvalue as ScreeningResult | undefined;
      const entry: DemoSummary['studies'][number] = {
        accession: s.accession,
        label: s.label,
        verdict: r?.verdict ?? null,
        probability: r?.probability ?? null,
        diagnosticReport: r?.diagnosticReportId ? `DiagnosticReport/${r.diagnosticReportId}` : null,
        segSeriesInstanceUid: r?.segSeriesInstanceUid ?? null,
        oruAcked: r?.oruAckCode === 'AA' || r?.oruAckCode === 'CA',
        state,
        ...(state === 'failed' ? { reason: job?.failedReason } : {}),
      };
      summary.studies.push(entry);
      const verdict =
        state !== 'completed'
          ? `${state.toUpperCase()}${entry.reason ? `: ${entry.reason}` : ''}`
          : `${(r?.verdict ?? '?').toUpperCase()}${r?.probability != null ? ` (p = ${r.probability.toFixed(3)})` : ''}`;
      out(`   ${s.accession}  ${s.label}: ${verdict}`);
      out(`      page ${base}/jobs/${id}`);
      if (r?.studyInstanceUid) out(`      viewer ${base}/viewer/viewer?StudyInstanceUIDs=${r.studyInstanceUid}`);
      if (entry.diagnosticReport) out(`      FHIR ${fhir.url}/${entry.diagnosticReport}`);
      if (entry.segSeriesInstanceUid) out(`      SEG  series ${entry.segSeriesInstanceUid} (in the PACS, and through ${base}/dicom-web)`);
      else if (r?.skipped['write-seg']) out(`      SEG  none: ${r.skipped['write-seg']}`);
      if (r?.keyImageSeriesInstanceUid) out(`      key images (Secondary Capture) series ${r.keyImageSeriesInstanceUid}`);
      if (r?.srSeriesInstanceUid) out(`      measurements (DICOM SR, TID 1500) series ${r.srSeriesInstanceUid}`);
      out(`      ORU  ${entry.oruAcked ? `delivered to the EMR (ACK ${r?.oruAckCode})` : 'not delivered'}`);
    }
    out(`\n   EMR received ${emr.received().length} ORU^R01 message(s).`);
    out(`   Web page: ${base}/login (token ${token})`);
    out(`   Viewer (OHIF, after the login): ${base}/viewer/ — the studies with our SEG, SR and key images`);
    summary.elapsedMs = Date.now() - t0;
    const allDone = summary.studies.every((s) => s.state === 'completed');
    if (!once) {
      out('\nEverything keeps running; press Ctrl-C to stop.');
      await new Promise<void>((r) => {
        process.once('SIGINT', () => r());
        process.once('SIGTERM', () => r());
      });
    }
    await stopAll();
    if (once) out(JSON.stringify(summary));
    return allDone ? 0 : 1;
  } catch (e) {
    await stopAll();
    throw e;
  }
}
