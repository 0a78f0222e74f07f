/**
 * Fault injection end to end: does every accepted order end in a result or a visible failure, exactly once, while
 * things break? Real peers throughout — a private redis-server with AOF, Orthanc, the Medplum FHIR server,
 * python-hl7's MLLP receiver as the EMR, the gateway (in this process) and `ctgate worker` processes kept running
 * by a supervisor here (a killed one is restarted, as systemd would).
 *
 * Round 1, one order per study (the models run): a SIGKILL of every worker while a job is in wait-for-study,
 * retrieve and analyze in turn, a Redis SIGKILL + restart, and a PACS outage from the moment a job enters
 * write-seg, with a SIGKILL in it. Then, once round 1 has ended, a FHIR outage and an EMR outage, each with one
 * new order per study (sharing round 1's analyses) so that jobs hang in write-fhir and send-oru, and a SIGKILL
 * there. Each outage is the peer SIGSTOPped: it takes connections and never answers. Round 2: a burst of orders
 * (default 1,000) over 4 MLLP connections for the same studies (their analyses are shared), with a worker SIGKILL
 * and a Redis restart in the middle of it. The sender resends on AE or no ACK, as an interface engine does.
 *
 * Printed: orders accepted (AA), results written (DiagnosticReport + ORU), duplicates (ORU MSH-10 seen twice,
 * DiagnosticReports beyond one per order, SEG series beyond one per study), held ORUs (deliveryUnknown: a worker
 * died mid-send), failed jobs (visible dead letters), lost (accepted, with no result and no visible failure), and
 * each fault injected. Not a speed benchmark: its figures are counts, which need no baseline; the one time it
 * prints (how long the burst took to send) is for orientation only. Exits 1 when an order is lost, a result is
 * duplicated without the job saying so (an ORU resent after no ACK is flagged possibleDuplicate, as HL7 expects
 * of a resend) or a job has not ended by the deadline. The local Medplum FHIR peer slows down as it fills (its
 * in-memory store): beyond a few hundred reports its answers outlast the FHIR timeout and the run stalls there.
 *
 *   node --import tsx bench/faults.ts [--orders 1000] [--studies 6] [--workers 2] [--deadline-s 900]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startGateway } from '../src/cli/gateway.js';
import { LocalFhirServer } from '../src/cli/local-peers/fhir.js';
import { freePort, LocalOrthanc } from '../src/cli/local-peers/orthanc.js';
import { startReceiver } from '../src/cli/local-peers/oru-receiver.js';
import { loadConfig } from '../src/config/index.js';
import { jobIdFor } from '../src/domain/job.js';
import { type JobState, JobStateStore, type StageName } from '../src/jobs/job-state.js';
import { silentLogger } from '../src/observability/log.js';
import { writeCtSeries } from '../src/synthetic/dicom-writer.js';
import { generateChestCt } from '../src/synthetic/phantom.js';
import { MllpClient } from '../test/helpers/hl7.js';
import { OwnRedis } from '../test/helpers/redis.js';

const { values: args } = parseArgs({
  options: {
    orders: { type: 'string', default: '1000' },
    studies: { type: 'string', default: '6' },
    workers: { type: 'string', default: '2' },
    'deadline-s': { type: 'string', default: '900' },
  },
});
const ORDERS = Number(args.orders);
const STUDIES = Number(args.studies);
const WORKERS = Number(args.workers);
const DEADLINE = Date.now() + Number(args['deadline-s']) * 1000;
const SENDER = { application: 'FAULT-EMR', facility: 'GENHOSP' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const t0 = Date.now();
const log = (s: string) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${s}`);

const faults: string[] = [];
const fault = (s: string) => {
  faults.push(s);
  log(`FAULT ${s}`);
};

// ---- peers -------------------------------------------------------------------------------------------------
const dataDir = mkdtempSync(join(tmpdir(), 'ctgate-faults-redis-'));
const redis = new OwnRedis(await freePort(), { appendonly: true, dir: dataDir });
await redis.start();
const orthanc = new LocalOrthanc();
const fhir = new LocalFhirServer();
await Promise.all([orthanc.start(), fhir.start()]);
const emr = await startReceiver();
const prefix = `ctgate-faults-${randomBytes(3).toString('hex')}`;
const env: Record<string, string> = {
  CTGATE_REDIS_URL: redis.url,
  CTGATE_REDIS_PREFIX: prefix,
  CTGATE_REDIS_TIMEOUT_MS: '1000',
  CTGATE_MLLP_PORT: '0',
  CTGATE_HTTP_PORT: '0',
  CTGATE_API_TOKEN: `faults-${randomBytes(12).toString('hex')}`,
  CTGATE_PACS_URL: orthanc.dicomweb,
  CTGATE_PACS_TIMEOUT_MS: '4000',
  CTGATE_FHIR_BASE_URL: fhir.url,
  CTGATE_FHIR_TIMEOUT_MS: '30000',
  CTGATE_ORU_HOST: '127.0.0.1',
  CTGATE_ORU_PORT: String(emr.port),
  CTGATE_ORU_RETRIES: '0',
  CTGATE_ORU_CONNECT_TIMEOUT_MS: '1000',
  CTGATE_ORU_ACK_TIMEOUT_MS: '4000',
  CTGATE_STUDY_POLL_MS: '200',
  CTGATE_STUDY_STABLE_MS: '300',
  CTGATE_STUDY_CHECK_MS: '5000',
  CTGATE_STUDY_SLEEP_MS: '500',
  CTGATE_STAGE_TIMEOUT_MS: '300000',
  CTGATE_STAGE_ATTEMPTS: '100',
  CTGATE_STAGE_BACKOFF_MS: '500',
  CTGATE_STAGE_BACKOFF_MAX_MS: '4000',
  CTGATE_WORKER_CONCURRENCY: '2',
  CTGATE_MODEL_THREADS: '1',
  CTGATE_LOG_LEVEL: 'error',
};
const gw = await startGateway(loadConfig(env), silentLogger);
env.CTGATE_PUBLIC_URL = `http://127.0.0.1:${gw.httpPort}`;
const states = new JobStateStore(gw.redis, prefix, 1);

// ---- workers, kept running ---------------------------------------------------------------------------------
let stopping = false;
const workers = new Set<ChildProcess>();
let workerStarts = 0;
function spawnWorker(): void {
  const w = spawn(process.execPath, ['bin/ctgate.mjs', 'worker'], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  workerStarts++;
  let err = '';
  w.stderr?.on('data', (d) => {
    err = (err + d).slice(-2000);
  });
  workers.add(w);
  w.once('exit', (code, signal) => {
    workers.delete(w);
    if (stopping) return;
    if (signal !== 'SIGKILL') log(`worker exited by itself (${code ?? signal}): ${err.trim().split('\n').slice(-3).join(' | ')}`);
    setTimeout(spawnWorker, 300);
  });
}
for (let i = 0; i < WORKERS; i++) spawnWorker();
const killWorkers = (why: string) => {
  fault(`SIGKILL ${workers.size} worker(s) ${why}`);
  for (const w of workers) w.kill('SIGKILL');
};

// ---- studies -----------------------------------------------------------------------------------------------
const studies: { accession: string; studyUid: string; kind: string }[] = [];
for (let k = 0; k < STUDIES; k++) {
  const kind = k % 3 === 2 ? 'healthy' : 'covid';
  const p = generateChestCt({ seed: 7100 + k, kind, size: [192, 192, 64], spacing: [1.8, 1.8, 4] });
  const accession = `ACC-F${k}`;
  // The orders' patient (PID below), so that the patient identity check accepts the study.
  const s = writeCtSeries(p.volume, {
    seed: 7100 + k,
    accessionNumber: accession,
    patientId: 'FAULT-MRN',
    patientName: 'FAULT^PATIENT',
    patientBirthDate: '19650314',
    seriesDescription: `synthetic ${kind}`,
  });
  await orthanc.client().store(s.files.map((f) => f.bytes));
  studies.push({ accession, studyUid: s.studyInstanceUid, kind });
}
log(`peers up; ${STUDIES} studies in the PACS; ${WORKERS} worker processes`);

// ---- the sender (an interface engine: resend on AE or no ACK) -----------------------------------------------
const orm = (placer: string, accession: string, controlId: string) =>
  [
    `MSH|^~\\&|${SENDER.application}|${SENDER.facility}|CTGATE|RADIOLOGY|20261203100000||ORM^O01^ORM_O01|${controlId}|P|2.5.1`,
    'PID|1||FAULT-MRN^^^GENHOSP^MR||FAULT^PATIENT||19650314|F',
    `ORC|NW|${placer}^FAULT|||SC||^^^20261203100000^^R||20261203100000|||4411^CHEN^LI^^^DR`,
    `OBR|1|${placer}^FAULT||71250^CT THORAX WO CONTRAST^C4|||20261203100000||||||||4411^CHEN^LI|||${accession}`,
  ].join('\r');
const accepted = new Map<string, string>(); // placer -> accession
let resends = 0;
let sent = 0;
let rejected = 0;
async function sendOrders(list: { placer: string; accession: string }[], connections: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: connections }, async () => {
      let c: MllpClient | undefined;
      while (next < list.length) {
        const o = list[next++] as { placer: string; accession: string };
        sent++;
        for (let attempt = 1; ; attempt++) {
          try {
            if (!c || c.closed) c = await MllpClient.connect(gw.mllp.port);
            c.send(orm(o.placer, o.accession, `C-${o.placer}-${attempt}`));
            const ack = await c.nextAck(5000);
            if (ack.includes('MSA|AA')) {
              accepted.set(o.placer, o.accession);
              break;
            }
            if (ack.includes('MSA|AR')) {
              rejected++;
              break;
            }
          } catch {
            c?.socket.destroy();
            c = undefined;
          }
          resends++;
          await sleep(Math.min(2000, 100 * attempt));
        }
      }
      c?.socket.destroy();
    }),
  );
}

// ---- fault helpers -----------------------------------------------------------------------------------------
/** Active jobs' checkpoints (empty while Redis is away). */
async function activeStates(): Promise<JobState[]> {
  try {
    const ids = (await gw.queue.getActive()).map((j) => j.id).filter((x): x is string => !!x);
    return (await states.getMany(ids)).filter((s): s is JobState => !!s);
  } catch {
    return [];
  }
}
async function waitForStage(stage: StageName, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if ((await activeStates()).some((s) => s.stage === stage)) return true;
    await sleep(5);
  }
  return false;
}
async function restartRedis(why: string): Promise<void> {
  fault(`Redis SIGKILL + restart (AOF) ${why}`);
  await redis.stop();
  await sleep(3000);
  await redis.start();
}
/**
 * A peer outage with a worker SIGKILL in the stage that talks to it: `when` 'now' stops the peer at once and sends
 * `orders` (one per study) so that jobs come to the stage and hang there; 'on-entry' stops it as a job enters the
 * stage (for write-seg, which only a job with a new analysis reaches).
 */
