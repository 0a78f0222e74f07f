/**
 * `ctgate demo --once`, as a newcomer runs it (npm run demo -- --once without the set-up): every peer started by
 * the demo itself, three studies through the whole flow, and the JSON summary as the last line. And what it
 * leaves behind: nothing with patient data (its folders and its Redis keys go when it ends, or at Ctrl-C).
 * With --via-cstore: Orthanc pushes every study to ctgate's DIMSE receiver, which answers C-ECHO and indexes them.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, relative } from 'node:path';
import { describe, it } from 'node:test';
import { Redis } from 'ioredis';
import type { DemoSummary } from '../../src/cli/demo.js';
import { deleteKeys, REDIS_URL, requireRedis } from '../helpers/redis.js';

/** The keys whose names start with `prefix` (SCAN, the glob characters escaped). */
async function keysUnder(prefix: string): Promise<string[]> {
  const r = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  try {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await r.scan(cursor, 'MATCH', `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`, 'COUNT', 1000);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    return keys;
  } finally {
    r.disconnect();
  }
}

/** Every folder is a temporary folder of the demo's own, and is gone. */
function assertFoldersGone(dirs: string[]): void {
  assert.ok(
    dirs.some((d) => /ctgate-demo-/.test(d)),
    `the work folder is listed: ${dirs.join(', ')}`,
  );
  assert.ok(
    dirs.some((d) => /ctgate-orthanc-/.test(d)),
    `the PACS storage is listed: ${dirs.join(', ')}`,
  );
  for (const d of dirs) {
    const rel = relative(tmpdir(), d);
    assert.ok(isAbsolute(d) && rel !== '' && !rel.startsWith('..'), `${d} is under ${tmpdir()}`);
    assert.equal(existsSync(d), false, `${d} was removed`);
  }
}

