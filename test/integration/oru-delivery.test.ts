/**
 * ORU^R01 delivery against a real, independent MLLP receiver: python-hl7's server and create_ack()
 * (src/cli/local-peers/oru-receiver.py), plain and over TLS (the same receiver with Python's ssl context).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { running, startReceiver, tmpRoot } from '../../src/cli/local-peers/oru-receiver.js';
import { loadConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/observability/log.js';
import type { ResultContext } from '../../src/results/context.js';
import { encodeOru, oruControlId } from '../../src/results/oru/encode.js';
import { OruDeliveryError, type OruSenderOptions, oruSenderOptions, sendOru } from '../../src/results/oru/sender.js';
import { syntheticResult } from '../helpers/result-context.js';

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** Self-signed server (SAN 127.0.0.1) and client certificates made with the openssl CLI. */
function makeCerts(dir: string) {
  for (const [name, cn, san] of [
    ['server', '127.0.0.1', 'IP:127.0.0.1'],
    ['client', 'ctgate-oru', 'DNS:ctgate-oru'],
  ]) {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-days',
        '2',
        '-subj',
        `/CN=${cn}`,
        '-addext',
        `subjectAltName=${san}`,
        '-keyout',
        `${name}.key`,
        '-out',
        `${name}.pem`,
      ],
      { cwd: dir, stdio: 'pipe' },
    );
  }
  const f = (n: string) => join(dir, n);
  return { serverCert: f('server.pem'), serverKey: f('server.key'), clientCert: f('client.pem'), clientKey: f('client.key') };
}

