/**
 * The /dicom-web proxy against Orthanc directly: every frame of a 512×512×N synthetic CT series (WADO-RS frames,
 * uncompressed), fetched by the same node:http client with the same concurrency, once straight from Orthanc and
 * once through a real ctgate gateway, runs alternating. Goal (issue 6): through the proxy ≥ 90 % of direct MB/s.
 * Needs Orthanc with the DICOMweb plugin and Redis (the gateway's), as the integration tests do.
 * Run: node --import tsx bench/proxy.ts [--slices 120] [--concurrency 4] [--runs 5]
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import type { Duplex } from 'node:stream';
import { parseArgs } from 'node:util';
import { DicomWebClient } from '../src/dicomweb/client.js';
import { str, TAG } from '../src/dicomweb/dicom-json.js';
import type { HuVolume } from '../src/imaging/volume.js';
import { writeCtSeries } from '../src/synthetic/dicom-writer.js';
import { TEST_TOKEN } from '../test/helpers/gateway.js';
import { TestOrthanc } from '../test/helpers/orthanc.js';

const { values } = parseArgs({
  options: { slices: { type: 'string', default: '120' }, concurrency: { type: 'string', default: '4' }, runs: { type: 'string', default: '5' } },
});
const nz = Number(values.slices);
const concurrency = Number(values.concurrency);
const runs = Number(values.runs);
const [nx, ny] = [512, 512];
const ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*';

/** Keeps every socket (Orthanc says "Keep-Alive: timeout=1", which Node's agent takes as "don't"): same for both sides. */
class KeepAgent extends http.Agent {
  override keepSocketAlive(socket: Duplex): boolean {
    (socket as Duplex & { setKeepAlive(e: boolean, d: number): void }).setKeepAlive(true, 1000);
    return true;
  }
}

function get(agent: http.Agent, url: URL, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent, headers }, (res) => {
        if (res.statusCode !== 200) reject(new Error(`${url.pathname}: HTTP ${res.statusCode}`));
        let n = 0;
        res.on('data', (c: Buffer) => {
          n += c.length;
        });
        res.on('end', () => resolve(n));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

/** Every frame URL under `base`, `concurrency` at a time, on a fresh keep-alive pool. */
async function fetchAll(base: string, paths: string[], headers: Record<string, string>): Promise<{ ms: number; bytes: number }> {
  const agent = new KeepAgent({ keepAlive: true, maxSockets: concurrency });
  const t = performance.now();
  let next = 0;
  let bytes = 0;
  const worker = async () => {
    while (next < paths.length) {
      const p = paths[next++] as string;
      const n = await get(agent, new URL(base + p), headers);
      bytes += n;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const ms = performance.now() - t;
  agent.destroy();
  return { ms, bytes };
}

/**
 * The gateway in a process of its own, as deployed: in this process it would share one JS thread with the client
 * (and on a 2-core box the client, the gateway and Orthanc already contend for the CPUs).
 */
async function startGatewayProcess(pacsUrl: string): Promise<{ port: number; stop: () => Promise<void> }> {
  const helper = new URL('../test/helpers/gateway.ts', import.meta.url).href;
  const code = `const { startTestGateway } = await import(${JSON.stringify(helper)});
const gw = await startTestGateway({ CTGATE_PACS_URL: ${JSON.stringify(pacsUrl)}, CTGATE_LOG_LEVEL: 'error' });
process.stdout.write('PORT ' + gw.httpPort + '\\n');
process.stdin.on('end', async () => { await gw.cleanup(); process.exit(0); });
process.stdin.resume();`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      const m = /PORT (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (c) => reject(new Error(`gateway exited (${c})`)));
  });
  return {
    port,
    stop: async () => {
      child.stdin.end();
      await once(child, 'exit');
    },
  };
}

const pacs = new TestOrthanc({ stableAgeSeconds: 1 });
await pacs.start();
const gw = await startGatewayProcess(pacs.dicomweb);
try {
  const volume: HuVolume = {
    geometry: { size: [nx, ny, nz], spacing: [0.7, 0.7, 2.5], origin: [-179, -179, -150], direction: [1, 0, 0, 0, 1, 0, 0, 0, 1] },
    data: new Int16Array(nx * ny * nz),
  };
  for (let i = 0; i < volume.data.length; i++) volume.data[i] = (((i * 2654435761) >>> 21) % 2000) - 1000;
  const series = writeCtSeries(volume, { seed: 9, accessionNumber: 'BENCH-PROXY' });
  const client = new DicomWebClient({ url: pacs.dicomweb, auth: { kind: 'none' }, timeoutMs: 60_000, retries: 2 });
  process.stdout.write(`storing ${series.files.length} slices (${((nx * ny * nz * 2) / 2 ** 20).toFixed(0)} MiB of pixels) in Orthanc `);
  for (let i = 0; i < series.files.length; i += 25) {
    await client.store(series.files.slice(i, i + 25).map((f) => f.bytes));
    process.stdout.write('.');
  }
  process.stdout.write(' done\n');
  const { studyInstanceUid: st, seriesInstanceUid: se } = series;
  const sops = (await client.searchInstances(st, se)).map((i) => str(i, TAG.SOPInstanceUID) as string);
  const paths = sops.map((sop) => `/studies/${st}/series/${se}/instances/${sop}/frames/1`);
  const direct = { base: pacs.dicomweb, headers: { Accept: ACCEPT } };
  const proxy = { base: `http://127.0.0.1:${gw.port}/dicom-web`, headers: { Accept: ACCEPT, Authorization: `Bearer ${TEST_TOKEN}` } };

  // Warm-up of both (first-use costs, Orthanc's cache), then alternate.
  await fetchAll(direct.base, paths, direct.headers);
  await fetchAll(proxy.base, paths, proxy.headers);
  const mbs = { direct: [] as number[], proxy: [] as number[] };
  for (let r = 0; r < runs; r++) {
    for (const [name, side] of (r % 2
      ? [
          ['proxy', proxy],
          ['direct', direct],
        ]
      : [
          ['direct', direct],
          ['proxy', proxy],
        ]) as ['direct' | 'proxy', typeof direct][]) {
      const { ms, bytes } = await fetchAll(side.base, paths, side.headers);
      if (bytes < nx * ny * 2 * paths.length) throw new Error(`${name}: only ${bytes} bytes`);
      mbs[name].push(bytes / 2 ** 20 / (ms / 1000));
    }
  }
  const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)] as number;
  const d = median(mbs.direct);
  const p = median(mbs.proxy);
  const fmt = (a: number[]) => a.map((x) => x.toFixed(0)).join(' ');
  console.log(`frames: ${paths.length} × ${(nx * ny * 2) / 1024} KiB, concurrency ${concurrency}, ${runs} alternating runs each`);
  console.log(`direct from Orthanc : median ${d.toFixed(1)} MB/s  (runs: ${fmt(mbs.direct)})`);
  console.log(`through ctgate proxy: median ${p.toFixed(1)} MB/s  (runs: ${fmt(mbs.proxy)})`);
  const ratio = p / d;
  console.log(`proxy/direct: ${(ratio * 100).toFixed(1)} %  (goal ≥ 90 %)  ${ratio >= 0.9 ? 'PASS' : 'MISS'}`);
} finally {
  await gw.stop();
  await pacs.stop();
}
