/**
 * outage: the backend answers 503 to everything for a while, under a steady stream of changes
 * (`rate` changes a second, round-robin over `users` users, so a user changes every users/rate
 * seconds), then comes back. The figure is the seconds from its return until the backlog is empty
 * (every event delivered or, coalescing, superseded, and recorded), with the relay's defaults
 * (breaker after 10 failures, a probe every 5 s, rounds 30 s, 1 m, 5 m…) and then with
 * `--coalesce`. The writer stops when the backend returns, so the backlog is what the outage left.
 *
 * Without probing, users whose round failed would wait for their next round (up to the schedule's
 * hour); the time to the first delivery after the return says how soon the relays noticed.
 */
import pg from 'pg';
import type { BenchContext } from '../context.ts';
import { analyze, seedUsers } from '../db.ts';
import { outboxSettled, startBenchRelay } from '../relay-harness.ts';
import { round, sleep, waitUntil } from '../stats.ts';

export interface OutageRun {
  coalesce: boolean;
  /** Changes committed while the backend was down: the backlog. */
  changes: number;
  /** Users whose round failed, waiting for their next one when the backend came back. */
  waiting_users: number;
  /** Seconds from the backend's return to its first 2xx. */
  first_delivery_s: number;
  /** Seconds from the backend's return to an empty backlog. */
  seconds: number;
  /** Calls the backend answered after its return (fewer than changes when coalescing). */
  calls: number;
}

export interface OutageResult {
  users: number;
  rate: number;
  down_seconds: number;
  one_per_change: OutageRun;
  coalesced: OutageRun;
}

async function outage(ctx: BenchContext, coalesce: boolean): Promise<OutageRun> {
  const { users, rate, downSeconds } = ctx.sizes.outage;
  const label = `outage_${coalesce ? 'coalesced' : 'one_per_change'}`;
  const db = await ctx.dbs.clone('suekk', label);
  const poller = new pg.Client({ connectionString: db.url, application_name: 'suekk-bench poll' });
  try {
    await seedUsers(db.url, 1, users, true);
    await analyze(db.url, ['users', 'suekk_sync.events']);
    await poller.connect();
    await ctx.receiver.reset();
    const relay = await startBenchRelay(ctx, db.url, 'warn', { coalesce });
    try {
      await waitUntil(() => outboxSettled(poller), 'the seeded users delivered', 600_000, 20);
      await ctx.receiver.refuse(503);
      await ctx.receiver.startWriter({
        databaseUrl: db.url,
        rate,
        durationMs: downSeconds * 1000,
        warmupMs: 0,
        users,
        connections: 4,
      });
      await sleep(downSeconds * 1000);
      const writer = await ctx.receiver.stopWriter();
      const { rows } = await poller.query<{ n: number }>(
        'select count(*)::int as n from suekk_sync.streams where due_at > now() and not parked',
      );
      await ctx.receiver.reset(); // answers 200 again, counters at 0
      const back = performance.now();
      await waitUntil(
        async () => (await ctx.receiver.stats()).count > 0,
        'a first delivery after the return',
        600_000,
        5,
      );
      const first = performance.now();
      await waitUntil(() => outboxSettled(poller), 'the backlog delivered', 600_000, 10);
      const run: OutageRun = {
        coalesce,
        changes: writer.committed,
        waiting_users: rows[0]!.n,
        first_delivery_s: round((first - back) / 1000, 2),
        seconds: round((performance.now() - back) / 1000, 2),
        calls: (await ctx.receiver.stats()).count,
      };
      ctx.log(
        `  ${label}: ${run.changes} changes during ${downSeconds} s down (${run.waiting_users} users waiting for a round); ` +
          `first delivery ${run.first_delivery_s} s after the return, backlog empty after ${run.seconds} s in ${run.calls} calls`,
      );
      return run;
    } finally {
      await relay.stop();
    }
  } finally {
    await poller.end().catch(() => undefined);
    await ctx.dbs.drop(db.name);
  }
}

export async function runOutage(ctx: BenchContext): Promise<OutageResult> {
  const { users, rate, downSeconds } = ctx.sizes.outage;
  return {
    users,
    rate,
    down_seconds: downSeconds,
    one_per_change: await outage(ctx, false),
    coalesced: await outage(ctx, true),
  };
}
