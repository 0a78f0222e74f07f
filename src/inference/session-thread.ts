/**
 * ONNX Runtime sessions on a thread of their own. onnxruntime-node runs an inference on the calling thread: a
 * lesion model over a chest CT held the worker's event loop for seconds at a time (4.8–7.4 s on a 128×128×52
 * phantom on this 2-core machine, longer on a full CT), long enough for the job's BullMQ lock (8 s, renewed from
 * a timer on that loop) to lapse, for the job to be handed to another worker, and for the analysis to run twice.
 * Here the sessions live in one worker thread per process; `run` posts the input there and awaits the output, so
 * the event loop keeps renewing locks, answering progress and serving other jobs while the model runs.
 *
 * The thread's body is plain JavaScript (eval'd as CommonJS): a worker thread does not inherit tsx's loader.
 * Inferences of one process run one after another on that thread, as they did on the main one.
 */
import { Worker } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';

/** Opens an onnxruntime session (on this thread, or on the session thread). */
export type SessionFactory = (model: string | Uint8Array, options: ort.InferenceSession.SessionOptions) => Promise<ort.InferenceSession>;

const BODY = `
const { parentPort } = require('node:worker_threads');
const ort = require('onnxruntime-node');
const sessions = new Map();
let next = 0;
parentPort.on('message', async (m) => {
  try {
    if (m.type === 'open') {
      const model = typeof m.model === 'string' ? m.model : new Uint8Array(m.model);
      if (m.logLevel) ort.env.logLevel = m.logLevel;
      const s = await ort.InferenceSession.create(model, m.options);
      const id = ++next;
      sessions.set(id, s);
      parentPort.postMessage({ req: m.req, ok: true, id, inputNames: s.inputNames, outputNames: s.outputNames });
    } else if (m.type === 'run') {
      const s = sessions.get(m.id);
      if (!s) throw new Error('session ' + m.id + ' is released');
      const feeds = {};
      for (const [k, v] of Object.entries(m.feeds)) feeds[k] = new ort.Tensor(v.type, v.data, v.dims);
      const r = await s.run(feeds, m.fetches);
      const out = {};
      for (const [k, t] of Object.entries(r)) out[k] = { type: t.type, data: t.data, dims: t.dims };
      parentPort.postMessage({ req: m.req, ok: true, out });
    } else if (m.type === 'release') {
      const s = sessions.get(m.id);
      sessions.delete(m.id);
      if (s) await s.release();
      parentPort.postMessage({ req: m.req, ok: true });
    }
  } catch (e) {
    parentPort.postMessage({ req: m.req, ok: false, error: (e && e.message) || String(e) });
  }
});
`;

interface Reply {
  req: number;
  ok: boolean;
  error?: string;
  id?: number;
  inputNames?: string[];
  outputNames?: string[];
  out?: Record<string, { type: string; data: Float32Array; dims: number[] }>;
}

/** The process's session thread: started on first use; it keeps the process alive only while a call is pending. */
class SessionThread {
  private worker?: Worker;
  private req = 0;
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();

  call(msg: Record<string, unknown>): Promise<Reply> {
    const w = this.start();
    const req = ++this.req;
    if (this.pending.size === 0) w.ref();
    return new Promise<Reply>((resolve, reject) => {
      this.pending.set(req, { resolve, reject });
      w.postMessage({ ...msg, req });
    }).then((r) => {
      if (!r.ok) throw new Error(r.error ?? 'onnxruntime thread error');
      return r;
    });
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(BODY, { eval: true });
    w.unref();
    w.on('message', (r: Reply) => {
      const p = this.pending.get(r.req);
      this.pending.delete(r.req);
      if (this.pending.size === 0) w.unref();
      p?.resolve(r);
    });
    const fail = (e: Error) => {
      // The thread died (a native crash would take the process with it; this is an exit or a JS error there).
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
      this.worker = undefined;
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`the onnxruntime thread exited (${code})`)));
    this.worker = w;
    return w;
  }
}

const thread = new SessionThread();

/** A SessionFactory whose sessions run on the session thread; they answer `run` and `release` like onnxruntime's. */
export const threadedSessionFactory: SessionFactory = async (model, options) => {
  const opened = await thread.call({
    type: 'open',
    model: typeof model === 'string' ? model : model.slice().buffer,
    options,
    logLevel: ort.env.logLevel,
  });
  const id = opened.id;
  const proxy = {
    inputNames: opened.inputNames ?? [],
    outputNames: opened.outputNames ?? [],
    async run(feeds: Record<string, ort.Tensor>, fetches?: string[]) {
      const plain: Record<string, { type: string; data: unknown; dims: readonly number[] }> = {};
      for (const [k, t] of Object.entries(feeds)) plain[k] = { type: t.type, data: t.data, dims: t.dims };
      const r = await thread.call({ type: 'run', id, feeds: plain, fetches });
      return r.out ?? {};
    },
    async release() {
      await thread.call({ type: 'release', id });
    },
  };
  return proxy as unknown as ort.InferenceSession;
};
