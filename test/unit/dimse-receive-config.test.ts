import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config/index.js';
import { profileText, storescpArgs } from '../../src/dimse-receive/storescp.js';

const throwsKey = (env: Record<string, string>, key: RegExp) =>
  assert.throws(
    () => loadConfig(env),
    (e: unknown) => e instanceof ConfigError && key.test(e.message),
  );

describe('DIMSE receive configuration', () => {
  it('is off unless CTGATE_DIMSE_LISTEN_PORT is set, with sane defaults when it is', () => {
    assert.equal(loadConfig({}).dimseReceive, undefined);
    const c = loadConfig({ CTGATE_DIMSE_LISTEN_PORT: '11112', CTGATE_DIMSE_ALLOWED_CALLERS: 'CT01' }).dimseReceive;
    assert.deepEqual(c, {
      host: '127.0.0.1',
      port: 11112,
      aeTitle: 'CTGATE',
      allowedCallers: [{ ae: 'CT01' }],
      dir: '.data/dimse-receive',
      retentionHours: 72,
      stableSeconds: 30,
      accept: 'ct',
      maxAssociations: 16,
      timeoutS: 60,
    });
    // Its AE title defaults to ctgate's own; CTGATE_DIMSE_AE_TITLE overrides it.
    assert.equal(loadConfig({ CTGATE_DIMSE_LISTEN_PORT: '1', CTGATE_DIMSE_ALLOWED_CALLERS: '*', CTGATE_DICOM_AE_TITLE: 'GW' }).dimseReceive?.aeTitle, 'GW');
    assert.equal(loadConfig({ CTGATE_DIMSE_LISTEN_PORT: '1', CTGATE_DIMSE_ALLOWED_CALLERS: '*', CTGATE_DIMSE_AE_TITLE: 'RCV' }).dimseReceive?.aeTitle, 'RCV');
  });

  it('reads callers as AE, AE@address, @block and *', () => {
    const c = loadConfig({ CTGATE_DIMSE_LISTEN_PORT: '104', CTGATE_DIMSE_ALLOWED_CALLERS: 'CT01, PACS@10.0.0.5, @192.168.4.0/24, *@::1, *' }).dimseReceive;
    assert.deepEqual(c?.allowedCallers, [{ ae: 'CT01' }, { ae: 'PACS', address: '10.0.0.5' }, { address: '192.168.4.0/24' }, { address: '::1' }, {}]);
  });

  it('names the bad key', () => {
    throwsKey({ CTGATE_DIMSE_LISTEN_PORT: '104' }, /^CTGATE_DIMSE_ALLOWED_CALLERS: expected the calling AE titles/);
    throwsKey({ CTGATE_DIMSE_ALLOWED_CALLERS: 'CT01' }, /^CTGATE_DIMSE_LISTEN_PORT: expected a port when CTGATE_DIMSE_ALLOWED_CALLERS is set/);
    throwsKey({ CTGATE_DIMSE_LISTEN_PORT: 'x' }, /^CTGATE_DIMSE_LISTEN_PORT: expected an integer/);
    throwsKey({ CTGATE_DIMSE_LISTEN_PORT: '104', CTGATE_DIMSE_ALLOWED_CALLERS: 'PACS@10.0.0' }, /^CTGATE_DIMSE_ALLOWED_CALLERS: .*bad address/);
    throwsKey({ CTGATE_DIMSE_LISTEN_PORT: '104', CTGATE_DIMSE_ALLOWED_CALLERS: 'A-TITLE-LONGER-THAN-16' }, /^CTGATE_DIMSE_ALLOWED_CALLERS: .*bad AE title/);
    throwsKey({ CTGATE_DIMSE_LISTEN_PORT: '104', CTGATE_DIMSE_ALLOWED_CALLERS: '@10.0.0.0/33' }, /bad address/);
    throwsKey(
      { CTGATE_DIMSE_LISTEN_PORT: '104', CTGATE_DIMSE_ALLOWED_CALLERS: '*', CTGATE_DIMSE_ACCEPT: 'mr' },
      /^CTGATE_DIMSE_ACCEPT: expected one of ct, all/,
    );
    throwsKey({ CTGATE_DIMSE_LISTEN_PORT: '104', CTGATE_DIMSE_ALLOWED_CALLERS: '*', CTGATE_DIMSE_RETENTION_HOURS: '0' }, /^CTGATE_DIMSE_RETENTION_HOURS/);
    throwsKey(
      { CTGATE_DIMSE_LISTEN_PORT: '104', CTGATE_DIMSE_ALLOWED_CALLERS: '*', CTGATE_DIMSE_TLS_CERT_FILE: '/c.pem' },
      /^CTGATE_DIMSE_TLS_KEY_FILE: expected a path/,
    );
    throwsKey({ CTGATE_DIMSE_LISTEN_PORT: '104', CTGATE_DIMSE_ALLOWED_CALLERS: '*', CTGATE_DIMSE_TLS_CA_FILE: '/ca.pem' }, /^CTGATE_DIMSE_TLS_CERT_FILE/);
    throwsKey({ CTGATE_DIMSE_TLS_CERT_FILE: '/c.pem' }, /^CTGATE_DIMSE_LISTEN_PORT: expected a port when CTGATE_DIMSE_TLS_CERT_FILE is set/);
    const tls = loadConfig({
      CTGATE_DIMSE_LISTEN_PORT: '2762',
      CTGATE_DIMSE_ALLOWED_CALLERS: '*',
      CTGATE_DIMSE_TLS_CERT_FILE: '/c.pem',
      CTGATE_DIMSE_TLS_KEY_FILE: '/k.pem',
    }).dimseReceive?.tls;
    assert.deepEqual(tls, { certFile: '/c.pem', keyFile: '/k.pem' });
  });

  it('runs storescp in inetd mode, one folder per study, CT SOP classes only unless told otherwise', () => {
    const args = storescpArgs({ aeTitle: 'CTGATE', studiesDir: '/r/studies', profileFile: '/r/p.cfg', timeoutS: 30 });
    assert.ok(args.includes('-id'));
    assert.deepEqual(args.slice(args.indexOf('-su'), args.indexOf('-su') + 2), ['-su', 'st']);
    assert.deepEqual(args.slice(args.indexOf('-xf'), args.indexOf('-xf') + 3), ['-xf', '/r/p.cfg', 'CTGATE']);
    assert.ok(storescpArgs({ aeTitle: 'CTGATE', studiesDir: '/r', timeoutS: 30 }).includes('+xa'));
    const profile = profileText('ct');
    assert.match(profile, /VerificationSOPClass/);
    assert.match(profile, /1\.2\.840\.10008\.5\.1\.4\.1\.1\.2\\Any/);
    assert.doesNotMatch(profile, /1\.2\.840\.10008\.5\.1\.4\.1\.1\.4\\/);
  });
});
