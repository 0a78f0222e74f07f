import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Redis } from 'ioredis';
import { bucketFor, counterField, escapeHelp, escapeLabelValue, familiesFromHash, formatValue, renderExposition } from '../../src/observability/exposition.js';
import { errorPeer, METRICS, type MetricDef } from '../../src/observability/metric-names.js';
import { MetricsRecorder } from '../../src/observability/recorder.js';

/** A Redis stand-in for MULTI/HINCRBY/HINCRBYFLOAT/EXEC on one hash. */
function fakeRedis(opts: { failNext?: () => boolean } = {}) {
  const hash: Record<string, string> = {};
  let execs = 0;
  const redis = {
    multi() {
      const ops: [string, string, number][] = [];
      const m = {
        hincrby: (_k: string, f: string, n: number) => {
          ops.push(['int', f, n]);
          return m;
        },
        hincrbyfloat: (_k: string, f: string, n: number) => {
          ops.push(['float', f, n]);
          return m;
        },
        exec: async () => {
          execs++;
          if (opts.failNext?.()) throw new Error('Connection is closed.');
          for (const [, f, n] of ops) hash[f] = String(Number(hash[f] ?? 0) + n);
          return ops.map(() => [null, 1]);
        },
      };
      return m;
    },
  };
  return { redis: redis as unknown as Redis, hash, execs: () => execs };
}

