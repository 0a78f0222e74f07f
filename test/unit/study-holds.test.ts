/** studyHolds (src/jobs/study-holds.ts): which received studies unfinished jobs use, with fakes for BullMQ and the checkpoints. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { JobState } from '../../src/jobs/job-state.js';
import { studyHolds } from '../../src/jobs/study-holds.js';

type FakeJob = { id: string; data: { order: { studyInstanceUid?: string; accessionNumber?: string } } };

function fakes(jobs: FakeJob[], states: Record<string, Partial<JobState>>) {
  let listings = 0;
  const queue = {
    getJobs: async (types: string[]) => {
      listings++;
      assert.ok(!types.includes('completed') && !types.includes('failed'));
      return jobs;
    },
  };
  const store = { getMany: async (ids: string[]) => ids.map((id) => (states[id] as JobState | undefined) ?? null) };
  return { queue: queue as never, store: store as never, listings: () => listings };
}

describe('studyHolds', () => {
  it('holds a study an unfinished job found, names, or waits for by accession; not others', async () => {
    const f = fakes(
      [
        { id: 'found', data: { order: { accessionNumber: 'ACC-1' } } },
        { id: 'named', data: { order: { studyInstanceUid: '1.2.3' } } },
        { id: 'waiting', data: { order: { accessionNumber: 'ACC-W' } } },
        { id: 'done', data: { order: { studyInstanceUid: '9.9.9' } } },
      ],
      {
        found: { stage: 'retrieve', outputs: { 'wait-for-study': { studyInstanceUid: '1.2.1', instances: 3, matchedBy: 'accessionNumber' } } },
        done: { stage: 'done', outputs: {} },
      },
    );
    let t = 0;
    const holds = studyHolds(f.queue, f.store, { cacheMs: 1000, now: () => t });
    assert.equal(await holds('1.2.1', {}), true);
    assert.equal(await holds('1.2.3', {}), true);
    assert.equal(await holds('4.5.6', { accessionNumber: 'ACC-W' }), true);
    assert.equal(await holds('4.5.6', { accessionNumber: 'ACC-1' }), false, 'ACC-1 already found its study');
    assert.equal(await holds('9.9.9', {}), false, 'a finished job holds nothing');
    assert.equal(await holds('4.5.7', {}), false);
    assert.equal(f.listings(), 1, 'one listing for a burst of questions');
    t = 2000;
    await holds('4.5.7', {});
    assert.equal(f.listings(), 2);
  });

  it('a listing that fails rejects (retention then keeps the study) and is not cached', async () => {
    let fail = true;
    const queue = {
      getJobs: async () => {
        if (fail) throw new Error('Redis is down');
        return [];
      },
    };
    const holds = studyHolds(queue as never, { getMany: async () => [] } as never);
    await assert.rejects(holds('1.2.3', {}), /Redis is down/);
    fail = false;
    assert.equal(await holds('1.2.3', {}), false);
  });
});
