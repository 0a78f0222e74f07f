/**
 * dicom3tools' dciodvfy as a test gate: fails on any "Error" line and on a non-zero exit (it exits 0 on some
 * errors), and loudly when dciodvfy is not installed. Returns the report for IOD or warning checks.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

export function assertDciodvfyClean(file: string, iod?: RegExp): string {
  const v = spawnSync('dciodvfy', [file], { encoding: 'utf8' });
  if (v.error) assert.fail(`dciodvfy could not run (install dicom3tools: bash .ci/setup.sh): ${v.error.message}`);
  const report = `${v.stdout}\n${v.stderr}`;
  if (iod) assert.match(report, iod, `dciodvfy did not check ${file} as the expected IOD:\n${report}`);
  const errors = report.split('\n').filter((l) => /^Error/.test(l));
  assert.deepEqual(errors, [], `dciodvfy found errors in ${file}:\n${report}`);
  assert.equal(v.status, 0, `dciodvfy exit ${v.status}:\n${report}`);
  return report;
}
