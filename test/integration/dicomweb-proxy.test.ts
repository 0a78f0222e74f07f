import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { parseContentType, readMultipart } from '../../src/dicomweb/multipart.js';
import { checkTarget } from '../../src/http/proxy/paths.js';
import { ReplaceStream } from '../../src/http/proxy/rewrite.js';
import type { HuVolume } from '../../src/imaging/volume.js';
import { encodeSeg } from '../../src/results/seg/encode.js';
import { writeCtSeries } from '../../src/synthetic/dicom-writer.js';
import { startTestGateway, TEST_TOKEN, type TestGateway } from '../helpers/gateway.js';
import { freePort, TestOrthanc } from '../helpers/orthanc.js';
import { syntheticResult } from '../helpers/result-context.js';

/** ctgate's public URL: need not resolve; every URL in a proxied answer must point here, none at the PACS. */
const PUBLIC = 'https://ctgate.example.org';
const AUTH = { Authorization: `Bearer ${TEST_TOKEN}` };
const FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*';
const MAX_STOW = 4 * 2 ** 20;

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** node:http as is: the request target goes out exactly as written (no URL normalisation). */
function raw(
  port: number,
  path: string,
  opts: { method?: string; headers?: http.OutgoingHttpHeaders; body?: Buffer | ((req: http.ClientRequest) => void) } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: opts.method ?? 'GET', headers: opts.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (typeof opts.body === 'function') opts.body(req);
    else req.end(opts.body);
  });
}

const json = (r: RawResponse): unknown => JSON.parse(r.body.toString('utf8'));

async function parts(r: RawResponse): Promise<Buffer[]> {
  const boundary = parseContentType(String(r.headers['content-type'])).params.boundary;
  assert.ok(boundary, `multipart answer (${r.headers['content-type']})`);
  const out: Buffer[] = [];
  for await (const p of readMultipart(Readable.from([r.body]), boundary)) out.push(p.body);
  return out;
}

