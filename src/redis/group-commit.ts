/** The most calls one group-commit round trip carries; more go in the next. */
export const MAX_BATCH = 256;
/** An item's own failure in a group-commit batch: its call rejects with `error`, the others are unaffected. */
export class Failed {
  constructor(readonly error: unknown) {}
}

/**
 * Group commit: calls go to `run` together, as one Redis round trip instead of one each. A batch is sent when
 * the event loop has taken in the I/O at hand (setImmediate), and while one is in flight the next one fills
 * with the calls made meanwhile and leaves when it returns, so under load each round trip carries what arrived
 * during the last one. `run` returns one result per item, in order (a Failed for an item whose own command
 * failed); each call settles with its own result, or every call of the batch with the batch's error when the
 * round trip failed, as a call of its own would have.
 */
export function groupCommit<I, O>(run: (items: I[]) => Promise<(O | Failed)[]>, maxBatch = MAX_BATCH): (item: I) => Promise<O> {
  type Waiter = { item: I; resolve: (o: O) => void; reject: (e: unknown) => void };
  let open: Waiter[] = [];
  let inFlight = false;
  let scheduled = false;
  const schedule = () => {
    if (scheduled || inFlight || open.length === 0) return;
    scheduled = true;
    setImmediate(flush);
  };
  const flush = () => {
    scheduled = false;
    if (inFlight || open.length === 0) return;
    const batch = open.length > maxBatch ? open.splice(0, maxBatch) : open;
    if (batch === open) open = [];
    inFlight = true;
    let done: Promise<(O | Failed)[]>;
    try {
      done = run(batch.map((w) => w.item));
    } catch (e) {
      done = Promise.reject(e);
    }
    done
      .then(
        (out) => {
          for (let i = 0; i < batch.length; i++) {
            const w = batch[i] as Waiter;
            const r = out[i];
            if (r instanceof Failed) w.reject(r.error);
            else w.resolve(r as O);
          }
        },
        (e: unknown) => {
          for (const w of batch) w.reject(e);
        },
      )
      .finally(() => {
        inFlight = false;
        schedule();
      });
  };
  return (item) =>
    new Promise<O>((resolve, reject) => {
      open.push({ item, resolve, reject });
      schedule();
    });
}
