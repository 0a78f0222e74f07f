/**
 * A gateway whose event loop stalls right after start (a busy host, a long GC) must take orders once it runs
 * again. BullMQ used to check the Redis version once with INFO and keep the failed answer, so a stall longer than
 * the command timeout left every later order NAKed for good.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startTestGateway } from '../helpers/gateway.js';
import { mllpSend, orm } from '../helpers/hl7.js';

describe('gateway after an event-loop stall at start', () => {
  it('ACKs orders (AA) once the stall is over', async () => {
    const gw = await startTestGateway({ CTGATE_REDIS_TIMEOUT_MS: '300' });
    try {
      const until = Date.now() + 1500;
      while (Date.now() < until) {
        // A synchronous stall, five times the command timeout, while the queue's connection initialises.
      }
      const acks = await mllpSend(gw.mllp.port, [orm({ controlId: 'STALL1', placer: 'STALL-ORD-1' })]);
      assert.match(acks[0] ?? '', /MSA\|AA\|STALL1/);
    } finally {
      await gw.cleanup();
    }
  });
});
