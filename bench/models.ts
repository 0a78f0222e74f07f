/**
 * Per-study model time for a 512×512×300 chest CT (0.7 × 0.7 × 1 mm, synthetic covid phantom), split by stage,
 * with peak memory, beside the same networks run by PyTorch (models/training/checkpoints) on the same inputs in
 * the same run. Goal (issue 4): ≤ 10 s and ≤ 2 GB per study on this machine's CPU.
 *
 * Each configuration runs in its own child process, so its peak RSS is its own:
 *   - "manifest tiles": the pipeline as deployed (tiles from the manifest);
 *   - "whole crop": the lesion model run once over the whole lung crop;
 * then PyTorch (Debian python3-torch, same thread count) runs the lesion network on the whole crop and the
 * classifier on the classifier input that the ONNX run captured.
 *
 * Run: node --import tsx bench/models.ts [--threads 2] [--repeat 2]
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadManifest } from '../src/inference/manifest.js';
import { runPipeline } from '../src/inference/pipeline.js';
import { createOnnxModels } from '../src/inference/session.js';
import { encodeNpy } from '../src/synthetic/masks.js';
import { generateChestCt } from '../src/synthetic/phantom.js';

const { values } = parseArgs({
  options: {
    threads: { type: 'string', default: String(Math.min(2, availableParallelism())) },
    repeat: { type: 'string', default: '2' },
    child: { type: 'string' },
    dump: { type: 'string' },
  },
});
const threads = Number(values.threads);
const repeat = Number(values.repeat);

interface ChildResult {
  config: string;
  stagesMs: Record<string, number>[];
  totalMs: number[];
  peakRssMb: number;
  tiles: number;
  crop: [number, number, number];
  verdict: string;
  probability: number | null;
  lesionOnnxMs: number[];
}

async function child(config: 'manifest' | 'whole', dump?: string): Promise<ChildResult> {
  const phantom = generateChestCt({ seed: 9, kind: 'covid', size: [512, 512, 300], spacing: [0.7, 0.7, 1.0] });
  const manifest = await loadManifest('models/manifest.json');
  const models = await createOnnxModels(manifest, { executionProviders: ['cpu'], intraOpNumThreads: threads });
  if (config === 'whole') models.lesion.tiles = { ...models.lesion.tiles, patch: [4096, 4096, 4096], overlap: [0, 0, 0] };
  let tiles = 0;
  let crop: [number, number, number] = [0, 0, 0];
  let lesionOnnx = 0;
  const lesionRun = models.lesion.run;
  models.lesion.run = async (input, dims) => {
    tiles++;
    crop = dims;
    if (dump && config === 'whole') await writeFile(join(dump, 'lesion-input.npy'), encodeNpy(input, dims));
    const t = performance.now();
    const out = await lesionRun(input, dims);
    lesionOnnx += performance.now() - t;
    return out;
  };
  const clsRun = models.classifier.run;
  models.classifier.run = async (input, dims) => {
    if (dump && config === 'whole') await writeFile(join(dump, 'classifier-input.npy'), encodeNpy(input, dims));
    return clsRun(input, dims);
  };
  const stagesMs: Record<string, number>[] = [];
  const totalMs: number[] = [];
  const lesionOnnxMs: number[] = [];
  let result: Awaited<ReturnType<typeof runPipeline>> | undefined;
  for (let r = 0; r < repeat; r++) {
    tiles = 0;
    lesionOnnx = 0;
    const t = performance.now();
    result = await runPipeline(phantom.volume, models);
    totalMs.push(performance.now() - t);
    stagesMs.push(result.timingsMs as Record<string, number>);
    lesionOnnxMs.push(lesionOnnx);
  }
  return {
    config,
    stagesMs,
    totalMs,
    peakRssMb: process.resourceUsage().maxRSS / 1024,
    tiles,
    crop,
    verdict: result?.verdict ?? '',
    probability: result?.probability ?? null,
    lesionOnnxMs,
  };
}

if (values.child) {
  const r = await child(values.child as 'manifest' | 'whole', values.dump);
  process.stdout.write(`${JSON.stringify(r)}\n`);
  process.exit(0);
}

const dump = await mkdtemp(join(tmpdir(), 'ctgate-bench-models-'));
const runChild = (config: string): ChildResult => {
  const p = spawnSync(
    process.execPath,
    ['--import', 'tsx', 'bench/models.ts', '--child', config, '--dump', dump, '--threads', String(threads), '--repeat', String(repeat)],
    {
      encoding: 'utf8',
      maxBuffer: 1 << 24,
    },
  );
  if (p.status !== 0) throw new Error(`child ${config} failed: ${p.stderr}`);
  return JSON.parse(p.stdout.trim().split('\n').pop() as string) as ChildResult;
};
const min = (xs: number[]) => Math.min(...xs);
const fmt = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

console.log(
  `bench/models: 512×512×300 synthetic chest CT (0.7×0.7×1 mm), ${threads} thread(s), best of ${repeat}, load ${(await import('node:os')).loadavg()[0]?.toFixed(2)}`,
);
const results = [runChild('manifest'), runChild('whole')];
for (const r of results) {
  const best = r.totalMs.indexOf(min(r.totalMs));
  const stages = r.stagesMs[best] as Record<string, number>;
  console.log(
    `  onnxruntime-node, ${r.config === 'manifest' ? 'manifest tiles' : 'whole crop   '}: total ${fmt(min(r.totalMs))}  [${Object.entries(stages)
      .map(([k, v]) => `${k} ${v} ms`)
      .join(
        ', ',
      )}]  lesion net ${fmt(min(r.lesionOnnxMs))} in ${r.tiles} run(s), peak RSS ${r.peakRssMb.toFixed(0)} MB, ${r.verdict} p=${r.probability?.toFixed(3)}`,
  );
}
const crop = (results[1] as ChildResult).crop;
const py = spawnSync('/usr/bin/python3', ['bench/models-torch.py', dump, String(threads), String(repeat)], { encoding: 'utf8' });
if (py.status !== 0) {
  console.log(`  PyTorch: not run (${(py.stderr || py.error?.message || '').trim().split('\n').pop()})`);
} else {
  const t = JSON.parse(py.stdout.trim().split('\n').pop() as string) as { lesionMs: number; classifierMs: number; peakRssMb: number; torch: string };
  const ortLesion = min((results[1] as ChildResult).lesionOnnxMs);
  console.log(
    `  PyTorch ${t.torch}, same nets, whole crop ${crop.join('×')}: lesion net ${fmt(t.lesionMs)}, classifier ${t.classifierMs.toFixed(0)} ms, peak RSS ${t.peakRssMb.toFixed(0)} MB`,
  );
  console.log(`  lesion net, onnxruntime-node / PyTorch: ${(ortLesion / t.lesionMs).toFixed(2)}×`);
}
const deployed = results[0] as ChildResult;
console.log(
  `  goal ≤ 10 s and ≤ 2048 MB per study: ${min(deployed.totalMs) <= 10_000 ? 'PASS' : 'MISS'} (${fmt(min(deployed.totalMs))}), ${deployed.peakRssMb <= 2048 ? 'PASS' : 'MISS'} (${deployed.peakRssMb.toFixed(0)} MB)`,
);
await rm(dump, { recursive: true, force: true });
