import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { loadConfig } from '../config/index.js';
import { readHeader } from '../hl7/header.js';
import { unescapeHl7 } from '../hl7/message.js';
import { normalizeSegments } from '../hl7/text.js';
import { deleteByPrefix } from '../jobs/redis.js';
import { createLogger } from '../observability/log.js';
import { startGateway } from './gateway.js';

const DEMO_FILE = 'fixtures/hl7/demo-orders.hl7';
const execFileP = promisify(execFile);

const field = (msg: string, seg: string, n: number): string => {
  const line = msg.split('\r').find((l) => l.startsWith(seg)) ?? '';
  const parts = line.split('|');
  return (seg === 'MSH' ? parts[n - 1] : parts[n]) ?? '';
};

/**
 * The end-to-end demo as far as the pipeline goes today: start the gateway, send sample orders with the real
 * python-hl7 sender, show each ACK, then the queued jobs and the ignored and dead-lettered messages.
 */
export async function runDemo(args: string[]): Promise<number> {
  const keep = args.includes('--keep');
  const env = { ...process.env };
  env.CTGATE_REDIS_PREFIX ??= 'ctgate-demo';
  env.CTGATE_MLLP_PORT ??= '0';
  env.CTGATE_HTTP_PORT ??= '0';
  env.CTGATE_API_TOKEN ??= `demo-${randomBytes(12).toString('hex')}`;
  const config = loadConfig(env);
  const token = config.apiToken ?? '';
  await deleteByPrefix(config.redisUrl, config.redisPrefix);
  const gw = await startGateway(config, createLogger('error'));
  const api = async (path: string) => {
    const r = await fetch(`http://127.0.0.1:${gw.httpPort}${path}`, { headers: { Authorization: `Bearer ${token}` } });
    return (await r.json()) as Record<string, unknown>;
  };
  const out = (s = '') => process.stdout.write(`${s}\n`);
  out(`ctgate demo — gateway up: MLLP 127.0.0.1:${gw.mllp.port}, HTTP 127.0.0.1:${gw.httpPort}, Redis ${config.redisUrl} (prefix ${config.redisPrefix})`);
  const messages = normalizeSegments(readFileSync(DEMO_FILE, 'utf8').replace(/\n(?=MSH)/g, '\n\n'))
    .split(/\r(?=MSH\|)/)
    .filter((m) => m.startsWith('MSH'));
  out(`\n1. Sending ${messages.length} sample messages from ${DEMO_FILE} with mllp_send (python-hl7)\n`);
  const { stdout } = await execFileP('/usr/bin/mllp_send', ['--loose', '-p', String(gw.mllp.port), '-f', DEMO_FILE, '127.0.0.1'], { timeout: 30_000 });
  const acks = stdout
    .split(/(?=MSH\|)/)
    .map((s) => normalizeSegments(s.trim()))
    .filter((s) => s.startsWith('MSH'));
  let missing = 0;
  let next = 0;
  for (const m of messages) {
    const h = readHeader(m);
    const orc = field(m, 'ORC', 1);
    const proc = field(m, 'OBR', 4).split('^').slice(0, 2).join(' ');
    // ACKs come back in order; a message whose MSH-15 asked for none has no ACK to pair with.
    const ack = field(acks[next] ?? '', 'MSA', 2) === h?.controlId ? acks[next++] : undefined;
    const sent = `${`${h?.messageType}^${h?.triggerEvent}`.padEnd(8)} ${h?.controlId.padEnd(9)} ${orc ? `ORC-1 ${orc}` : '       '}  ${proc}`.padEnd(62);
    if (!ack) {
      missing++;
      out(`   → ${sent}  ← (no ACK: MSH-15 asked for none)`);
      continue;
    }
    const err = field(ack, 'ERR', 3).split('^')[0];
    out(`   → ${sent}  ← ${field(ack, 'MSA', 1)} ${err ? `ERR ${err} ` : ''}${unescapeHl7(field(ack, 'MSA', 3), '|', '^~\\&')}`);
  }
  if (acks.length + missing !== messages.length) out(`   (${acks.length} ACKs for ${messages.length} messages)`);

  const jobs = (await api('/api/jobs?state=waiting')) as { counts: Record<string, number>; items: Record<string, unknown>[] };
  out(`\n2. Queued jobs (GET /api/jobs): ${jobs.counts.waiting} waiting`);
  for (const j of jobs.items)
    out(`   ${j.id}  ${String(j.orderControl)}  procedure ${String(j.procedure)}  priority ${String(j.priority ?? '-')}  from ${JSON.stringify(j.sender)}`);
  for (const kind of ['ignored', 'dead-letter'] as const) {
    const list = (await api(`/api/messages?kind=${kind}`)) as { total: number; items: Record<string, unknown>[] };
    out(`\n3. ${kind === 'ignored' ? 'Ignored' : 'Dead-lettered'} messages (GET /api/messages?kind=${kind}): ${list.total}`);
    for (const m of list.items) out(`   ${String(m.controlId).padEnd(9)} ${String(m.messageType).padEnd(8)} ${String(m.reason)}`);
  }
  if (keep) {
    out(`\nGateway keeps running (Ctrl-C to stop). Try: curl -H 'Authorization: Bearer ${token}' http://127.0.0.1:${gw.httpPort}/api/jobs`);
    await new Promise<void>((resolve) => process.once('SIGINT', resolve));
  }
  await gw.stop();
  out('\nDemo done. Next stages (study retrieval, models, SEG/FHIR/ORU results) join this flow as they land.');
  return acks.length > 0 ? 0 : 1;
}
