/**
 * peer: graphile-worker 0.16 doing suekk-sync's job (see peer-setup.ts for how it is kept fair).
 *   - ordered: the drain's workload (same users × events per user, same interleaving) with
 *     queue_name = the user, at the relay's concurrency;
 *   - unordered: the same jobs without queues, its best over a few concurrency/pool settings;
 *   - latency: the ordered setup fed by a trigger on users, with the same paced writer as ours.
 * Throughput is counted like the drain's: from runner start until every job is completed
 * (graphile-worker deletes a completed job, so "marked" is "gone").
 */
import { createRequire } from 'node:module';
import { CONCURRENCY } from '../config.ts';
import type { BenchContext } from '../context.ts';
import type { CpuReport } from '../cpu.ts';
import { analyze, seedUsers } from '../db.ts';
import { jobsLeft, prefillJobs, startPeer } from '../peer-setup.ts';
import { round, sleep } from '../stats.ts';
import { measureWriterLatency, type LatencyResult } from './latency.ts';

const graphileVersion = createRequire(import.meta.url)('graphile-worker/package.json') as { version: string };

export interface PeerRun {
  ordered: boolean;
  concurrency: number;
  poolSize: number;
  jobs: number;
  /** False when the cap ended the run: eps is then the rate until the cap. */
  complete: boolean;
  delivered: number;
  seconds: number;
  eps: number;
  cpu?: CpuReport;
}

export interface PeerResult {
  name: 'graphile-worker';
  version: string;
  ordered_eps: number;
  unordered_eps: number;
  unordered_config: { concurrency: number; poolSize: number };
  latency_ms: { p50: number; p95: number; p99: number };
  runs: PeerRun[];
  latency: LatencyResult;
}

async function drainJobs(ctx: BenchContext, ordered: boolean, concurrency: number, poolSize: number): Promise<PeerRun> {
  const { users, perUser, capSeconds } = ctx.sizes.peer;
  const jobs = users * perUser;
  const label = `peer_${ordered ? 'ordered' : 'unordered'}_c${concurrency}_p${poolSize}`;
  const db = await ctx.dbs.clone('peer', label);
  try {
    await prefillJobs(db.url, users, perUser, ordered);
    await ctx.receiver.reset();
    await sleep(200);
    const { value, cpu } = await ctx.measureCpu(label, async () => {
      const t0 = performance.now();
      const elapsed = () => (performance.now() - t0) / 1000;
      const peer = await startPeer(db.url, ctx.receiver.url, concurrency, poolSize);
      try {
        let delivered = 0;
        // Delivered by the receiver's count, then "marked" = the job row gone; or the cap.
        while (elapsed() < capSeconds) {
          delivered = (await ctx.receiver.stats()).count;
          if (delivered >= jobs && (await jobsLeft(peer.pool)) === 0)
            return { seconds: elapsed(), delivered, complete: true };
          await sleep(delivered >= jobs ? 10 : 20);
        }
        return { seconds: elapsed(), delivered, complete: false };
      } finally {
        await peer.stop();
      }
    });
    const run: PeerRun = {
      ordered,
      concurrency,
      poolSize,
      jobs,
      complete: value.complete,
      delivered: value.delivered,
      seconds: round(value.seconds, 2),
      eps: round(value.delivered / value.seconds),
      ...(cpu ? { cpu } : {}),
    };
    ctx.log(
      `  ${label}: ${run.complete ? `${jobs} jobs` : `INCOMPLETE at the ${capSeconds} s cap, ${run.delivered} of ${jobs} jobs`} in ${run.seconds} s = ${run.eps} jobs/s`,
    );
    return run;
  } finally {
    await ctx.dbs.drop(db.name);
  }
}

async function peerLatency(ctx: BenchContext): Promise<LatencyResult> {
  const { rate, seconds, warmupSeconds, users } = ctx.sizes.latency;
  const db = await ctx.dbs.clone('peer', 'peer_latency');
  try {
    await seedUsers(db.url, 1, users, false);
    await analyze(db.url, ['users']);
    const peer = await startPeer(db.url, ctx.receiver.url, CONCURRENCY, ctx.sizes.peer.orderedPoolSize);
    try {
      const { value, cpu } = await ctx.measureCpu('peer_latency', () =>
        measureWriterLatency(ctx, db.url, { rate, seconds, warmupSeconds, users }),
      );
      ctx.log(
        `  peer latency at ${rate}/s (writer achieved ${value.writer.rate}/s): p50 ${value.p50} ms, p95 ${value.p95} ms, p99 ${value.p99} ms, max ${value.max} ms (${value.arrived}/${value.measured})`,
      );
      return { ...value, ...(cpu ? { cpu } : {}) };
    } finally {
      await peer.stop();
    }
  } finally {
    await ctx.dbs.drop(db.name);
  }
}

export async function runPeer(ctx: BenchContext): Promise<PeerResult> {
  const { unorderedConfigs, orderedPoolSize } = ctx.sizes.peer;
  const runs: PeerRun[] = [];
  const ordered = await drainJobs(ctx, true, CONCURRENCY, orderedPoolSize);
  runs.push(ordered);
  let best: PeerRun | undefined;
  for (const [concurrency, poolSize] of unorderedConfigs) {
    const run = await drainJobs(ctx, false, concurrency, poolSize);
    runs.push(run);
    if (!best || run.eps > best.eps) best = run;
  }
  const latency = await peerLatency(ctx);
  return {
    name: 'graphile-worker',
    version: graphileVersion.version,
    ordered_eps: ordered.eps,
    unordered_eps: best!.eps,
    unordered_config: { concurrency: best!.concurrency, poolSize: best!.poolSize },
    latency_ms: { p50: latency.p50, p95: latency.p95, p99: latency.p99 },
    runs,
    latency,
  };
}