describe('ctgate demo --once', () => {
  it('takes each study from order to SEG, FHIR report and ORU, and ends with the JSON summary', async () => {
    await requireRedis();
    const prefix = `ctgate-test-demo-${randomBytes(4).toString('hex')}`;
    const child = spawn(process.execPath, ['bin/ctgate.mjs', 'demo', '--once'], {
      env: { ...process.env, CTGATE_REDIS_PREFIX: prefix, CTGATE_DEMO_TIMEOUT_MS: '240000' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    await deleteKeys(prefix);
    assert.equal(code, 0, `${stdout}\n${stderr}`);
    const summary = JSON.parse(stdout.trim().split('\n').pop() as string) as DemoSummary;
    const byAcc = new Map(summary.studies.map((s) => [s.accession, s]));
    const pos = byAcc.get('DEMO-ACC-1');
    assert.equal(pos?.verdict, 'positive');
    assert.match(pos?.diagnosticReport ?? '', /^DiagnosticReport\/[0-9a-f-]{36}$/);
    assert.match(pos?.segSeriesInstanceUid ?? '', /^2\.25\.\d+$/);
    assert.equal(pos?.oruAcked, true);
    const neg = byAcc.get('DEMO-ACC-2');
    assert.equal(neg?.verdict, 'negative');
    assert.equal(neg?.oruAcked, true);
    assert.ok(neg?.diagnosticReport);
    if (existsSync('../shared/data/totalseg-ct-small/example_ct_sm.nii.gz')) {
      // The real CT holds only the lung bases: too little lung to judge, and the result says so.
      assert.equal(byAcc.get('DEMO-ACC-3')?.verdict, 'not-assessable');
    }
    assert.ok(summary.elapsedMs > 0);
    assert.match(stdout, /page http:\/\/127\.0\.0\.1:\d+\/jobs\/ord-[0-9a-f]{32}/);
    assert.match(stdout, /viewer http:\/\/127\.0\.0\.1:\d+\/viewer\/viewer\?StudyInstanceUIDs=[\d.]+/);
    assert.match(stdout, /Viewer \(OHIF, after the login\): http:\/\/127\.0\.0\.1:\d+\/viewer\//);
    assert.doesNotMatch(stdout.split('6. Results')[1] ?? '', /DEMO\^POSITIVE/);

    // Nothing with patient data is left: the folders it wrote to (the EMR's ORUs among them) and its Redis keys.
    const { cleanup } = summary;
    assert.match(cleanup.redisPrefix, /^ctgate-demo-[0-9a-f]{16}$/);
    assert.deepEqual(cleanup.problems, []);
    assert.equal(cleanup.removed, true);
    assert.ok(cleanup.redisKeysDeleted > 0, 'the demo had keys (orders, jobs) and deleted them');
    assert.ok(
      cleanup.dirs.some((d) => d.endsWith('emr-oru')),
      `the EMR's folder is listed: ${cleanup.dirs.join(', ')}`,
    );
    assertFoldersGone(cleanup.dirs);
    assert.deepEqual(await keysUnder(cleanup.redisPrefix), []);
    // A site's prefix in the environment is never the demo's (the demo deletes every key under its own).
    assert.deepEqual(await keysUnder(prefix), []);
  });

  it('--via-cstore: Orthanc sends every study to ctgate by C-STORE; the receiver answers C-ECHO, indexes each study and says which source the analysis read', async () => {
    await requireRedis();
    const child = spawn(process.execPath, ['bin/ctgate.mjs', 'demo', '--once', '--via-cstore'], {
      env: { ...process.env, CTGATE_DEMO_TIMEOUT_MS: '240000' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 0, `${stdout}\n${stderr}`);
    const summary = JSON.parse(stdout.trim().split('\n').pop() as string) as DemoSummary;
    const r = summary.dimseReceive;
    assert.ok(r, 'the summary reports the DIMSE receive');
    assert.equal(r.echoOk, true);
    assert.equal(r.associationsRejected, 0);
    assert.equal(r.quarantined, 0);
    // The C-ECHO, then one association per study.
    assert.equal(r.associationsAccepted, summary.studies.length + 1);
    assert.deepEqual(
      r.studies.map((s) => s.accession),
      summary.studies.map((s) => s.accession),
    );
    for (const s of r.studies) {
      assert.ok(s.sent > 0, `${s.accession}: Orthanc sent its instances`);
      assert.equal(s.failed, 0, s.accession);
      assert.equal(s.indexed, s.sent, `${s.accession}: every instance sent is in ctgate's index`);
      assert.equal(s.indexedAccession, s.accession, `${s.accession}: indexed under its accession`);
      assert.match(s.studyInstanceUid, /^2\.25\.\d+$/);
      assert.equal(s.stable, true, `${s.accession}: stable in the index`);
    }
    assert.ok(['dicomweb', 'received'].includes(r.analysisSource));
    assert.match(stdout, r.analysisSource === 'received' ? /Analysis source: the received copy/ : /Analysis source: DICOMweb/);
    assert.match(stdout, /C-ECHO ORTHANC → CTGATE: ok/);
    // The flow itself is unchanged: the same verdicts, reports and ORUs.
    const byAcc = new Map(summary.studies.map((s) => [s.accession, s]));
    assert.equal(byAcc.get('DEMO-ACC-1')?.verdict, 'positive');
    assert.equal(byAcc.get('DEMO-ACC-2')?.verdict, 'negative');
    assert.ok(summary.studies.every((s) => s.state === 'completed' && s.oruAcked));
    // What the receive section prints carries UIDs, accession numbers and counts, no patient name or ID.
    const section = stdout.split('3b. ')[1]?.split('4. Sending')[0] ?? '';
    assert.match(section, /DEMO-ACC-1: indexed \d+ instance\(s\) in 1 series/);
    assert.doesNotMatch(section, /DEMO\^|DEMO-MRN/);
    // The received copy is patient data: it goes with the demo's folders.
    const { cleanup } = summary;
    assert.deepEqual(cleanup.problems, []);
    assert.ok(
      cleanup.dirs.some((d) => d.endsWith('dimse-receive')),
      `the receive folder is listed: ${cleanup.dirs.join(', ')}`,
    );
    assertFoldersGone(cleanup.dirs);
    assert.deepEqual(await keysUnder(cleanup.redisPrefix), []);
  });

  it('removes its folders and Redis keys when stopped with Ctrl-C (SIGINT) in the middle of the run', async () => {
    await requireRedis();
    const child = spawn(process.execPath, ['bin/ctgate.mjs', 'demo'], {
      env: { ...process.env, CTGATE_DEMO_TIMEOUT_MS: '240000' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let sent = false;
    child.stdout.on('data', (d) => {
      stdout += d;
      // Orders accepted, jobs running: the PACS holds the studies and Redis the orders.
      if (!sent && stdout.includes('5. Waiting for the results')) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.ok(sent, `the demo reached its wait for the results: ${stdout}\n${stderr}`);
    assert.equal(code, 130, `${stdout}\n${stderr}`);
    const m = /Removed the demo's data: (.+) and (\d+) Redis key\(s\) under (ctgate-demo-[0-9a-f]{16})\./.exec(stderr);
    assert.ok(m, `the demo reported what it removed: ${stderr}`);
    const [, dirs = '', deleted = '0', redisPrefix = ''] = m;
    assert.ok(Number(deleted) > 0);
    assertFoldersGone(dirs.split(', '));
    assert.deepEqual(await keysUnder(redisPrefix), []);
  });
});
