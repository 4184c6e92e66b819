/**
 * latency: commit-to-delivery at a steady rate. A writer updates users at `rate` per second,
 * paced by the clock, each UPDATE its own transaction, through the capture trigger; the relay
 * (in the bench process) delivers; the receiver timestamps arrivals. Writer and receiver share a
 * process and so one performance.now(): lag = arrival − the moment the writer's commit returned.
 * The marker that pairs them rides in first_name → displayName. Users are seeded without capture
 * so the relay starts idle, as a daemon in steady state is.
 *
 * The peer's latency (peer.ts) uses measureWriterLatency with graphile-worker as the sender.
 */
import type { BenchContext } from '../context.ts';
import type { CpuReport } from '../cpu.ts';
import { analyze, seedUsers } from '../db.ts';
import type { LatencyReport, WriterStats } from '../protocol.ts';
import { startBenchRelay } from '../relay-harness.ts';
import { round, sleep } from '../stats.ts';

export interface LatencyResult {
  rate: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  measured: number;
  arrived: number;
  writer: WriterStats;
  cpu?: CpuReport;
}

export interface WriterPlan {
  rate: number;
  seconds: number;
  warmupSeconds: number;
  users: number;
}

/** Runs the paced writer against `databaseUrl` (whose sender is already running) and reports the lag. */
export async function measureWriterLatency(
  ctx: BenchContext,
  databaseUrl: string,
  plan: WriterPlan,
): Promise<LatencyResult> {
  await ctx.receiver.reset({ markers: true });
  const totalMs = (plan.warmupSeconds + plan.seconds) * 1000;
  await ctx.receiver.startWriter({
    databaseUrl,
    rate: plan.rate,
    durationMs: totalMs,
    warmupMs: plan.warmupSeconds * 1000,
    users: plan.users,
    connections: 4,
  });
  await sleep(totalMs);
  const writer = await ctx.receiver.stopWriter();
  const lat: LatencyReport = await ctx.receiver.latency(15_000);
  if (writer.errors > 0) ctx.log(`    writer: ${writer.errors} updates failed`);
  if (lat.arrived < lat.measured)
    ctx.log(`    ${lat.measured - lat.arrived} of ${lat.measured} updates never arrived within 15 s`);
  return {
    rate: plan.rate,
    p50: round(lat.p50, 2),
    p95: round(lat.p95, 2),
    p99: round(lat.p99, 2),
    max: round(lat.max, 2),
    measured: lat.measured,
    arrived: lat.arrived,
    writer: { ...writer, rate: round(writer.rate) },
  };
}

export async function runLatency(ctx: BenchContext): Promise<LatencyResult> {
  const { rate, seconds, warmupSeconds, users } = ctx.sizes.latency;
  const db = await ctx.dbs.clone('suekk', 'latency');
  try {
    await seedUsers(db.url, 1, users, false);
    await analyze(db.url, ['users']);
    const relay = await startBenchRelay(ctx, db.url);
    try {
      const { value, cpu } = await ctx.measureCpu('latency', () =>
        measureWriterLatency(ctx, db.url, { rate, seconds, warmupSeconds, users }),
      );
      ctx.log(
        `  latency at ${rate}/s (writer achieved ${value.writer.rate}/s): p50 ${value.p50} ms, p95 ${value.p95} ms, p99 ${value.p99} ms, max ${value.max} ms (${value.arrived}/${value.measured})`,
      );
      return { ...value, ...(cpu ? { cpu } : {}) };
    } finally {
      await relay.stop();
    }
  } finally {
    await ctx.dbs.drop(db.name);
  }
}
