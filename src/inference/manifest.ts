/**
 * models/manifest.json: which ONNX models ctgate runs and how their inputs are made (DESIGN.md, "models/").
 * Validated with zod (errors name the path of the bad value) and every model file's sha256 is checked when
 * the manifest is loaded, so a swapped or truncated file never reaches a patient's study.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { z } from 'zod';

export class ManifestError extends Error {
  constructor(
    readonly file: string,
    readonly problems: string[],
  ) {
    super(`${file}: invalid model manifest:\n  ${problems.join('\n  ')}`);
    this.name = 'ManifestError';
  }
}

const positive = z.number().positive();
const xyz = z.tuple([positive, positive, positive]);
const count = z.number().int().nonnegative();
const window = z.tuple([z.number(), z.number()]).refine(([lo, hi]) => hi > lo, { message: 'a window [min, max] with max > min' });
const sha256 = z.string().regex(/^[0-9a-f]{64}$/i, '64 hexadecimal digits');
const dim = z.union([z.number().int().positive(), z.string().min(1)]);
const output = z.object({ name: z.string().min(1), meaning: z.string().optional() }).passthrough();
const probability = z.number().min(0).max(1);

const common = {
  name: z.string().min(1),
  version: z.string().min(1),
  training: z.unknown().optional(),
  metrics: z.unknown().optional(),
  intendedUse: z.unknown().optional(),
};

const lesionModel = z
  .object({
    ...common,
    task: z.literal('lesion-segmentation'),
    file: z.string().min(1),
    sha256,
    input: z
      .object({
        name: z.string().min(1),
        shape: z.array(dim).length(5),
        dtype: z.literal('float32'),
        layout: z.literal('NCDHW'),
        spacing: xyz,
        window,
        /** z, y, x voxels. */
        patch: z.tuple([z.number().int().positive(), z.number().int().positive(), z.number().int().positive()]),
        /** z, y, x voxels shared by neighbouring tiles. */
        overlap: z.tuple([count, count, count]),
        multipleOf: z.number().int().positive(),
      })
      .passthrough()
      .superRefine((inp, ctx) => {
        inp.patch.forEach((p, a) => {
          if (p % inp.multipleOf !== 0)
            ctx.addIssue({ code: 'custom', path: ['patch', a], message: `${p} is not a multiple of multipleOf (${inp.multipleOf})` });
          const o = inp.overlap[a] as number;
          if (o >= p) ctx.addIssue({ code: 'custom', path: ['overlap', a], message: `overlap ${o} must be smaller than the patch (${p})` });
        });
        if (inp.shape[0] !== 1 || inp.shape[1] !== 1)
          ctx.addIssue({ code: 'custom', path: ['shape'], message: 'a [1, 1, D, H, W] shape (one image, one channel)' });
      }),
    outputs: z.array(output).min(1),
    threshold: probability,
  })
  .passthrough();

const classifierModel = z
  .object({
    ...common,
    task: z.literal('classification'),
    file: z.string().min(1),
    sha256,
    input: z
      .object({
        name: z.string().min(1),
        shape: z.tuple([z.literal(1), z.number().int().positive(), z.number().int().positive(), z.number().int().positive(), z.number().int().positive()]),
        dtype: z.literal('float32'),
        layout: z.literal('NCDHW'),
        spacing: xyz.optional(),
        window,
        channels: z.array(z.string().min(1)).min(1),
      })
      .passthrough()
      .superRefine((inp, ctx) => {
        if (inp.channels.length !== inp.shape[1])
          ctx.addIssue({ code: 'custom', path: ['channels'], message: `${inp.channels.length} channels named but shape has ${inp.shape[1]}` });
      }),
    outputs: z.array(output).min(1),
    threshold: probability,
    /** Lesion volume (mL) under which a study has no significant opacity (findings.ts, Category). */
    minOpacityMl: z.number().nonnegative().optional(),
  })
  .passthrough();

const lungModel = z
  .object({
    ...common,
    task: z.literal('lung-segmentation'),
    method: z.literal('classical'),
    input: z.object({ spacing: xyz, window: window.optional() }).passthrough(),
  })
  .passthrough();