const outage = async (peer: string, signal: (s: NodeJS.Signals) => void, stage: StageName, ms: number, when: 'now' | 'on-entry', round: string) => {
  if (when === 'on-entry' && !(await waitForStage(stage, 120_000))) log(`  no job was seen entering ${stage}`);
  const start = Date.now();
  signal('SIGSTOP');
  fault(`${peer} outage (SIGSTOP: connections taken, never answered) for ${ms / 1000} s`);
  if (when === 'now')
    void sendOrders(
      studies.map((s, k) => ({ placer: `${round}-${k}`, accession: s.accession })),
      1,
    );
  if (await waitForStage(stage, ms - 1000)) killWorkers(`with a job in ${stage}, during the ${peer} outage`);
  else log(`  no job in ${stage} during the ${peer} outage: no kill for that stage`);
  await sleep(Math.max(0, ms - (Date.now() - start)));
  signal('SIGCONT');
  log(`  ${peer} back`);
};

// ---- round 1: one order per study, a kill in every stage ------------------------------------------------------
const round1 = studies.map((s, k) => ({ placer: `R1-${k}`, accession: s.accession }));
await sendOrders(round1, 2);
log(`round 1: ${accepted.size} orders accepted`);
for (const stage of ['wait-for-study', 'retrieve', 'analyze'] as const) {
  if (await waitForStage(stage, 120_000)) killWorkers(`with a job in ${stage}`);
  else log(`no job seen in ${stage}: no kill for that stage`);
  await sleep(1500);
}
await restartRedis('with jobs in flight');
await outage('PACS', (s) => orthanc.signal(s), 'write-seg', 15_000, 'on-entry', 'R1p');
// The FHIR and EMR outages come with new orders of the same studies, which share round 1's analyses: let those end.
const round1Ids = round1.map((o) => jobIdFor(SENDER, o.placer));
for (const end = Date.now() + 600_000; Date.now() < end; await sleep(1000)) {
  const st = await Promise.all(round1Ids.map((id) => gw.queue.getJobState(id).catch(() => 'unknown')));
  if (st.every((x) => x === 'completed' || x === 'failed')) break;
}
log('round 1 jobs ended');
await outage('FHIR server', (s) => fhir.signal(s), 'write-fhir', 15_000, 'now', 'R1f');
await outage('EMR (ORU receiver)', (s) => emr.signal(s), 'send-oru', 15_000, 'now', 'R1e');

