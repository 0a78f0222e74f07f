import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { ackField, MllpClient, orm } from '../helpers/hl7.js';

/** A throwaway CA, server and client certificate made with the openssl CLI. */
function makeCerts(dir: string) {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=ctgate-test-ca', '-keyout', 'ca.key', '-out', 'ca.pem');
  for (const name of ['server', 'client']) {
    ssl(
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-subj',
      `/CN=${name === 'server' ? '127.0.0.1' : 'emr-client'}`,
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.csr`,
    );
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', `${name}.pem`);
  }
  const f = (n: string) => join(dir, n);
  return { ca: f('ca.pem'), cert: f('server.pem'), key: f('server.key'), clientCert: f('client.pem'), clientKey: f('client.key') };
}

describe('MLLP over TLS with client certificates', () => {
  let gw: TestGateway;
  let certs: ReturnType<typeof makeCerts>;
  before(async () => {
    certs = makeCerts(mkdtempSync(join(tmpdir(), 'ctgate-tls-')));
    gw = await startTestGateway({
      CTGATE_MLLP_TLS_CERT_FILE: certs.cert,
      CTGATE_MLLP_TLS_KEY_FILE: certs.key,
      CTGATE_MLLP_TLS_CA_FILE: certs.ca,
      CTGATE_MLLP_TLS_REQUIRE_CLIENT_CERT: 'true',
    });
  });
  after(async () => {
    await gw.cleanup();
  });

  it('acknowledges an order from a client with a trusted certificate', async () => {
    const c = await MllpClient.connect(gw.mllp.port, {
      tls: { ca: readFileSync(certs.ca), cert: readFileSync(certs.clientCert), key: readFileSync(certs.clientKey), checkServerIdentity: () => undefined },
    });
    c.send(orm({ controlId: 'TLS-1' }));
    assert.equal(ackField(await c.nextAck(), 'MSA', 1), 'AA');
    c.close();
  });

  it('refuses a client without a certificate, and plain TCP gets no ACK', async () => {
    const noCert = await MllpClient.connect(gw.mllp.port, { tls: { ca: readFileSync(certs.ca), checkServerIdentity: () => undefined } }).catch((e: Error) => e);
    if (noCert instanceof MllpClient) {
      noCert.send(orm({ controlId: 'TLS-NOCERT' }));
      await assert.rejects(noCert.nextAck(3000));
      noCert.close();
    }
    const plain = await MllpClient.connect(gw.mllp.port);
    plain.send(orm({ controlId: 'TLS-PLAIN' }));
    await assert.rejects(plain.nextAck(1500));
    plain.close();
    assert.equal(await gw.queue.getJob('TLS-PLAIN'), undefined);
    const jobs = await gw.queue.getJobs(['waiting'], 0, -1);
    assert.deepEqual(
      jobs.map((j) => j.data.messageControlId),
      ['TLS-1'],
    );
  });
});
