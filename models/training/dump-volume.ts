/**
 * Writes the models' inputs for one real CT series exactly as the service makes them (ctgate's own DICOM reading,
 * resampling, lung mask, crop, window and lesion model), so that training on whole real volumes sees what the
 * service will see. Used by models/training/retrain-volumes.sh; never by the service.
 *
 *   node --import tsx models/training/dump-volume.ts --manifest models/manifest.json --out DIR SERIES_DIR
 *
 * DIR/meta.json (box [x, y, z], classifier shape, probability, lesion mL), DIR/lesion-input.f32 (z, y, x),
 * DIR/lungs.u8, DIR/lesion-mask.u8 (same grid) and DIR/classifier-input.f32 (NCDHW), little-endian raw arrays.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadSeriesFromFiles } from '../../src/cli/analyze.js';
import { loadManifest } from '../../src/inference/manifest.js';
import { type ModelInputs, runPipeline } from '../../src/inference/pipeline.js';
import { createOnnxModels } from '../../src/inference/session.js';

const { values, positionals } = parseArgs({
  options: { manifest: { type: 'string', default: 'models/manifest.json' }, out: { type: 'string' }, threads: { type: 'string', default: '2' } },
  allowPositionals: true,
});
if (!values.out || positionals.length === 0) {
  process.stderr.write('usage: dump-volume.ts --out DIR [--manifest FILE] SERIES_DIR...\n');
  process.exit(1);
}
const manifest = await loadManifest(values.manifest as string);
const series = await loadSeriesFromFiles(positionals);
const models = await createOnnxModels(manifest, { executionProviders: ['cpu'], intraOpNumThreads: Number(values.threads) });
let inputs: ModelInputs | undefined;
const result = await runPipeline(series.volume, models, {
  onModelInputs: (i) => {
    inputs = i;
  },
});
if (!inputs) throw new Error(`no model inputs: the study is ${result.category} (${result.warnings.join('; ')})`);
const out = values.out as string;
await mkdir(out, { recursive: true });
const bytes = (a: Float32Array | Uint8Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
await writeFile(join(out, 'lesion-input.f32'), bytes(inputs.lesionInput));
await writeFile(join(out, 'lungs.u8'), bytes(inputs.lungLabels));
await writeFile(join(out, 'lesion-mask.u8'), bytes(inputs.lesionMask));
await writeFile(join(out, 'classifier-input.f32'), bytes(inputs.classifierInput));
const meta = {
  box: inputs.box,
  classifierShape: inputs.classifierShape,
  probability: result.probability,
  category: result.category,
  lesionVolumeMl: result.findings?.lesionVolumeMl ?? null,
  slices: series.volume.geometry.size[2],
};
await writeFile(join(out, 'meta.json'), `${JSON.stringify(meta, null, 2)}\n`);
process.stdout.write(`${JSON.stringify(meta)}\n`);
