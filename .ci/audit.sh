#!/usr/bin/env bash
# Dependency audit for CI: `npm audit --audit-level=high` against package-lock.json.
#   - the registry answers and reports a high or critical advisory: fails (exit 1), listing them;
#   - the registry answers with nothing at that level: passes, with the counts per severity;
#   - the audit endpoint cannot be reached or refuses the request (offline, a proxy or mirror without the audit
#     API, e.g. "405 Method Not Allowed"): says so in a banner and passes (exit 0) — the audit did NOT run;
#   - anything else (no lock file, npm broken): fails.
# CTGATE_AUDIT_LEVEL changes the level (low|moderate|high|critical); CTGATE_AUDIT_REQUIRED=true makes an
# unreachable endpoint fail too. The hand review of the direct dependencies is docs/security-dependencies.md.
set -uo pipefail
cd "$(dirname "$0")/.."

level="${CTGATE_AUDIT_LEVEL:-high}"
json="$(mktemp)"
err="$(mktemp)"
trap 'rm -f "$json" "$err"' EXIT

timeout 180 npm audit --audit-level="$level" --json >"$json" 2>"$err"
rc=$?

node - "$json" "$err" "$rc" "$level" "${CTGATE_AUDIT_REQUIRED:-false}" <<'EOF'
const { readFileSync } = require('node:fs');
const [jsonFile, errFile, rcText, level, required] = process.argv.slice(2);
const rc = Number(rcText);
const stderr = readFileSync(errFile, 'utf8');
let report;
try {
  report = JSON.parse(readFileSync(jsonFile, 'utf8'));
} catch {
  report = undefined;
}
const levels = ['info', 'low', 'moderate', 'high', 'critical'];
const at = levels.indexOf(level);
if (at < 1) {
  console.error(`audit: CTGATE_AUDIT_LEVEL must be low, moderate, high or critical, got ${level}`);
  process.exit(2);
}

const counts = report?.metadata?.vulnerabilities;
if (counts && typeof counts === 'object') {
  const line = levels.map((l) => `${l} ${counts[l] ?? 0}`).join(', ');
  const bad = Object.values(report.vulnerabilities ?? {}).filter((v) => levels.indexOf(v.severity) >= at);
  if (bad.length === 0) {
    console.log(`audit: npm audit ran against the registry: no advisory at ${level} or above (${line}).`);
    process.exit(0);
  }
  console.log(`audit: FAILED: ${bad.length} package(s) with advisories at ${level} or above (${line}):`);
  for (const v of bad) {
    const via = (v.via ?? []).map((x) => (typeof x === 'string' ? `via ${x}` : `${x.title ?? ''} ${x.url ?? ''}`.trim())).join('; ');
    console.log(`  ${v.severity.padEnd(8)} ${v.name} ${v.range ?? ''}${v.isDirect ? ' (direct)' : ''}: ${via}${v.fixAvailable ? ' [fix available: npm audit fix]' : ''}`);
  }
  process.exit(1);
}

// No report: why? An HTTP answer other than a report (405 from a mirror without the audit API, 404, 5xx), a
// network error or a timeout means the endpoint could not be used; anything else is a real failure.
const text = `${report?.message ?? ''} ${report?.error?.summary ?? ''} ${report?.error?.code ?? ''} ${report?.code ?? ''} ${stderr}`;
const status = report?.statusCode;
const network =
  /E(NOTFOUND|AI_AGAIN|CONNREFUSED|CONNRESET|TIMEDOUT|HOSTUNREACH|NETUNREACH|PROTO)|ERR_SOCKET_TIMEOUT|socket hang up|network|audit endpoint returned an error/i.test(text);
if (rc === 124 || typeof status === 'number' || network) {
  const why = rc === 124 ? 'no answer within 180 s' : (report?.message ?? report?.error?.summary ?? (stderr.trim().split('\n').pop() || 'unreachable'));
  const bar = '!'.repeat(100);
  console.log(bar);
  console.log('!!! audit: NOT RUN — the npm audit endpoint could not be used, so no advisory was checked.');
  console.log(`!!! reason: ${why}`);
  console.log('!!! Run `npm audit --audit-level=high` where the registry answers, and see docs/security-dependencies.md.');
  console.log(bar);
  if (process.env.GITHUB_ACTIONS) console.log(`::warning title=npm audit not run::${why}`);
  process.exit(required === 'true' ? 1 : 0);
}
console.log(`audit: FAILED: npm audit did not produce a report (exit ${rc}): ${text.trim() || 'no output'}`);
process.exit(1);
EOF
