/**
 * The model set a worker runs, swapped in place when a new one is installed (the paper's devices were updated
 * remotely): before each study the worker leases the current set; when the manifest file has changed since the
 * last look, the new manifest is loaded, its model files verified (sha256) and opened, and only then does it
 * become current. A study in flight keeps the set it leased, so nothing queued or running is dropped, and the old
 * sessions are released when the last lease on them ends. A broken install (bad manifest, wrong sha256, a model
 * onnxruntime cannot open) leaves the running set in place and is reported in `status().lastError`.
 *
 * Installing a set: copy the new .onnx files under new names next to the manifest, then replace the manifest with
 * a rename (atomic), e.g. `cp manifest.json.new manifest.json.tmp && mv manifest.json.tmp manifest.json`.
 */
import { stat } from 'node:fs/promises';
import { loadManifest, type Manifest } from './manifest.js';
import type { PipelineModels } from './pipeline.js';
import { createOnnxModels, SessionCache, type SessionOptions } from './session.js';

export interface ModelSet {
  manifest: Manifest;
  models: PipelineModels & { fallbackReasons: string[] };
  /** 1 for the set loaded at start, +1 for each installed set. */
  generation: number;
  loadedAt: string;
}

export interface ModelLease {
  set: ModelSet;
  /** Ends the lease; the set's sessions are released once it is retired and no lease holds it. */
  release(): void;
}

export interface ModelRegistryStatus {
  generation: number;
  modelIds: string[];
  executionProvider: string;
  loadedAt: string;
  /** The last failed install, if it came after the current set. */
  lastError?: { at: string; message: string };
}

interface Held {
  set: ModelSet;
  cache: SessionCache;
  leases: number;
  retired: boolean;
}

type Stamp = string;

async function stampOf(file: string): Promise<Stamp> {
  const s = await stat(file);
  return `${s.ino}:${s.size}:${s.mtimeMs}`;
}

export class ModelRegistry {
  private current: Held | undefined;
  private stamp: Stamp | undefined;
  private lastCheck = 0;
  private checking: Promise<void> | undefined;
  private lastError: ModelRegistryStatus['lastError'];

  /**
   * @param manifestFile the manifest to follow
   * @param checkIntervalMs how often (at most) a lease looks at the manifest file's stamp; 0 = on every lease
   */
  constructor(
    private readonly manifestFile: string,
    private readonly sessionOptions: SessionOptions = {},
    private readonly checkIntervalMs = 2000,
  ) {}

  /** Loads the first set; throws (ManifestError or the session's error) when it cannot, as a worker cannot start without models. */
  async start(): Promise<ModelSet> {
    const stamp = await stampOf(this.manifestFile);
    const held = await this.load(1);
    this.current = held;
    this.stamp = stamp;
    this.lastCheck = Date.now();
    return held.set;
  }

  /** The current set, after picking up a newly installed one if the manifest changed. */
  async lease(): Promise<ModelLease> {
    if (!this.current) throw new Error('ModelRegistry.start() has not run');
    if (Date.now() - this.lastCheck >= this.checkIntervalMs) {
      this.checking ??= this.checkForUpdate().finally(() => {
        this.checking = undefined;
      });
      await this.checking;
    }
    const held = this.current;
    held.leases++;
    let released = false;
    return {
      set: held.set,
      release: () => {
        if (released) return;
        released = true;
        held.leases--;
        this.dispose(held);
      },
    };
  }

  status(): ModelRegistryStatus {
    const set = this.current?.set;
    return {
      generation: set?.generation ?? 0,
      modelIds: set?.manifest.modelIds ?? [],
      executionProvider: set?.models.executionProvider ?? 'none',
      loadedAt: set?.loadedAt ?? '',
      ...(this.lastError ? { lastError: this.lastError } : {}),
    };
  }

  /** Releases every session (at shutdown, after the last study). */
  async close(): Promise<void> {
    const held = this.current;
    this.current = undefined;
    if (held) await held.cache.release();
  }

  private async checkForUpdate(): Promise<void> {
    this.lastCheck = Date.now();
    let stamp: Stamp;
    try {
      stamp = await stampOf(this.manifestFile);
    } catch (e) {
      this.lastError = { at: new Date().toISOString(), message: `cannot read ${this.manifestFile}: ${(e as Error).message}` };
      return;
    }
    if (stamp === this.stamp) return;
    const old = this.current as Held;
    try {
      const next = await this.load(old.set.generation + 1);
      this.current = next;
      this.lastError = undefined;
      old.retired = true;
      this.dispose(old);
    } catch (e) {
      this.lastError = { at: new Date().toISOString(), message: (e as Error).message };
    }
    // Remember the stamp even after a failure: the same broken file is not retried on every lease, the next install is.
    this.stamp = stamp;
  }

  private async load(generation: number): Promise<Held> {
    const manifest = await loadManifest(this.manifestFile);
    // A cache per set: a new set may reuse a file name with new content, which a shared cache would not reopen.
    const cache = new SessionCache();
    try {
      const models = await createOnnxModels(manifest, this.sessionOptions, cache);
      return { set: { manifest, models, generation, loadedAt: new Date().toISOString() }, cache, leases: 0, retired: false };
    } catch (e) {
      await cache.release();
      throw e;
    }
  }

  private dispose(held: Held): void {
    if (held.retired && held.leases === 0) void held.cache.release();
  }
}
