/**
 * Metrics, shared across processes through Redis, and their Prometheus text exposition (format 0.0.4).
 *
 * Gateway processes (orders received / ACKed / NAKed) and worker processes (stage durations, model time, job
 * outcomes, peer errors) each keep their increments in memory and add them to one Redis hash,
 * `<prefix>:metrics`, about once a second (MetricsRecorder: one MULTI of HINCRBY/HINCRBYFLOAT per flush, never a
 * round trip per event). A gateway's GET /metrics reads that hash (plus the queue's job counts) at scrape time, so
 * one scrape shows the whole site however many gateway and worker processes it runs. Counters only grow; they
 * are never reset by ctgate (delete the hash to start over; Prometheus treats that as a counter reset).
 *
 * Hash fields: `<name>|<JSON array of label values in the definition's order>` for counters; for histograms
 * `<name>|<labels>|le=<upper bound>` (per-bucket counts, NOT cumulative: one field per observation) and
 * `<name>|<labels>|sum`. The exposition makes the buckets cumulative and adds +Inf and _count.
 */
export * from './exposition.js';
export * from './metric-names.js';
export * from './recorder.js';