// ---- round 2: the burst ---------------------------------------------------------------------------------------
const burst = Array.from({ length: ORDERS }, (_, i) => ({ placer: `R2-${i}`, accession: (studies[i % STUDIES] as { accession: string }).accession }));
// Shared analyses run no model: two workers of four jobs each for the burst (restarted workers take this).
env.CTGATE_WORKER_CONCURRENCY = '4';
const burstStart = Date.now();
const sending = sendOrders(burst, 4);
await sleep(1500);
killWorkers('during the burst');
await sleep(3000);
await restartRedis('during the burst');
await sending;
log(`round 2: burst of ${ORDERS} sent in ${((Date.now() - burstStart) / 1000).toFixed(1)} s; ${accepted.size} accepted in all, ${resends} resends`);

// ---- wait for every accepted order to end ----------------------------------------------------------------------
const jobIds = new Map([...accepted.keys()].map((p) => [jobIdFor(SENDER, p), p]));
let last = 0;
let finals: Map<string, string> = new Map();
for (;;) {
  finals = new Map();
  try {
    for (const id of jobIds.keys()) {
      const j = await gw.queue.getJob(id);
      finals.set(id, j ? await j.getState() : 'missing');
    }
  } catch {
    await sleep(1000);
    continue;
  }
  const done = [...finals.values()].filter((s) => s === 'completed' || s === 'failed').length;
  if (done === jobIds.size || Date.now() > DEADLINE) break;
  if (Date.now() - last > 15_000) {
    last = Date.now();
    log(`  ${done}/${jobIds.size} jobs ended`);
  }
  await sleep(1000);
}

