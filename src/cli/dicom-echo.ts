/**
 * `ctgate dicom echo --host H --port P [--called-ae AE] [--calling-ae AE] [--timeout S]`: a C-ECHO (DICOM
 * verification) with DCMTK's echoscu, for checking a DIMSE destination before pointing the results at it. Prints one
 * JSON line {ok, host, port, calledAe, ms, error?}. Exit 0: the peer answered; 3: it rejected the association (the
 * reason says why: called AE unknown, calling AE not allowed…); 1: network or usage errors.
 */
import { parseArgs } from 'node:util';
import { aeTitleProblem, echo } from '../dicom/dcmtk.js';

const USAGE = 'usage: ctgate dicom echo --host H --port P [--called-ae AE] [--calling-ae AE] [--timeout S]';

export async function dicomEchoCommand(args: string[]): Promise<number> {
  let values: { host?: string; port?: string; 'called-ae'?: string; 'calling-ae'?: string; timeout?: string };
  try {
    values = parseArgs({
      args,
      options: {
        host: { type: 'string' },
        port: { type: 'string' },
        'called-ae': { type: 'string' },
        'calling-ae': { type: 'string' },
        timeout: { type: 'string' },
      },
    }).values;
  } catch (e) {
    return usage((e as Error).message);
  }
  const host = values.host?.trim();
  const port = Number(values.port);
  const calledAe = (values['called-ae'] ?? 'ANY-SCP').trim();
  const callingAe = (values['calling-ae'] ?? process.env.CTGATE_DICOM_AE_TITLE ?? 'CTGATE').trim();
  const timeoutS = values.timeout === undefined ? 10 : Number(values.timeout);
  if (!host || host.startsWith('-')) return usage('--host is required');
  if (!/^\d+$/.test(values.port ?? '') || port < 1 || port > 65535) return usage('--port must be an integer 1..65535');
  for (const [flag, ae] of [
    ['--called-ae', calledAe],
    ['--calling-ae', callingAe],
  ] as const) {
    const problem = aeTitleProblem(ae);
    if (problem) return usage(`${flag}: expected ${problem}`);
  }
  if (!Number.isInteger(timeoutS) || timeoutS < 1 || timeoutS > 600) return usage('--timeout must be whole seconds 1..600');
  const r = await echo({ host, port, calledAe, callingAe, timeoutS, label: 'the peer' });
  process.stdout.write(`${JSON.stringify({ ok: r.ok, host, port, calledAe, ms: r.ms, ...(r.error ? { error: r.error.message } : {}) })}\n`);
  if (r.ok) return 0;
  return r.error?.kind === 'rejected' ? 3 : 1;
}

function usage(problem: string): number {
  process.stderr.write(`ctgate dicom echo: ${problem}\n${USAGE}\n`);
  return 1;
}
