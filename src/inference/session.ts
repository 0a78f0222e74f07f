/**
 * ONNX Runtime sessions: made once per model file and options, then reused by every study a process handles.
 *
 * Execution providers come from configuration, in order of preference (default: CUDA, then CPU). onnxruntime-node
 * does not fall back by itself — a session asked for CUDA throws when the CUDA provider or its libraries are
 * missing (the npm package ships only the CPU provider unless installed with ONNXRUNTIME_NODE_INSTALL=cuda12) —
 * so a failure with a GPU provider is caught and the session made again with CPU only, and the provider that
 * was actually used is recorded.
 */
import * as ort from 'onnxruntime-node';
import type { ClassifierModelEntry, LesionModelEntry, Manifest } from './manifest.js';
import { modelId } from './manifest.js';
import type { ClassifierModel, LesionModel, PipelineModels } from './pipeline.js';
import { type SessionFactory, threadedSessionFactory } from './session-thread.js';

export type ExecutionProvider = 'cuda' | 'cpu';
export const EXECUTION_PROVIDERS: readonly ExecutionProvider[] = ['cuda', 'cpu'];

export interface SessionOptions {
  /** In order of preference; default ['cuda', 'cpu']. */
  executionProviders?: ExecutionProvider[];
  /** Threads for one operator (0 or unset: onnxruntime's default, one per core). */
  intraOpNumThreads?: number;
}

export interface OpenedSession {
  session: ort.InferenceSession;
  /** The provider the session runs on. */
  provider: ExecutionProvider;
  /** Why a preferred provider was not used, when it was not. */
  fallbackReason?: string;
}

/** Makes an onnxruntime session (injectable so the fallback can be tested without a GPU build). */
export type { SessionFactory };

/** Sessions on this thread: the inference holds the event loop while it runs (see session-thread.ts). */
export const inProcessSessionFactory: SessionFactory = (model, options) =>
  typeof model === 'string' ? ort.InferenceSession.create(model, options) : ort.InferenceSession.create(model, options);

const defaultFactory: SessionFactory = threadedSessionFactory;

export function parseExecutionProviders(text: string): ExecutionProvider[] {
  const list = text
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== '');
  for (const p of list)
    if (!(EXECUTION_PROVIDERS as readonly string[]).includes(p)) throw new Error(`unknown execution provider "${p}" (use ${EXECUTION_PROVIDERS.join(', ')})`);
  if (list.length === 0) throw new Error('no execution provider given');
  return list as ExecutionProvider[];
}

/**
 * Opens a model with the preferred providers; if that throws and a provider other than CPU was asked for,
 * tries again with CPU alone (when CPU is in the list).
 */
export async function openSession(model: string | Uint8Array, opts: SessionOptions = {}, factory: SessionFactory = defaultFactory): Promise<OpenedSession> {
  const providers = opts.executionProviders ?? ['cuda', 'cpu'];
  if (providers.length === 0) throw new Error('no execution provider given');
  const base: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: 'all',
    interOpNumThreads: 1,
    ...(opts.intraOpNumThreads ? { intraOpNumThreads: opts.intraOpNumThreads } : {}),
  };
  const first = providers[0] as ExecutionProvider;
  try {
    // A failed GPU attempt prints a native error through onnxruntime's process-wide logger, set up by the first
    // session a process makes: keep it to fatal errors when a GPU is tried (fallbackReason says what failed).
    if (first !== 'cpu') ort.env.logLevel = 'fatal';
    const session = await factory(model, { ...base, executionProviders: [...providers] });
    return { session, provider: first };
  } catch (e) {
    if (first === 'cpu' || !providers.includes('cpu')) throw e;
    const reason = `${first} unavailable: ${(e as Error).message.split('\n')[0]}`;
    const session = await factory(model, { ...base, executionProviders: ['cpu'] });
    return { session, provider: 'cpu', fallbackReason: reason };
  }
}

/** Sessions by model file and options, opened on first use and shared afterwards. */
export class SessionCache {
  private readonly sessions = new Map<string, Promise<OpenedSession>>();
  constructor(private readonly factory: SessionFactory = defaultFactory) {}

