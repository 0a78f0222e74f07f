/**
 * 2,000 seeded cases of the HL7/MLLP fuzzer (test/helpers/hl7-fuzz.ts; bench/fuzz.ts runs 100,000): each through
 * the in-process path and over a real MLLP listener. No exception may escape, every message must get its ACK/NAK
 * or a clean close in time, the answer must be the one its evaluation calls for, and the listener must still take
 * a valid order afterwards. Reproduce a failing case with `npm run bench:fuzz -- --seed 0xc1f022 --only N`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { evaluateMessage, MAX_VALUES } from '../../src/orders/evaluate.js';
import { loadMappings } from '../../src/orders/mappings.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { ackField, MllpClient, orm } from '../helpers/hl7.js';
import { baseSummaryOf, fuzzCase, loadFixtureMessages, probeValidOrder, runOverMllp, runPure } from '../helpers/hl7-fuzz.js';

const SEED = 0xc1f022;
const CASES = 2000;
const LANES = 4;
const MAX_BYTES = 4 * 1024 * 1024;
const mappings = loadMappings('mappings/orders.yaml');
const fixtures = loadFixtureMessages();

describe('HL7/MLLP fuzzer', { timeout: 120_000 }, () => {
  let gw: TestGateway;
  const escaped: unknown[] = [];
  const onEscape = (e: unknown) => escaped.push(e);

  before(async () => {
    process.on('uncaughtException', onEscape);
    process.on('unhandledRejection', onEscape);
    gw = await startTestGateway({ CTGATE_MLLP_MAX_MESSAGE_BYTES: String(MAX_BYTES), CTGATE_REDIS_TIMEOUT_MS: '2000' });
  });

  after(async () => {
    process.off('uncaughtException', onEscape);
    process.off('unhandledRejection', onEscape);
    await gw?.cleanup();
  });

  it('is deterministic: a case is a function of (seed, index)', () => {
    for (const i of [0, 7, 1999, 123_456]) {
      const a = fuzzCase(SEED, i, fixtures);
      const b = fuzzCase(SEED, i, fixtures);
      assert.equal(a.label, b.label);
      assert.deepEqual(Buffer.concat(a.writes), Buffer.concat(b.writes));
      assert.deepEqual(
        a.writes.map((w) => w.length),
        b.writes.map((w) => w.length),
      );
    }
    assert.notDeepEqual(Buffer.concat(fuzzCase(SEED, 1, fixtures).writes), Buffer.concat(fuzzCase(SEED + 1, 1, fixtures).writes));
  });

  it(`runs ${CASES} cases through the in-process path: no exception, no case over 2 s, the right answers`, (t) => {
    const crashes: string[] = [];
    const problems: string[] = [];
    const labels = new Set<string>();
    let slowest = 0;
    for (let i = 0; i < CASES; i++) {
      const c = fuzzCase(SEED, i, fixtures);
      for (const l of c.label.split('+')) labels.add(l);
      try {
        const r = runPure(c, mappings, MAX_BYTES, c.preserves ? baseSummaryOf(c, mappings) : undefined);
        slowest = Math.max(slowest, r.ms);
        if (r.ms > 2000) problems.push(`case ${i} (${c.label}): ${Math.round(r.ms)} ms`);
        for (const p of r.problems) problems.push(`case ${i} (${c.label}): ${p}`);
      } catch (e) {
        crashes.push(`case ${i} (${c.label}): ${(e as Error).message}`);
      }
    }
    t.diagnostic(`${labels.size} mutation kinds; slowest case ${Math.round(slowest)} ms`);
    assert.deepEqual(crashes, []);
    assert.deepEqual(problems, []);
    assert.ok(labels.size >= 40, `the corpus covers the mutation kinds (${labels.size})`);
  });

  it(`answers each of the ${CASES} cases over MLLP with the right ACK/NAK or a clean close, never a hang`, async (t) => {
    const started = performance.now();
    const cases = Array.from({ length: CASES }, (_, i) => fuzzCase(SEED, i, fixtures));
    const tally = await runOverMllp(cases, LANES, { port: gw.mllp.port, mappings, maxBytes: MAX_BYTES, ackTimeoutMs: 8000, maybeSilentMs: 1500 });
    t.diagnostic(
      `${tally.cases} cases, ${tally.messages} messages seen by the server in ${Math.round(performance.now() - started)} ms over ${tally.connections} connections: ${JSON.stringify(tally.answers)}; slowest ACK ${Math.round(tally.slowestMs)} ms`,
    );
    assert.deepEqual(tally.hangs, []);
    assert.deepEqual(tally.problems, []);
    assert.deepEqual(escaped, [], 'no exception escaped in the gateway');
    assert.ok((tally.answers.AR ?? 0) > 100 && (tally.answers.AA ?? 0) > 100, 'both accepts and rejects were exercised');
  });

  it('still serves a valid order afterwards, on a fresh connection', async () => {
    const ack = await probeValidOrder(gw.mllp.port, fixtures, 'CI', 5000);
    assert.equal(ack.code, 'AA', ack.text);
    assert.equal(ack.msa2, 'PROBE-CI');
  });

  // Regression: found by the fuzzer (deep-repetition). The field count passed a 4 MB PID-3 of a million
  // repetitions, whose parse then held the event loop for seconds, stalling every connection.
  it('refuses a message with a million repetitions before parsing it, without stalling other senders', async () => {
    const heavyText = orm({ controlId: 'REPS-1' }).replace('MRN0001^^^GENHOSP^MR', `MRN0001^^^GENHOSP^MR${'~X'.repeat(1_000_000)}`);
    const t0 = performance.now();
    const ev = evaluateMessage(heavyText, mappings);
    assert.ok(performance.now() - t0 < 500, 'evaluated without parsing');
    assert.equal(ev.kind, 'reject');
    assert.match(ev.kind === 'reject' ? ev.error.reason : '', new RegExp(`delimiters; at most ${MAX_VALUES}`));
    const light = orm({ controlId: 'REPS-OK' }).replace('MRN0001^^^GENHOSP^MR', `MRN0001^^^GENHOSP^MR${'~X'.repeat(1000)}`);
    assert.equal(evaluateMessage(light, mappings).kind, 'orders', 'a thousand repetitions are still fine');

    const heavy = await MllpClient.connect(gw.mllp.port);
    const other = await MllpClient.connect(gw.mllp.port);
    try {
      const started = performance.now();
      heavy.send(heavyText);
      other.send(orm({ controlId: 'REPS-LIGHT' }));
      const [h, o] = await Promise.all([heavy.nextAck(5000), other.nextAck(5000)]);
      assert.equal(ackField(h, 'MSA', 1), 'AR');
      assert.match(ackField(h, 'ERR', 8), /delimiters; at most/);
      assert.equal(ackField(o, 'MSA', 1), 'AA');
      assert.ok(performance.now() - started < 2000, 'both answered well within 2 s');
    } finally {
      heavy.close();
      other.close();
    }
  });
});