const schema = z
  .object({
    schemaVersion: z.literal(1),
    models: z.array(z.discriminatedUnion('task', [lesionModel, classifierModel, lungModel])).min(1),
  })
  .passthrough()
  .superRefine((doc, ctx) => {
    for (const task of ['lesion-segmentation', 'classification'] as const) {
      const n = doc.models.filter((m) => m.task === task).length;
      if (n !== 1) ctx.addIssue({ code: 'custom', path: ['models'], message: `exactly one ${task} model is needed, found ${n}` });
    }
    if (doc.models.filter((m) => m.task === 'lung-segmentation').length > 1)
      ctx.addIssue({ code: 'custom', path: ['models'], message: 'at most one lung-segmentation entry' });
  });

export type LesionModelEntry = z.infer<typeof lesionModel> & { path: string };
export type ClassifierModelEntry = z.infer<typeof classifierModel> & { path: string };
export type LungModelEntry = z.infer<typeof lungModel>;
export type ManifestDoc = z.infer<typeof schema>;

export interface Manifest {
  file: string;
  doc: ManifestDoc;
  lesion: LesionModelEntry;
  classifier: ClassifierModelEntry;
  /** The classical lung step; a default (1 × 1 × 2.5 mm) when the manifest has no entry. */
  lung: LungModelEntry;
  /** "name@version" of every model that takes part, in pipeline order (lung, lesion, classifier). */
  modelIds: string[];
  /** Things a reader of the results should know, e.g. a model marked as a placeholder (untrained weights). */
  warnings: string[];
}

export const DEFAULT_LUNG_ENTRY: LungModelEntry = {
  name: 'lung-threshold',
  version: 'builtin',
  task: 'lung-segmentation',
  method: 'classical',
  input: { spacing: [1, 1, 2.5], window: [-150, 350] },
};

export const modelId = (m: { name: string; version: string }) => `${m.name}@${m.version}`;

/** Validates a parsed manifest; model file paths are resolved against the manifest's folder. No file is read. */
export function parseManifest(doc: unknown, file = '<manifest>'): Manifest {
  const r = schema.safeParse(doc);
  if (!r.success) {
    throw new ManifestError(
      file,
      r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`),
    );
  }
  const base = dirname(resolve(file));
  const at = (f: string) => (isAbsolute(f) ? f : resolve(base, f));
  const d = r.data;
  const lesion = d.models.find((m) => m.task === 'lesion-segmentation') as z.infer<typeof lesionModel>;
  const classifier = d.models.find((m) => m.task === 'classification') as z.infer<typeof classifierModel>;
  const lung = (d.models.find((m) => m.task === 'lung-segmentation') as LungModelEntry | undefined) ?? DEFAULT_LUNG_ENTRY;
  return {
    file,
    doc: d,
    lesion: { ...lesion, path: at(lesion.file) },
    classifier: { ...classifier, path: at(classifier.file) },
    lung,
    modelIds: [modelId(lung), modelId(lesion), modelId(classifier)],
    warnings: [lesion, classifier].flatMap((m) => {
      const note = (m.training as { note?: unknown } | undefined)?.note;
      return typeof note === 'string' && /placeholder|untrained/i.test(note) ? [`${modelId(m)} is marked as not trained: ${note}`] : [];
    }),
  };
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Checks every model file against its sha256; throws ManifestError naming each file that is missing or differs. */
export async function verifyModelFiles(m: Manifest): Promise<void> {
  const problems: string[] = [];
  for (const e of [m.lesion, m.classifier]) {
    let actual: string;
    try {
      actual = await sha256File(e.path);
    } catch (err) {
      problems.push(`${e.name}: cannot read model file ${e.path}: ${(err as Error).message}`);
      continue;
    }
    if (actual.toLowerCase() !== e.sha256.toLowerCase()) {
      problems.push(`${e.name}: sha256 of ${e.path} is ${actual}, the manifest says ${e.sha256.toLowerCase()}`);
    }
  }
  if (problems.length > 0) throw new ManifestError(m.file, problems);
}

/** Reads, validates and verifies (sha256 of every model file) a manifest. */
export async function loadManifest(file: string): Promise<Manifest> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new ManifestError(file, [`cannot read: ${(e as Error).message}`]);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new ManifestError(file, [`not valid JSON: ${(e as Error).message}`]);
  }
  const m = parseManifest(doc, file);
  await verifyModelFiles(m);
  return m;
}