  get(file: string, opts: SessionOptions = {}): Promise<OpenedSession> {
    const key = JSON.stringify([file, opts.executionProviders ?? null, opts.intraOpNumThreads ?? 0]);
    let s = this.sessions.get(key);
    if (!s) {
      s = openSession(file, opts, this.factory);
      // A failed open is not cached: the next study tries again.
      s.catch(() => this.sessions.delete(key));
      this.sessions.set(key, s);
    }
    return s;
  }

  get size(): number {
    return this.sessions.size;
  }

  async release(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    for (const s of all) {
      try {
        await (await s).session.release();
      } catch {
        // already failed or released
      }
    }
  }
}

/** The process-wide cache (a worker keeps its sessions across jobs). */
export const sessions = new SessionCache();

/** The crop margin a manifest states (input.crop.marginVoxels, x y z), when it states one. */
function cropMargin(crop: unknown): [number, number, number] | undefined {
  const m = (crop as { marginVoxels?: unknown } | undefined)?.marginVoxels;
  return Array.isArray(m) && m.length === 3 && m.every((v) => Number.isInteger(v) && v >= 0) ? (m as [number, number, number]) : undefined;
}

function lesionRunner(entry: LesionModelEntry, opened: OpenedSession): LesionModel {
  const inputName = entry.input.name;
  const outputName = entry.outputs[0]?.name as string;
  const inp = entry.input;
  return {
    id: modelId(entry),
    spacing: inp.spacing,
    window: inp.window,
    tiles: { patch: inp.patch, overlap: inp.overlap, multipleOf: inp.multipleOf, padValue: typeof inp.padValue === 'number' ? inp.padValue : 0 },
    ...(cropMargin(inp.crop) ? { cropMarginVoxels: cropMargin(inp.crop) } : {}),
    threshold: entry.threshold,
    run: async (input, [d, h, w]) => {
      const result = await opened.session.run({ [inputName]: new ort.Tensor('float32', input, [1, 1, d, h, w]) }, [outputName]);
      const out = result[outputName];
      if (!out) throw new Error(`${modelId(entry)} returned no "${outputName}" output`);
      return out.data as Float32Array;
    },
  };
}

function classifierRunner(entry: ClassifierModelEntry, opened: OpenedSession): ClassifierModel {
  const inputName = entry.input.name;
  const outputName = entry.outputs[0]?.name as string;
  const [, c, d, h, w] = entry.input.shape;
  return {
    id: modelId(entry),
    window: entry.input.window,
    shape: [c, d, h, w],
    channels: entry.input.channels,
    threshold: entry.threshold,
    ...(entry.minOpacityMl !== undefined ? { minOpacityMl: entry.minOpacityMl } : {}),
    run: async (input, dims) => {
      const result = await opened.session.run({ [inputName]: new ort.Tensor('float32', input, [1, ...dims]) }, [outputName]);
      const out = result[outputName];
      if (!out) throw new Error(`${modelId(entry)} returned no "${outputName}" output`);
      const data = out.data as Float32Array;
      if (data.length !== 1) throw new Error(`${modelId(entry)}: expected one probability, got ${data.length} values`);
      return data[0] as number;
    },
  };
}

/** The manifest's models as pipeline functions backed by ONNX Runtime sessions (from `cache`). */
export async function createOnnxModels(
  manifest: Manifest,
  opts: SessionOptions = {},
  cache: SessionCache = sessions,
): Promise<PipelineModels & { fallbackReasons: string[] }> {
  const lesion = await cache.get(manifest.lesion.path, opts);
  const classifier = await cache.get(manifest.classifier.path, opts);
  const executionProvider = lesion.provider === classifier.provider ? lesion.provider : `lesion:${lesion.provider},classifier:${classifier.provider}`;
  return {
    lung: { id: modelId(manifest.lung), spacing: manifest.lung.input.spacing },
    lesion: lesionRunner(manifest.lesion, lesion),
    classifier: classifierRunner(manifest.classifier, classifier),
    executionProvider,
    fallbackReasons: [lesion.fallbackReason, classifier.fallbackReason].filter((r): r is string => r !== undefined),
  };
}
