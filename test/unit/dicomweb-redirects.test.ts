/**
 * The PACS client never takes ctgate's PACS credentials to another host: xhr2 (dicomweb-client's XMLHttpRequest in
 * Node) follows every redirect with the Authorization header. Two in-process HTTP servers stand in for a PACS that
 * redirects and for the other host, because neither Orthanc nor any real PACS here answers DICOMweb with a redirect.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { DicomWebClient } from '../../src/dicomweb/client.js';

function listen(handler: http.RequestListener): Promise<{ server: http.Server; base: string }> {
  const server = http.createServer(handler);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}` })));
}

describe('PACS redirects', () => {
  let pacs: { server: http.Server; base: string };
  let other: { server: http.Server; base: string };
  const seenByOther: (string | undefined)[] = [];
  before(async () => {
    other = await listen((req, res) => {
      seenByOther.push(req.headers.authorization);
      res.writeHead(200, { 'content-type': 'application/dicom+json' }).end('[]');
    });
    pacs = await listen((req, res) => {
      if (req.url?.startsWith('/dicom-web/studies')) return res.writeHead(302, { location: `${other.base}/steal/studies` }).end();
      if (req.url?.startsWith('/moved/studies')) return res.writeHead(200, { 'content-type': 'application/dicom+json' }).end('[]');
      if (req.url?.startsWith('/same/studies')) return res.writeHead(307, { location: '/moved/studies' }).end();
      if (req.url?.startsWith('/loop/studies')) return res.writeHead(302, { location: '/loop/studies?again' }).end();
      res.writeHead(404).end();
    });
  });
  after(() => {
    pacs.server.close();
    other.server.close();
  });

  const client = (root: string) =>
    new DicomWebClient({ url: `${pacs.base}${root}`, auth: { kind: 'basic', user: 'ctgate', password: 'pacs-secret' }, timeoutMs: 5000, retries: 0 });

  it('refuses a redirect to another origin and sends it nothing', async () => {
    await assert.rejects(client('/dicom-web').searchStudies({ AccessionNumber: 'A1' }), /a redirect to another origin, refused/);
    assert.deepEqual(seenByOther, []);
  });

  it('follows a redirect within the PACS, and stops a loop', async () => {
    assert.deepEqual(await client('/same').searchStudies({ AccessionNumber: 'A1' }), []);
    await assert.rejects(client('/loop').searchStudies({ AccessionNumber: 'A1' }), /too many redirects/);
  });
});