function stowBody(instances: Uint8Array[]): { body: Buffer; contentType: string } {
  const boundary = `proxy-test-${Date.now()}`;
  const chunks: Uint8Array[] = [];
  for (const i of instances) chunks.push(Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`), i, Buffer.from('\r\n'));
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), contentType: `multipart/related; type="application/dicom"; boundary=${boundary}` };
}

/** A 512×512 CT series of nz slices with varied pixel values (about 0.5 MB per slice). */
function bigSeries(nz: number) {
  const [nx, ny] = [512, 512];
  const volume: HuVolume = {
    geometry: { size: [nx, ny, nz], spacing: [0.7, 0.7, 2.5], origin: [-179, -179, -60], direction: [1, 0, 0, 0, 1, 0, 0, 0, 1] },
    data: new Int16Array(nx * ny * nz),
  };
  for (let i = 0; i < volume.data.length; i++) volume.data[i] = (((i * 2654435761) >>> 21) % 2000) - 1000;
  return writeCtSeries(volume, { seed: 4242, accessionNumber: 'PROXY-MEM', patientId: 'PROXY-PAT' });
}

describe('DICOMweb proxy pieces', () => {
  it('rewrites URLs in a stream whatever the chunking (matches across chunk boundaries, longest first)', async () => {
    const from = 'http://127.0.0.1:8042/dicom-web';
    const text = `[{"a":{"BulkDataURI":"${from}/studies/1/bulk/7fe00010"}},"http://127.0.0.1:8042/x","${from.replaceAll('/', '\\/')}/y","é${from}"]`;
    const want = text
      .replaceAll(from, 'https://gw/dicom-web')
      .replaceAll('http://127.0.0.1:8042', 'https://gw')
      .replaceAll(from.replaceAll('/', '\\/'), 'https:\\/\\/gw\\/dicom-web');
    const bytes = Buffer.from(text);
    for (let cut = 1; cut <= bytes.length; cut += 3) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < bytes.length; i += cut) chunks.push(bytes.subarray(i, i + cut));
      const out: Buffer[] = [];
      const s = new ReplaceStream([
        [from, 'https://gw/dicom-web'],
        ['http://127.0.0.1:8042', 'https://gw'],
        [from.replaceAll('/', '\\/'), 'https:\\/\\/gw\\/dicom-web'],
      ]);
      s.on('data', (c: Buffer) => out.push(c));
      for (const c of chunks) s.write(c);
      s.end();
      await once(s, 'end');
      assert.equal(Buffer.concat(out).toString('utf8'), want, `chunks of ${cut}`);
    }
  });

  it('accepts the DICOMweb grammar', () => {
    for (const p of [
      '/dicom-web/studies',
      '/dicom-web/studies?PatientID=X&includefield=all&limit=5',
      '/dicom-web/series?Modality=SEG',
      '/dicom-web/instances',
      '/dicom-web/studies/1.2.3',
      '/dicom-web/studies/1.2.3/metadata',
      '/dicom-web/studies/1.2.3/rendered',
      '/dicom-web/studies/1.2.3/series',
      '/dicom-web/studies/1.2.3/instances',
      '/dicom-web/studies/1.2.3/series/4.5/thumbnail',
      '/dicom-web/studies/1.2.3/series/4.5/instances',
      '/dicom-web/studies/1.2.3/series/4.5/instances/6.7/metadata',
      '/dicom-web/studies/1.2.3/series/4.5/instances/6.7/frames/1,2,30',
      '/dicom-web/studies/1.2.3/series/4.5/instances/6.7/frames/1/rendered',
      '/dicom-web/studies/1.2.3/series/4.5/instances/6.7/bulk/7fe00010',
      '/dicom-web/studies/1.2.3/series/4.5/instances/6.7/bulk/00081115/1/0020000e',
      // a UUID study UID as published by some archives (COVID-CT-MD); ctgate's results keep it byte for byte
      '/dicom-web/studies/4bae1d63-eb4e-4386-bd1b-68e8ba379989/series',
    ]) {
      const t = checkTarget(p);
      assert.ok(t.ok, `${p}: ${t.ok ? '' : t.reason}`);
    }
    assert.ok((checkTarget('/dicom-web/studies/1.2') as { stow: boolean }).stow);
    assert.ok(!(checkTarget('/dicom-web/studies/1.2/series') as { stow: boolean }).stow);
  });
});

describe('DICOMweb proxy /dicom-web (real Orthanc, real gateway)', () => {
  const pacs = new TestOrthanc();
  let gw: TestGateway;
  let port = 0;
  const series = bigSeries(48);
  const seriesBytes = series.files.reduce((n, f) => n + f.bytes.length, 0);
  const { studyInstanceUid: st, seriesInstanceUid: se } = series;
  const pacsAddress = () => `127.0.0.1:${pacs.port}`;
  /** The direct answer as the proxy must give it: the PACS's DICOMweb root replaced by ctgate's. */
  const asProxied = (text: string) => JSON.parse(text.replaceAll(pacs.dicomweb, `${PUBLIC}/dicom-web`));

  before(async () => {
    await pacs.start();
    const client = pacs.client({ timeoutMs: 60_000 });
    for (let i = 0; i < series.files.length; i += 16) await client.store(series.files.slice(i, i + 16).map((f) => f.bytes));
    gw = await startTestGateway({
      CTGATE_PACS_URL: pacs.dicomweb,
      CTGATE_PUBLIC_URL: PUBLIC,
      CTGATE_PROXY_MAX_STOW_BYTES: String(MAX_STOW),
      // STOW through the proxy is off by default and needs pacs:write (test/integration/http-auth-walk.test.ts).
      CTGATE_PROXY_STOW: 'true',
      CTGATE_API_TOKEN_PERMISSIONS: 'results:read,jobs:admin,pacs:write',
    });
    port = gw.httpPort;
  });
  after(async () => {
    await gw?.cleanup();
    await pacs.stop();
  });

  it('refuses requests without ctgate credentials or with a wrong token (401)', async () => {
    assert.equal((await raw(port, '/dicom-web/studies')).status, 401);
    assert.equal((await raw(port, '/dicom-web/studies', { headers: { Authorization: 'Bearer wrong-token-wrong-token' } })).status, 401);
    assert.equal((await raw(port, `/dicom-web/studies/${st}/series/${se}/metadata`)).status, 401);
  });

  it('QIDO through the proxy equals QIDO direct (studies, series, instances, with query strings)', async () => {
    for (const q of [
      '/studies?PatientID=PROXY-PAT&includefield=00081030',
      '/studies?AccessionNumber=PROXY-MEM',
      `/studies/${st}/series?Modality=CT&includefield=0008103E`,
      `/studies/${st}/series/${se}/instances?limit=10&offset=5`,
    ]) {
      const viaProxy = await raw(port, `/dicom-web${q}`, { headers: { ...AUTH, Accept: 'application/dicom+json' } });
      const direct = await raw(pacs.port, `/dicom-web${q}`, { headers: { Accept: 'application/dicom+json' } });
      assert.equal(viaProxy.status, 200, q);
      assert.equal(viaProxy.status, direct.status, q);
      const text = viaProxy.body.toString('utf8');
      assert.ok(!text.includes(pacsAddress()), `no PACS address in ${q}`);
      assert.deepEqual(JSON.parse(text), asProxied(direct.body.toString('utf8')), q);
      assert.ok((JSON.parse(text) as unknown[]).length > 0, `${q} finds something`);
    }
  });

  it('series metadata equals the direct answer once URLs are rewritten; no PACS URL anywhere', async () => {
    const path = `/dicom-web/studies/${st}/series/${se}/metadata`;
    const viaProxy = await raw(port, path, { headers: { ...AUTH, Accept: 'application/dicom+json' } });
    const direct = await raw(pacs.port, path, { headers: { Accept: 'application/dicom+json' } });
    assert.equal(viaProxy.status, 200);
    const text = viaProxy.body.toString('utf8');
    assert.ok(!text.includes(pacsAddress()) && !text.includes(`:${pacs.port}/`), 'PACS address hidden');
    const got = JSON.parse(text) as Record<string, { BulkDataURI?: string }>[];
    assert.equal(got.length, series.files.length);
    assert.deepEqual(got, asProxied(direct.body.toString('utf8')));
    const bulk = got.flatMap((i) => Object.values(i)).filter((v) => v?.BulkDataURI);
    assert.ok(bulk.length > 0, 'metadata carries BulkDataURIs');
    for (const v of bulk) assert.ok(v.BulkDataURI?.startsWith(`${PUBLIC}/dicom-web/studies/`), v.BulkDataURI);
    // A BulkDataURI, taken relative to ctgate, is itself served by the proxy.
    const uri = String(bulk[0]?.BulkDataURI).slice(PUBLIC.length);
    const b = await raw(port, uri, { headers: { ...AUTH, Accept: 'multipart/related; type="application/octet-stream"' } });
    assert.equal(b.status, 200, uri);
  });

  it('frames and whole instances through the proxy are byte-identical to direct', async () => {
    for (const f of [series.files[0], series.files[23], series.files.at(-1)]) {
      assert.ok(f);
      const path = `/dicom-web/studies/${st}/series/${se}/instances/${f.sopInstanceUid}/frames/1`;
      const viaProxy = await raw(port, path, { headers: { ...AUTH, Accept: FRAME_ACCEPT } });
      const direct = await raw(pacs.port, path, { headers: { Accept: FRAME_ACCEPT } });
      assert.equal(viaProxy.status, 200);
      assert.equal(viaProxy.headers['content-length'], direct.headers['content-length'], 'Content-Length passed through');
      const a = await parts(viaProxy);
      const b = await parts(direct);
      assert.equal(a.length, 1);
      assert.equal(a[0]?.length, 512 * 512 * 2);
      assert.ok(a[0]?.equals(b[0] as Buffer), 'frame bytes identical');
    }
    const f = series.files[5];
    assert.ok(f);
    const inst = await raw(port, `/dicom-web/studies/${st}/series/${se}/instances/${f.sopInstanceUid}`, {
      headers: { ...AUTH, Accept: 'multipart/related; type="application/dicom"; transfer-syntax=*' },
    });
    assert.equal(inst.status, 200);
    assert.ok((await parts(inst))[0]?.equals(Buffer.from(f.bytes)), 'instance identical to the stored file');
  });

  it('STOW-RS of a SEG through the proxy: stored, answer rewritten, QIDO finds Modality SEG', async () => {
    const { context, series: ct } = syntheticResult({ seed: 11, kind: 'covid' });
    await pacs.client().store(ct.files.map((f) => f.bytes));
    const seg = encodeSeg(context);
    const { body, contentType } = stowBody([seg.bytes]);
    const r = await raw(port, `/dicom-web/studies/${seg.studyInstanceUid}`, {
      method: 'POST',
      headers: { ...AUTH, 'Content-Type': contentType, Accept: 'application/dicom+json' },
      body,
    });
    assert.equal(r.status, 200, r.body.toString());
    const text = r.body.toString('utf8');
    assert.ok(!text.includes(pacsAddress()), 'STOW answer hides the PACS');
    assert.match(
      text,
      new RegExp(`${PUBLIC.replaceAll('.', '\\.')}/dicom-web/studies/${seg.studyInstanceUid.replaceAll('.', '\\.')}`),
      'RetrieveURL rewritten',
    );
    const q = await raw(port, `/dicom-web/studies/${seg.studyInstanceUid}/series?Modality=SEG`, { headers: AUTH });
    assert.equal(q.status, 200);
    const found = json(q) as Record<string, { Value?: string[] }>[];
    assert.ok(
      found.some((s) => s['0020000E']?.Value?.[0] === seg.seriesInstanceUid),
      'SEG series found by QIDO',
    );
  });

  it('refuses hostile or non-DICOMweb paths with 400 (sent verbatim)', async () => {
    const uid65 = `1.${'2'.repeat(63)}`;
    const hostile = [
      '/dicom-web/studies/../../system',
      '/dicom-web/../system',
      '/dicom-web/studies/%2e%2e/%2e%2e/system',
      '/dicom-web/studies/%2E%2E%2Fsystem',
      `/dicom-web/studies/${st}%2fseries`,
      '/dicom-web/studies\\..\\system',
      '/dicom-web/studies/1.2%00/series',
      '/dicom-web/studies?PatientID=%00',
      '/dicom-web/system',
      '/dicom-web/tools/find',
      '/dicom-web/studies/abc',
      '/dicom-web/studies/4bae1d63-eb4e-4386-bd1b-68e8ba379989-0/series',
      `/dicom-web/studies/${uid65}`,
      `/dicom-web/studies/${st}/series/${se}/instances/1.2/frames/1;2`,
      `/dicom-web/studies/${st}/series/${se}/instances/1.2/frames/`,
      '/dicom-web//studies',
      '/dicom-web/studies/',
      `http://${pacsAddress()}/dicom-web/studies`,
      `http://127.0.0.1:${port}/dicom-web/studies/../../system`,
    ];
    for (const path of hostile) {
      const r = await raw(port, path, { headers: AUTH });
      assert.equal(r.status, 400, `${path} → ${r.status} ${r.body}`);
      assert.equal((json(r) as { error: string }).error, 'bad DICOMweb path', path);
      assert.ok(!r.body.toString().includes(pacsAddress()));
    }
    assert.equal((await raw(port, '/dicom-web/studies', { method: 'DELETE', headers: AUTH })).status, 405);
    assert.equal((await raw(port, '/dicom-web/studies', { method: 'PUT', headers: AUTH, body: Buffer.from('x') })).status, 405);
    const post = await raw(port, `/dicom-web/studies/${st}/series/${se}`, {
      method: 'POST',
      headers: { ...AUTH, 'Content-Type': 'multipart/related; boundary=x' },
      body: Buffer.from(''),
    });
    assert.equal(post.status, 405, 'STOW only to /studies[/{uid}]');
    const notMultipart = await raw(port, '/dicom-web/studies', {
      method: 'POST',
      headers: { ...AUTH, 'Content-Type': 'application/dicom' },
      body: Buffer.from('DICM'),
    });
    assert.equal(notMultipart.status, 415);
  });

  it('refuses an oversized STOW with 413: by Content-Length up front, and by counting a chunked body', async () => {
    const type = 'multipart/related; type="application/dicom"; boundary=big';
    const declared = await raw(port, '/dicom-web/studies', {
      method: 'POST',
      headers: { ...AUTH, 'Content-Type': type, 'Content-Length': String(MAX_STOW + 1) },
      body: (req) => req.write(Buffer.alloc(1024)), // the rest never comes: the answer must not wait for it
    });
    assert.equal(declared.status, 413);
    const chunked = await raw(port, '/dicom-web/studies', {
      method: 'POST',
      headers: { ...AUTH, 'Content-Type': type, 'Transfer-Encoding': 'chunked' },
      body: (req) => {
        const chunk = Buffer.alloc(256 * 1024, 0x41);
        for (let sent = 0; sent <= MAX_STOW; sent += chunk.length) req.write(chunk);
        // Not ended: ctgate must stop at the limit on its own.
      },
    });
    assert.equal(chunked.status, 413);
  });

  it('streams a whole series (48 slices, ~24 MiB) without holding it: RSS grows by less than the series', async (t) => {
    const path = `/dicom-web/studies/${st}/series/${se}`;
    const accept = 'multipart/related; type="application/dicom"; transfer-syntax=*';
    const pull = async (): Promise<{ bytes: number; peak: number }> => {
      let peak = process.memoryUsage.rss();
      const timer = setInterval(() => {
        peak = Math.max(peak, process.memoryUsage.rss());
      }, 5);
      try {
        return await new Promise((resolve, reject) => {
          http
            .get({ host: '127.0.0.1', port, path, headers: { ...AUTH, Accept: accept }, agent: false }, (res) => {
              assert.equal(res.statusCode, 200);
              let bytes = 0;
              res.on('data', (c: Buffer) => {
                bytes += c.length;
              });
              res.on('end', () => resolve({ bytes, peak: Math.max(peak, process.memoryUsage.rss()) }));
              res.on('error', reject);
            })
            .on('error', reject);
        });
      } finally {
        clearInterval(timer);
      }
    };
    await pull(); // warm-up: first-use allocations
    const before = process.memoryUsage.rss();
    const { bytes, peak } = await pull();
    assert.ok(bytes >= seriesBytes, `got ${bytes} bytes of ${seriesBytes}`);
    const grew = peak - before;
    t.diagnostic(`RSS +${(grew / 2 ** 20).toFixed(1)} MiB while streaming ${(seriesBytes / 2 ** 20).toFixed(1)} MiB`);
    assert.ok(grew < seriesBytes, `RSS grew by ${(grew / 2 ** 20).toFixed(1)} MiB while streaming ${(seriesBytes / 2 ** 20).toFixed(1)} MiB`);
  });

  it('a PACS with basic auth: ctgate adds its credentials; the client only ever sends its ctgate token', async () => {
    const secured = new TestOrthanc({ user: 'ctgate-pacs', password: 'pacs-secret-42' });
    await secured.start();
    const gws: TestGateway[] = [];
    try {
      const { series: ct } = syntheticResult({ seed: 21, kind: 'healthy', size: [32, 32, 4] });
      await secured.client().store(ct.files.map((f) => f.bytes));
      assert.equal((await raw(secured.port, '/dicom-web/studies')).status, 401, 'the PACS itself wants credentials');
      const good = await startTestGateway({
        CTGATE_PACS_URL: secured.dicomweb,
        CTGATE_PACS_USER: 'ctgate-pacs',
        CTGATE_PACS_PASSWORD: 'pacs-secret-42',
        CTGATE_PUBLIC_URL: PUBLIC,
      });
      gws.push(good);
      const r = await raw(good.httpPort, `/dicom-web/studies/${ct.studyInstanceUid}/series`, { headers: AUTH });
      assert.equal(r.status, 200);
      assert.ok(!r.body.toString().includes('pacs-secret') && !r.body.toString().includes(`127.0.0.1:${secured.port}`));
      assert.ok(!JSON.stringify(r.headers).includes('pacs-secret'));
      assert.equal((json(r) as unknown[]).length, 1);
      const bad = await startTestGateway({
        CTGATE_PACS_URL: secured.dicomweb,
        CTGATE_PACS_USER: 'ctgate-pacs',
        CTGATE_PACS_PASSWORD: 'wrong',
      });
      gws.push(bad);
      const refused = await raw(bad.httpPort, '/dicom-web/studies', { headers: AUTH });
      assert.equal(refused.status, 502, 'PACS refusing ctgate is a gateway error, not a 401 to the viewer');
      assert.equal(refused.headers['www-authenticate'], undefined);
    } finally {
      for (const g of gws) await g.cleanup();
      await secured.stop();
    }
  });

  it('maps upstream failures: no PACS 503, PACS down 502, PACS silent 504; a client abort aborts the upstream request', async () => {
    const gws: TestGateway[] = [];
    // A fake PACS: /dicom-web/studies never answers; a series retrieve streams slowly forever.
    let upstreamClosed: () => void = () => {};
    const closed = new Promise<void>((r) => {
      upstreamClosed = r;
    });
    const fake = http.createServer((req, res) => {
      if (req.url?.includes('/series/')) {
        res.writeHead(200, { 'Content-Type': 'multipart/related; type="application/dicom"; boundary=slow' });
        const t = setInterval(() => res.write(Buffer.alloc(16 * 1024)), 20);
        res.on('close', () => {
          clearInterval(t);
          upstreamClosed();
        });
      }
    });
    fake.listen(0, '127.0.0.1');
    await once(fake, 'listening');
    const fakePort = (fake.address() as { port: number }).port;
    const sockets = new Set<Socket>();
    fake.on('connection', (s: Socket) => sockets.add(s));
    let silent: Server | undefined;
    try {
      const none = await startTestGateway({});
      gws.push(none);
      const r503 = await raw(none.httpPort, '/dicom-web/studies', { headers: AUTH });
      assert.equal(r503.status, 503);
      assert.equal((json(r503) as { error: string }).error, 'no PACS configured');

      const downPort = await freePort();
      const down = await startTestGateway({ CTGATE_PACS_URL: `http://127.0.0.1:${downPort}/dicom-web` });
      gws.push(down);
      const r502 = await raw(down.httpPort, '/dicom-web/studies', { headers: AUTH });
      assert.equal(r502.status, 502);
      assert.match((json(r502) as { error: string }).error, /PACS unreachable/);
      assert.ok(!r502.body.toString().includes(String(downPort)), 'internal address not revealed');

      const slow = await startTestGateway({ CTGATE_PACS_URL: `http://127.0.0.1:${fakePort}/dicom-web`, CTGATE_PACS_TIMEOUT_MS: '400' });
      gws.push(slow);
      const t0 = Date.now();
      const r504 = await raw(slow.httpPort, '/dicom-web/studies', { headers: AUTH });
      assert.equal(r504.status, 504);
      assert.ok(Date.now() - t0 < 3000);

      // Client abort: read a little of a (never-ending) series retrieve, then hang up.
      await new Promise<void>((resolve, reject) => {
        const req = http.get({ host: '127.0.0.1', port: slow.httpPort, path: '/dicom-web/studies/1.2/series/3.4', headers: AUTH, agent: false }, (res) => {
          res.once('data', () => {
            req.destroy();
            resolve();
          });
        });
        req.on('error', (e) => {
          if (!req.destroyed) reject(e);
        });
      });
      await Promise.race([closed, new Promise((_, reject) => setTimeout(() => reject(new Error('upstream request not aborted')), 3000))]);

      // Also: a PACS that accepts connections and says nothing at all (not even HTTP) → 504.
      silent = createServer((s) => sockets.add(s));
      silent.listen(0, '127.0.0.1');
      await once(silent, 'listening');
      const mute = await startTestGateway({
        CTGATE_PACS_URL: `http://127.0.0.1:${(silent.address() as { port: number }).port}/dicom-web`,
        CTGATE_PACS_TIMEOUT_MS: '300',
      });
      gws.push(mute);
      assert.equal((await raw(mute.httpPort, '/dicom-web/studies', { headers: AUTH })).status, 504);
    } finally {
      for (const g of gws) await g.cleanup();
      for (const s of sockets) s.destroy();
      fake.close();
      silent?.close();
    }
  });
});
