import { Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { ScreeningJobData } from '../domain/job.js';
import type { ScreeningQueue } from '../jobs/queue.js';
import { Failed, groupCommit } from '../redis/group-commit.js';
import type { NewJob } from './ledger.js';

/** A key to SET (with a TTL) only alongside the jobs it belongs with. */
export interface KeyWrite {
  key: string;
  value: string;
  ttlSeconds: number;
}

export class JobsNotStoredError extends Error {
  constructor() {
    super('a new job is not in the queue; nothing was recorded');
    this.name = 'JobsNotStoredError';
  }
}

const WRITE_IF_JOBS_EXIST = 'ctgateWriteIfJobsExist';
/**
 * KEYS: the jobs' hashes (ARGV[1] of them), then the keys to write; ARGV: that count, then each key's value
 * and TTL. Writes every key, or (when a job is missing) none: a script runs atomically, like MULTI/EXEC.
 */
const WRITE_IF_JOBS_EXIST_LUA = `local jobs = tonumber(ARGV[1])
for i = 1, jobs do
  if redis.call('EXISTS', KEYS[i]) == 0 then return 0 end
end
for i = jobs + 1, #KEYS do
  local a = 2 * (i - jobs)
  redis.call('SET', KEYS[i], ARGV[a], 'EX', ARGV[a + 1])
end
return 1`;

/** What the Redis ledger reads and writes per message, with the round trips of messages handled together shared. */
export interface IntakeChannel {
  /** MGET. */
  read(keys: string[]): Promise<(string | null)[]>;
  /**
   * New jobs and the keys that may only exist alongside them (order records, the resend marker): the jobs are
   * added (as queue.add adds them; their ids are deterministic, so adding one again is a no-op), then a script
   * writes the keys only if every one of the jobs is in the queue, atomically. Resolves once all of it is
   * stored. Rejects with JobsNotStoredError when a job is not stored (none of the keys are written then, so a
   * resend finds nothing recorded and adds the job again), with a job add's error when the add failed, or with
   * the error of a failed round trip.
   */
  write(jobs: NewJob[], writes: KeyWrite[]): Promise<void>;
}

type ChannelCall = { read: string[] } | { jobs: NewJob[]; writes: KeyWrite[] };

type ScriptedRedis = Redis & { [WRITE_IF_JOBS_EXIST](...args: (string | number)[]): Promise<number> };

/**
 * The intake's reads and writes, with the commands of the calls made while the previous batch was in flight
 * (see groupCommit) written to the queue's connection together: one socket write, in call order, and one
 * round trip. They are sent as plain commands with the socket corked rather than as a pipeline: ioredis copies
 * every script defined on the connection (BullMQ's 64) onto each pipeline it makes, which costs more than the
 * commands themselves. In a batch the writes go first, so a read sees what the same batch wrote (a resend
 * arriving with its original finds its marker); Redis runs a connection's commands in order, so each write
 * script sees the jobs added before it.
 */
export function intakeChannel(queue: ScreeningQueue): IntakeChannel {
  const run = groupCommit(async (calls: ChannelCall[]): Promise<((string | null)[] | boolean | Failed)[]> => {
    // Like every command on a connection without an offline queue: refused at once while Redis is not there (the
    // intake NAKs and the sender resends), rather than held until BullMQ has connected.
    const status = (queue.opts.connection as { status?: string }).status;
    if (status !== undefined && status !== 'ready') throw new Error(`Redis connection is ${status}`);
    const bullClient = await queue.getBackend().client;
    const redis = bullClient as unknown as ScriptedRedis;
    if (typeof redis[WRITE_IF_JOBS_EXIST] !== 'function') redis.defineCommand(WRITE_IF_JOBS_EXIST, { lua: WRITE_IF_JOBS_EXIST_LUA });
    const defaults = queue.defaultJobOptions;
    // Every reply gets its handler as its command is sent: a command can fail (the connection drops, the command
    // times out) while the batch waits for another.
    const jobs = new Map<ChannelCall, Promise<Failed | null>[]>();
    const written = new Map<ChannelCall, Promise<boolean | Failed>>();
    const keys: string[] = [];
    let read: Promise<(string | null)[] | Failed> | null = null;
    const stream = redis.stream;
    stream.cork();
    try {
      for (const c of calls) {
        if (!('jobs' in c)) continue;
        const added: Promise<Failed | null>[] = [];
        for (const j of c.jobs) {
          // Sent synchronously. The script below checks that the job is stored (one refused here is never sent,
          // and the script then writes nothing for its message).
          try {
            added.push(
              new Job<ScreeningJobData>(queue, 'screen', j.data, { ...defaults, jobId: j.jobId }, j.jobId).addJob(bullClient).then(
                () => null,
                (e: unknown) => new Failed(e),
              ),
            );
          } catch {}
        }
        jobs.set(c, added);
      }
      for (const c of calls) {
        if ('read' in c) {
          keys.push(...c.read);
          continue;
        }
        const args: (string | number)[] = [c.jobs.length + c.writes.length];
        for (const j of c.jobs) args.push(queue.toKey(j.jobId));
        for (const w of c.writes) args.push(w.key);
        args.push(c.jobs.length);
        for (const w of c.writes) args.push(w.value, w.ttlSeconds);
        written.set(
          c,
          redis[WRITE_IF_JOBS_EXIST](...args).then(
            (r) => r === 1,
            (e: unknown) => new Failed(e),
          ),
        );
      }
      if (keys.length > 0) {
        read = redis.mget(keys).then(
          (v) => v,
          (e: unknown) => new Failed(e),
        );
      }
    } finally {
      stream.uncork();
    }
    const values = await read;
    const out: ((string | null)[] | boolean | Failed)[] = [];
    let k = 0;
    for (const c of calls) {
      if ('read' in c) {
        out.push(values instanceof Failed ? values : (values ?? []).slice(k, k + c.read.length));
        k += c.read.length;
      } else {
        // A job add that failed fails its message, as queue.add failing did, even where the job's hash got stored
        // (BullMQ's script stores it before queueing the job) and the script below then wrote the keys: a resend
        // then finds its marker and is accepted, as a resend would have added the job again and been accepted.
        const failedAdd = (await Promise.all(jobs.get(c) ?? [])).find((f) => f !== null);
        const w = (await written.get(c)) ?? new Failed(new Error('no reply'));
        out.push(failedAdd ?? w);
      }
    }
    return out;
  });
  return {
    read: async (keys) => (await run({ read: keys })) as (string | null)[],
    write: async (jobs, writes) => {
      if (!(await run({ jobs, writes }))) throw new JobsNotStoredError();
    },
  };
}