// ---- count -------------------------------------------------------------------------------------------------------
const counts = { completed: 0, failed: 0, notEnded: 0, missing: 0, withResults: 0, heldOru: 0, shared: 0, analysed: 0, reports: 0 };
const failures: string[] = [];
for (const [id, st] of finals) {
  const fh = (await states.get(id))?.outputs['write-fhir'];
  if (fh && 'diagnosticReportId' in fh) counts.reports++;
  if (st === 'missing') counts.missing++;
  else if (st === 'failed') {
    counts.failed++;
    failures.push((await states.get(id))?.lastError?.message ?? (await gw.queue.getJob(id))?.failedReason ?? '?');
  } else if (st !== 'completed') counts.notEnded++;
  else {
    counts.completed++;
    const s = await states.get(id);
    const f = s?.outputs['write-fhir'];
    const o = s?.outputs['send-oru'];
    if (f && 'diagnosticReportId' in f && o && 'ackCode' in o) {
      if (o.ackCode === 'AA') counts.withResults++;
      else if (o.deliveryUnknown) counts.heldOru++;
    }
    if (s?.outputs.analyze?.reusedFrom) counts.shared++;
    else counts.analysed++;
  }
}
const orus = emr.received().map((b) => b.toString('utf8'));
const controlIds = orus.map((m) => m.split('\r')[0]?.split('|')[9] ?? '');
const oruDuplicates = controlIds.length - new Set(controlIds).size;
const dupIds = new Set(controlIds.filter((c, i) => controlIds.indexOf(c) !== i));
// Held ORUs: the receiver got them (it was only paused), so they count as delivered when their MSH-10 is there.
const delivered = new Set(controlIds);
// A duplicate the job owns up to: resent with the same MSH-10 after a send that got no ACK (possibleDuplicate).
let flaggedDuplicates = 0;
for (const [id] of finals) {
  const o = (await states.get(id))?.outputs['send-oru'];
  if (o && 'controlId' in o && o.possibleDuplicate && dupIds.has(o.controlId)) flaggedDuplicates += controlIds.filter((c) => c === o.controlId).length - 1;
}
let heldButDelivered = 0;
for (const [id] of finals) {
  const o = (await states.get(id))?.outputs['send-oru'];
  if (o && 'deliveryUnknown' in o && o.deliveryUnknown && delivered.has(o.controlId)) heldButDelivered++;
}
const reports = (await fetch(`${fhir.url}/DiagnosticReport?_count=0&_total=accurate`, { signal: AbortSignal.timeout(120_000) })
  .then((r) => r.json())
  .catch(() => ({}))) as { total?: number };