describe('Prometheus exposition', () => {
  it('escapes label values (backslash, double quote, line feed) and HELP text', () => {
    assert.equal(escapeLabelValue('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
    assert.equal(escapeHelp('one\\two\nthree "q"'), 'one\\\\two\\nthree "q"');
    const text = renderExposition([
      { name: 'x_total', help: 'line one\nline two', type: 'counter', samples: [{ labels: { path: 'C:\\dir "q"\nnext' }, value: 3 }] },
    ]);
    assert.equal(text, '# HELP x_total line one\\nline two\n# TYPE x_total counter\nx_total{path="C:\\\\dir \\"q\\"\\nnext"} 3\n');
  });

  it('writes HELP and TYPE before the samples, labels in order, no braces without labels', () => {
    const text = renderExposition([
      { name: 'a_total', help: 'A.', type: 'counter', samples: [{ labels: {}, value: 0 }] },
      { name: 'b', help: 'B.', type: 'gauge', samples: [{ labels: { state: 'waiting', q: 's' }, value: 2.5 }] },
    ]);
    assert.deepEqual(text.split('\n'), [
      '# HELP a_total A.',
      '# TYPE a_total counter',
      'a_total 0',
      '# HELP b B.',
      '# TYPE b gauge',
      'b{state="waiting",q="s"} 2.5',
      '',
    ]);
  });

  it('formats special values as Prometheus reads them', () => {
    assert.equal(formatValue(Number.POSITIVE_INFINITY), '+Inf');
    assert.equal(formatValue(Number.NEGATIVE_INFINITY), '-Inf');
    assert.equal(formatValue(Number.NaN), 'NaN');
    assert.equal(formatValue(0.005), '0.005');
    assert.equal(formatValue(12), '12');
  });

  it('refuses invalid metric and label names', () => {
    assert.throws(() => renderExposition([{ name: 'bad-name', help: '', type: 'gauge', samples: [] }]), /invalid metric name/);
    assert.throws(
      () => renderExposition([{ name: 'ok', help: '', type: 'gauge', samples: [{ labels: { 'bad-label': 'x' }, value: 1 }] }]),
      /invalid label name/,
    );
    assert.throws(
      () => renderExposition([{ name: 'h', help: '', type: 'histogram', buckets: [1], series: [{ labels: { le: '1' }, sum: 0, buckets: [] }] }]),
      /reserved/,
    );
  });

  it('makes histogram buckets cumulative, ends with +Inf equal to _count, and writes _sum', () => {
    const text = renderExposition([
      {
        name: 'd_seconds',
        help: 'D.',
        type: 'histogram',
        buckets: [0.1, 1, 10],
        series: [
          {
            labels: { stage: 'analyze' },
            // 2 at <= 0.1, none in (0.1, 1], 1 in (1, 10], 1 above 10.
            buckets: [
              { le: Number.POSITIVE_INFINITY, count: 1 },
              { le: 0.1, count: 2 },
              { le: 10, count: 1 },
            ],
            sum: 25.25,
          },
        ],
      },
    ]);
    assert.deepEqual(text.trim().split('\n'), [
      '# HELP d_seconds D.',
      '# TYPE d_seconds histogram',
      'd_seconds_bucket{stage="analyze",le="0.1"} 2',
      'd_seconds_bucket{stage="analyze",le="1"} 2',
      'd_seconds_bucket{stage="analyze",le="10"} 3',
      'd_seconds_bucket{stage="analyze",le="+Inf"} 4',
      'd_seconds_sum{stage="analyze"} 25.25',
      'd_seconds_count{stage="analyze"} 4',
    ]);
  });

  it('keeps bounds found only in stored data (buckets changed between versions) in order', () => {
    const text = renderExposition([
      { name: 'h', help: 'H.', type: 'histogram', buckets: [1], series: [{ labels: {}, sum: 1, buckets: [{ le: 0.5, count: 1 }] }] },
    ]);
    assert.match(text, /h_bucket\{le="0.5"\} 1\nh_bucket\{le="1"\} 1\nh_bucket\{le="\+Inf"\} 1\n/);
  });
});

describe('shared metrics (Redis hash) and the recorder', () => {
  it('puts an observation in the first bucket whose bound is >= the value', () => {
    const def = METRICS.stageDuration;
    assert.equal(bucketFor(def, 0.05), '0.05');
    assert.equal(bucketFor(def, 0.051), '0.1');
    assert.equal(bucketFor(def, 1e6), '+Inf');
  });

  it('flushes in one MULTI and reads back as cumulative histograms, counters and zero series', async () => {
    const { redis, hash, execs } = fakeRedis();
    const r = new MetricsRecorder(redis, 'p');
    r.inc(METRICS.ordersReceived);
    r.inc(METRICS.ordersReceived);
    r.inc(METRICS.ordersAcked, { code: 'AA' });
    r.inc(METRICS.ordersAcked, { code: 'AA' });
    r.inc(METRICS.ordersAcked, { code: 'CE' });
    r.observe(METRICS.stageDuration, { stage: 'retrieve' }, 0.3);
    r.observe(METRICS.stageDuration, { stage: 'retrieve' }, 4);
    r.observe(METRICS.stageDuration, { stage: 'retrieve' }, 4000);
    r.inc(METRICS.jobsCompleted, { verdict: 'say "hi"\\' });
    await r.flush();
    assert.equal(execs(), 1);
    await r.flush();
    assert.equal(execs(), 1, 'nothing to add: no round trip');
    assert.equal(hash[counterField(METRICS.ordersReceived)], '2');
    const text = renderExposition(familiesFromHash(hash));
    assert.match(text, /^ctgate_orders_received_total 2$/m);
    assert.match(text, /^ctgate_orders_acked_total\{code="AA"\} 2$/m);
    assert.match(text, /^ctgate_orders_acked_total\{code="CE"\} 1$/m);
    assert.match(text, /^ctgate_orders_acked_total\{code="AR"\} 0$/m, 'every ACK code has a series from the start');
    assert.match(text, /^ctgate_orders_nak_total\{class="error"\} 0$/m);
    assert.match(text, /^ctgate_stage_duration_seconds_bucket\{stage="retrieve",le="0.25"\} 0$/m);
    assert.match(text, /^ctgate_stage_duration_seconds_bucket\{stage="retrieve",le="0.5"\} 1$/m);
    assert.match(text, /^ctgate_stage_duration_seconds_bucket\{stage="retrieve",le="5"\} 2$/m);
    assert.match(text, /^ctgate_stage_duration_seconds_bucket\{stage="retrieve",le="600"\} 2$/m);
    assert.match(text, /^ctgate_stage_duration_seconds_bucket\{stage="retrieve",le="\+Inf"\} 3$/m);
    assert.match(text, /^ctgate_stage_duration_seconds_sum\{stage="retrieve"\} 4004.3$/m);
    assert.match(text, /^ctgate_stage_duration_seconds_count\{stage="retrieve"\} 3$/m);
    assert.match(text, /^ctgate_jobs_completed_total\{verdict="say \\"hi\\"\\\\"\} 1$/m);
    // Every family has HELP and TYPE.
    for (const def of Object.values(METRICS) as MetricDef[]) {
      assert.match(text, new RegExp(`^# HELP ${def.name} `, 'm'));
      assert.match(text, new RegExp(`^# TYPE ${def.name} ${def.type}$`, 'm'));
    }
  });

  it('keeps the increments of a failed flush for the next one', async () => {
    let fail = true;
    const { redis, hash } = fakeRedis({ failNext: () => fail });
    const r = new MetricsRecorder(redis, 'p');
    r.inc(METRICS.ordersReceived, {}, 3);
    r.observe(METRICS.modelDuration, { provider: 'cpu' }, 2);
    await assert.rejects(r.flush(), /closed/);
    r.inc(METRICS.ordersReceived);
    fail = false;
    await r.flush();
    assert.equal(hash[counterField(METRICS.ordersReceived)], '4');
    assert.equal(hash[`${counterField(METRICS.modelDuration, { provider: 'cpu' })}|sum`], '2');
    assert.equal(hash[`${counterField(METRICS.modelDuration, { provider: 'cpu' })}|le=2`], '1');
  });

  it('adds up the same series from several processes and ignores fields it does not know', () => {
    const f = counterField(METRICS.jobsFailed, { stage: 'retrieve' });
    const fams = familiesFromHash({ [f]: '2', 'other_metric|[]': '5', garbage: '1', [`${counterField(METRICS.jobsCancelled)}`]: 'x' });
    const text = renderExposition(fams);
    assert.match(text, /^ctgate_jobs_failed_total\{stage="retrieve"\} 2$/m);
    assert.doesNotMatch(text, /other_metric|^garbage/m);
    assert.doesNotMatch(text, /^ctgate_jobs_cancelled_total /m, 'a non-number is skipped');
  });

  it('names the peer behind a stage error', () => {
    assert.equal(errorPeer('retrieve', Object.assign(new Error('x'), { name: 'PacsError' })), 'pacs');
    assert.equal(errorPeer('write-fhir', Object.assign(new Error('x'), { name: 'FhirSendError' })), 'fhir');
    assert.equal(errorPeer('send-oru', Object.assign(new Error('x'), { name: 'OruDeliveryError' })), 'emr');
    assert.equal(errorPeer('write-seg', Object.assign(new Error('stage write-seg timed out after 5 ms'), { name: 'StageFailure' })), 'pacs');
    assert.equal(errorPeer('wait-for-study', Object.assign(new Error('the study did not arrive'), { name: 'StageFailure' })), 'internal');
    assert.equal(errorPeer('analyze', new Error('boom')), 'model');
  });
});
