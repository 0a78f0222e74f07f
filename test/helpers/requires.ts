/**
 * The `skip` option of a test that needs what only a full setup has (../shared/data, the trained models, Debian's
 * Python packages, @ohif/app). Outside CI a missing piece skips the test and says why; in CI (CI set, as `.ci/run`
 * sets it) it fails the file loudly instead, so a broken setup never passes as "skipped".
 */
export function unlessPresent(missing: string | false): string | false {
  if (missing && process.env.CI) throw new Error(`required in CI: ${missing}`);
  return missing;
}
