/**
 * How long the screening pipeline holds the worker's event loop (the thread that renews the job's BullMQ lock,
 * 8 s by default): the longest gap between 10 ms timer ticks during one analysis of a synthetic 128×128×52 covid
 * phantom with the trained models, with the ONNX sessions on the session thread (session-thread.ts, what the
 * worker uses) beside the baseline measured in the same run: the same sessions on the calling thread.
 *
 *   node --import tsx bench/event-loop.ts [--runs 2] [--threads 2]
 */
import { parseArgs } from 'node:util';
import { loadManifest } from '../src/inference/manifest.js';
import { runPipeline } from '../src/inference/pipeline.js';
import { createOnnxModels, inProcessSessionFactory, SessionCache } from '../src/inference/session.js';
import { threadedSessionFactory } from '../src/inference/session-thread.js';
import { generateChestCt } from '../src/synthetic/phantom.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '2' }, threads: { type: 'string', default: '2' } } });
const runs = Number(values.runs);
const manifest = await loadManifest('models/manifest.json');
const volume = generateChestCt({ seed: 621, kind: 'covid', size: [128, 128, 52], spacing: [2.6, 2.6, 5] }).volume;

async function measure(label: string, cache: SessionCache): Promise<void> {
  const models = await createOnnxModels(manifest, { executionProviders: ['cpu'], intraOpNumThreads: Number(values.threads) }, cache);
  for (let i = 0; i < runs; i++) {
    let last = performance.now();
    let longest = 0;
    const tick = setInterval(() => {
      const now = performance.now();
      longest = Math.max(longest, now - last);
      last = now;
    }, 10);
    const t0 = performance.now();
    await runPipeline(volume, models);
    clearInterval(tick);
    longest = Math.max(longest, performance.now() - last);
    console.log(`${label.padEnd(34)} run ${i + 1}: analysis ${Math.round(performance.now() - t0)} ms, longest event-loop gap ${Math.round(longest)} ms`);
  }
  await cache.release();
}

await measure('baseline: sessions on this thread', new SessionCache(inProcessSessionFactory));
await measure('sessions on the session thread', new SessionCache(threadedSessionFactory));
