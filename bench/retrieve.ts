/**
 * Retrieval of a 512×512×300 CT series from a real Orthanc on loopback (WADO-RS frames, uncompressed), beside
 * curl fetching the same frames in the same run — the practical limit. Goal (issue 3): within 1.5× of curl.
 * Also prints peak memory against the decoded volume size (goal: ≤ ~2×).
 * Run: node --import tsx --expose-gc bench/retrieve.ts [--slices 300] [--concurrency 4] [--runs 3]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DicomWebClient } from '../src/dicomweb/client.js';
import { sliceMetaFromJson } from '../src/dicomweb/metadata.js';
import { retrieveVolume } from '../src/dicomweb/retrieve.js';
import type { HuVolume } from '../src/imaging/volume.js';
import { writeCtSeries } from '../src/synthetic/dicom-writer.js';
import { TestOrthanc } from '../test/helpers/orthanc.js';

const { values } = parseArgs({
  options: { slices: { type: 'string', default: '300' }, concurrency: { type: 'string', default: '4' }, runs: { type: 'string', default: '3' } },
});
const nz = Number(values.slices);
const concurrency = Number(values.concurrency);
const [nx, ny] = [512, 512];
const decodedMb = (nx * ny * nz * 2) / 2 ** 20;

const pacs = new TestOrthanc({ stableAgeSeconds: 1 });
await pacs.start();
try {
  const volume: HuVolume = {
    geometry: { size: [nx, ny, nz], spacing: [0.7, 0.7, 1], origin: [-179, -179, -150], direction: [1, 0, 0, 0, 1, 0, 0, 0, 1] },
    data: new Int16Array(nx * ny * nz),
  };
  for (let i = 0; i < volume.data.length; i++) volume.data[i] = (((i * 2654435761) >>> 21) % 2000) - 1000;
  const series = writeCtSeries(volume, { seed: 7, accessionNumber: 'BENCH-RETRIEVE' });
  const client = new DicomWebClient({ url: pacs.dicomweb, auth: { kind: 'none' }, timeoutMs: 60_000, retries: 2 });
  process.stdout.write(`storing ${series.files.length} slices (${decodedMb.toFixed(0)} MiB of pixels) in Orthanc `);
  for (let i = 0; i < series.files.length; i += 25) {
    await client.store(series.files.slice(i, i + 25).map((f) => f.bytes));
    process.stdout.write('.');
  }
  process.stdout.write(' done\n');
  const { studyInstanceUid: st, seriesInstanceUid: se } = series;

  // curl baseline: the same frame requests, same concurrency, one curl process.
  const metas = (await client.seriesMetadata(st, se)).map(sliceMetaFromJson);
  const dir = mkdtempSync(join(tmpdir(), 'ctgate-bench-'));
  const urls = join(dir, 'urls.txt');
  writeFileSync(
    urls,
    metas.map((m) => `url = "${pacs.dicomweb}/studies/${st}/series/${se}/instances/${m.sopInstanceUid}/frames/1"\noutput = "/dev/null"\n`).join(''),
  );
  const accept = `Accept: ${process.env.BENCH_ACCEPT ?? 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'}`;
  // The same requests ctgate makes: the series metadata, then every frame.
  const curl = (): { ms: number; bytes: number } => {
    const t = performance.now();
    execFileSync('curl', ['-s', '-o', '/dev/null', '-H', 'Accept: application/dicom+json', `${pacs.dicomweb}/studies/${st}/series/${se}/metadata`]);
    const out = execFileSync(
      'curl',
      ['-s', '--no-progress-meter', '--parallel', '--parallel-max', String(concurrency), '-H', accept, '-w', '%{size_download}\n', '-K', urls],
      { encoding: 'utf8', maxBuffer: 1 << 24 },
    );
    return { ms: performance.now() - t, bytes: out.split('\n').reduce((s, l) => s + (Number(l) || 0), 0) };
  };
  const metadataMs: number[] = [];
  const ours = async (): Promise<{ ms: number; peakRss: number }> => {
    // Let the previous run's volume go first: V8 hands large ArrayBuffers back to the system after the GC, not
    // during it, so a baseline taken right after gc() still held it and the growth read ~0.3× instead of ~1×.
    global.gc?.();
    await new Promise((r) => setTimeout(r, 100));
    global.gc?.();
    const base = process.memoryUsage().rss;
    let peak = base;
    const timer = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
    }, 20);
    const t = performance.now();
    let firstFrameAt = 0;
    const r = await retrieveVolume(client, st, se, {
      concurrency,
      onProgress: (done) => {
        if (done === 1) firstFrameAt = performance.now() - t;
      },
    });
    const ms = performance.now() - t;
    metadataMs.push(firstFrameAt);
    clearInterval(timer);
    peak = Math.max(peak, process.memoryUsage().rss);
    if (r.volume.data.length !== nx * ny * nz) throw new Error('volume size mismatch');
    return { ms, peakRss: peak - base };
  };
  curl();
  // The warm-up run counts for memory (it is the first volume this process allocates), not for time.
  let peak = (await ours()).peakRss;
  const runs = Number(values.runs);
  const c: number[] = [];
  const o: number[] = [];
  let curlBytes = 0;
  for (let i = 0; i < runs; i++) {
    const a = curl();
    c.push(a.ms);
    curlBytes = a.bytes;
    const b = await ours();
    o.push(b.ms);
    peak = Math.max(peak, b.peakRss);
  }
  const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] as number;
  const mbps = (ms: number) => decodedMb / (ms / 1000);
  console.log(`series ${nx}×${ny}×${nz}, ${concurrency} requests in flight, median of ${runs}:`);
  console.log(
    `  curl (metadata + same frames)    ${med(c).toFixed(0).padStart(6)} ms  ${mbps(med(c)).toFixed(0).padStart(5)} MiB/s  (${(curlBytes / 2 ** 20).toFixed(0)} MiB downloaded)`,
  );
  console.log(
    `  ctgate retrieveVolume → HU      ${med(o).toFixed(0).padStart(6)} ms  ${mbps(med(o)).toFixed(0).padStart(5)} MiB/s  = ${(med(o) / med(c)).toFixed(2)}× curl; goal ≤ 1.5×: ${med(o) / med(c) <= 1.5 ? 'PASS' : 'MISS'}`,
  );
  console.log(`    of which metadata + planning until the first frame arrived: ${med(metadataMs).toFixed(0)} ms`);
  console.log(`    every run (ms): curl ${c.map((x) => x.toFixed(0)).join(' ')}; ctgate ${o.map((x) => x.toFixed(0)).join(' ')}`);
  console.log(
    `  peak RSS growth during retrieval ${(peak / 2 ** 20).toFixed(0)} MiB for ${decodedMb.toFixed(0)} MiB decoded = ${(peak / 2 ** 20 / decodedMb).toFixed(2)}×; goal ≤ ~2×: ${peak / 2 ** 20 / decodedMb <= 2.1 ? 'PASS' : 'MISS'}`,
  );
} finally {
  await pacs.stop();
}