describe('ORU^R01 delivery to a python-hl7 MLLP receiver', () => {
  let ctx: ResultContext;
  let message: string;
  let controlId: string;
  let logLines: string[];
  const opts = (port: number, extra: Partial<OruSenderOptions> = {}): OruSenderOptions => ({
    host: '127.0.0.1',
    port,
    connectTimeoutMs: 2000,
    ackTimeoutMs: 3000,
    retries: 0,
    backoffMs: 50,
    backoffMaxMs: 400,
    logger: createLogger('debug', false, (l) => logLines.push(l)),
    ...extra,
  });
  const rejection = async (p: Promise<unknown>): Promise<OruDeliveryError> => {
    const e = await p.then(
      () => assert.fail('delivery should fail'),
      (err: unknown) => err,
    );
    assert.ok(e instanceof OruDeliveryError, String(e));
    return e;
  };

  before(() => {
    ctx = syntheticResult({ seed: 7, kind: 'covid' }).context;
    // Delimiters in a value must survive the trip to the receiver.
    ctx.links.resultPageUrl = 'https://ctgate.example/jobs?id=7&view=key^images|x';
    controlId = oruControlId(ctx.jobId);
    message = encodeOru(ctx, { sendingApplication: 'CTGATE', sendingFacility: 'RAD', controlId, now: new Date('2026-11-27T10:05:00Z'), version: '2.5.1' });
  });
  after(async () => {
    for (const p of running) p.kill('SIGTERM');
    rmSync(tmpRoot(), { recursive: true, force: true });
  });

  it('delivers the message intact and returns the delivery record; logs hold no patient data', async () => {
    logLines = [];
    const rx = await startReceiver();
    try {
      const rec = await sendOru(message, ctx.jobId, opts(rx.port));
      assert.equal(rec.controlId, controlId);
      assert.equal(rec.ackCode, 'AA');
      assert.equal(rec.attempts, 1);
      assert.ok(!Number.isNaN(Date.parse(rec.ackedAt)));
      const got = rx.received();
      assert.equal(got.length, 1);
      assert.ok(got[0]?.equals(Buffer.from(message, 'utf8')), 'received byte for byte');
      const logs = logLines.join('\n');
      assert.match(logs, /oru\.delivered/);
      for (const phi of ['Synthetic', 'MRN000123', '19700101', 'House']) assert.ok(!logs.includes(phi), `no ${phi} in logs`);
    } finally {
      await rx.stop();
    }
  });

  it('retries with backoff while the receiver is down and delivers once it starts', async () => {
    logLines = [];
    const port = await freePort();
    const sending = sendOru(message, ctx.jobId, opts(port, { retries: 12, backoffMs: 100, backoffMaxMs: 400 }));
    await new Promise((r) => setTimeout(r, 600));
    const rx = await startReceiver({ port });
    try {
      const rec = await sending;
      assert.equal(rec.ackCode, 'AA');
      assert.ok(rec.attempts >= 3, `attempts ${rec.attempts}`);
      assert.equal(rx.received().length, 1);
      assert.match(logLines.join('\n'), /oru\.attempt_failed.*ECONNREFUSED/);
    } finally {
      await rx.stop();
    }
  });

  it('gives up with a clear error when the receiver stays down', async () => {
    const port = await freePort();
    const e = await rejection(sendOru(message, ctx.jobId, opts(port, { retries: 2, backoffMs: 20 })));
    assert.equal(e.attempts, 3);
    assert.equal(e.ackCode, undefined);
    assert.equal(e.retryable, true);
    assert.match(e.message, new RegExp(`ORU ${controlId} .*not delivered after 3 attempt.*ECONNREFUSED`));
  });

  it('reports AE with the receiver reason after resending the same message', async () => {
    const rx = await startReceiver({ mode: 'ae' });
    try {
      const e = await rejection(sendOru(message, ctx.jobId, opts(rx.port, { retries: 1 })));
      assert.equal(e.ackCode, 'AE');
      assert.equal(e.reason, 'Receiver database unavailable');
      assert.equal(e.attempts, 2);
      assert.equal(e.retryable, true);
      const got = rx.received();
      assert.equal(got.length, 2);
      assert.ok(got[1]?.equals(got[0] as Buffer), 'the resend is the same message, same MSH-10');
    } finally {
      await rx.stop();
    }
  });

  it('does not retry AR', async () => {
    const rx = await startReceiver({ mode: 'ar' });
    try {
      const e = await rejection(sendOru(message, ctx.jobId, opts(rx.port, { retries: 3 })));
      assert.equal(e.ackCode, 'AR');
      assert.equal(e.attempts, 1);
      assert.equal(e.retryable, false);
      assert.equal(e.reason, 'Unknown patient; message rejected');
      assert.equal(rx.received().length, 1);
    } finally {
      await rx.stop();
    }
  });

  it('does not take an ACK for another control id, and keeps waiting for its own', async () => {
    logLines = [];
    const wrong = await startReceiver({ mode: 'wrong-id' });
    try {
      const e = await rejection(sendOru(message, ctx.jobId, opts(wrong.port, { ackTimeoutMs: 700 })));
      assert.match(e.reason, /no ACK within 700 ms/);
      assert.match(logLines.join('\n'), new RegExp(`oru\\.ack_other_message.*"ackFor":"EARLIER-${controlId}"`));
    } finally {
      await wrong.stop();
    }
    const late = await startReceiver({ mode: 'wrong-then-aa' });
    try {
      const rec = await sendOru(message, ctx.jobId, opts(late.port));
      assert.equal(rec.ackCode, 'AA');
      assert.equal(rec.attempts, 1);
    } finally {
      await late.stop();
    }
  });

  it('delivers over TLS with a client certificate from the config, and refuses what it cannot trust', async () => {
    const certs = makeCerts(mkdtempSync(join(tmpRoot(), 'tls-')));
    const rx = await startReceiver({ tls: { cert: certs.serverCert, key: certs.serverKey, ca: certs.clientCert } });
    try {
      const config = loadConfig({
        CTGATE_ORU_HOST: '127.0.0.1',
        CTGATE_ORU_PORT: String(rx.port),
        CTGATE_ORU_TLS: 'true',
        CTGATE_ORU_TLS_CA_FILE: certs.serverCert,
        CTGATE_ORU_TLS_CERT_FILE: certs.clientCert,
        CTGATE_ORU_TLS_KEY_FILE: certs.clientKey,
        CTGATE_ORU_ACK_TIMEOUT_MS: '3000',
        CTGATE_ORU_RETRIES: '0',
      });
      assert.ok(config.oru);
      const fromConfig = oruSenderOptions(config.oru);
      const rec = await sendOru(message, ctx.jobId, fromConfig);
      assert.equal(rec.ackCode, 'AA');
      assert.ok(rx.received()[0]?.equals(Buffer.from(message, 'utf8')));
      const tls = fromConfig.tls ?? {};
      const untrusted = await rejection(sendOru(message, ctx.jobId, opts(rx.port, { tls: { cert: tls.cert, key: tls.key }, retries: 3 })));
      assert.equal(untrusted.attempts, 1, 'a certificate error is not retried');
      assert.equal(untrusted.retryable, false);
      assert.match(untrusted.reason, /SELF_SIGNED|CERT/);
      // The receiver requires a client certificate: without one the handshake or the connection fails.
      const anonymous = await rejection(sendOru(message, ctx.jobId, opts(rx.port, { tls: { ca: tls.ca } })));
      assert.match(anonymous.reason, /closed before an ACK|ALERT|ECONNRESET/);
      assert.equal(rx.received().length, 1);
    } finally {
      await rx.stop();
    }
  });
});