let segDuplicates = 0;
for (const s of studies) {
  const n = (await orthanc.client().searchSeries(s.studyUid, { Modality: 'SEG' })).length;
  if (n > 1) segDuplicates += n - 1;
}
// Not ended by the deadline is counted apart: those jobs are still in the queue, each with its checkpoint.
const lost = accepted.size - counts.completed - counts.failed - counts.notEnded;
const reportDuplicates = Math.max(0, (reports.total ?? 0) - counts.reports);

console.log('\nfault injection, end to end');
console.log(`  orders sent                 ${sent} (${resends} resends after AE / no ACK, ${rejected} AR)`);
console.log(`  orders accepted (AA)        ${accepted.size}`);
console.log(
  `  results written             ${counts.withResults + counts.heldOru} (report + ORU ACKed AA: ${counts.withResults}; ORU held, deliveryUnknown: ${counts.heldOru}, of which the EMR has ${heldButDelivered})`,
);
console.log(`  analyses run / shared       ${counts.analysed} / ${counts.shared}`);
console.log(`  failed (visible, retryable) ${counts.failed}${failures.length ? `: ${[...new Set(failures)].slice(0, 3).join(' | ')}` : ''}`);
console.log(`  not ended by the deadline   ${counts.notEnded}`);
console.log(`  lost                        ${lost} (no job: ${counts.missing})`);
console.log(
  `  duplicates                  ORU ${oruDuplicates} (MSH-10 seen twice of ${orus.length} received; ${flaggedDuplicates} of them resent after no ACK and flagged possibleDuplicate), DiagnosticReport ${reportDuplicates} (${reports.total ?? '?'} stored), SEG ${segDuplicates}`,
);
console.log(`  faults injected             ${faults.length}; worker processes started ${workerStarts}`);
for (const f of faults) console.log(`    - ${f}`);
// Where a duplicate came from: the job's checkpoint as it ended.
for (const [id] of finals) {
  const s = await states.get(id);
  const o = s?.outputs['send-oru'];
  if (o && 'controlId' in o && dupIds.has(o.controlId)) {
    const j = await gw.queue.getJob(id);
    console.log(
      `  duplicate ORU ${o.controlId}: stage attempts ${JSON.stringify(s?.attempts)}, ackCode ${o.ackCode}, ORU sends ${o.attempts}, possibleDuplicate ${o.possibleDuplicate ?? false}, BullMQ stalls ${j?.stalledCounter ?? '?'}`,
    );
  }
}

stopping = true;
for (const w of workers) w.kill('SIGKILL');
await gw.stop();
await emr.stop();
await Promise.all([orthanc.stop(), fhir.stop(), redis.stop()]);
rmSync(dataDir, { recursive: true, force: true });
process.exit(lost === 0 && oruDuplicates === flaggedDuplicates && reportDuplicates === 0 && segDuplicates === 0 && counts.notEnded === 0 ? 0 : 1);
