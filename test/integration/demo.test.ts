/**
 * `ctgate demo --once`, as a newcomer runs it (npm run demo -- --once without the set-up): every peer started by
 * the demo itself, three studies through the whole flow, and the JSON summary as the last line.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { DemoSummary } from '../../src/cli/demo.js';
import { deleteKeys, requireRedis } from '../helpers/redis.js';

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
  });
});
