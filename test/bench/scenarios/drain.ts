/**
 * drain: the relay emptying a pre-filled outbox, every event delivered to the receiver and marked
 * delivered in the database. The outbox is filled the way writers fill it, through the capture
 * trigger, with set-based statements: one INSERT of every user (a `created` each), then
 * `perUser - 1` UPDATEs of every user (an `updated` each), so each user has `perUser` events in
 * order and users interleave in capture order.
 *
 * The clock runs from relay.start() (connecting and LISTEN included: tens of ms) until the
 * database shows nothing undelivered. A warm-up drain runs first so that the first measured run
 * does not pay for JIT and connection warm-up; then `repeats` runs, each on a fresh database, the
 * median counting. The headline runs log every delivery at info to a file, as the daemon does by
 * default; runs logging only warnings alternate with them, so the logging's cost is measured on
 * the same machine noise.
 *
 * hot-user.ts reuses runOutboxDrain with one user holding thousands of events.
 */
import pg from 'pg';
import type { RelaySettings } from '../../../src/config.ts';
import type { BenchContext } from '../context.ts';
import { cpuMicrosPer, type CpuReport, type CpuGroup } from '../cpu.ts';
import { analyze, seedUsers, updateUsers, withClient } from '../db.ts';
import { outboxSettled, startBenchRelay, type RelayLogging } from '../relay-harness.ts';
import { median, round, sleep, waitUntil } from '../stats.ts';

export const HOT_USERNAME = 'hot';
export const HOT_TAG = `"username":"${HOT_USERNAME}"`;

export interface DrainSpec {
  label: string;
  users: number;
  perUser: number;
  /** Events for one extra user, `hot`, captured before everyone else's. */
  hotEvents?: number;
  logging?: RelayLogging;
  /** Relay settings other than the bench's (e.g. coalesce). */
  relay?: Partial<RelaySettings>;
}

export interface DrainRun {
  /** Events of the ordinary users (the hot user's are apart). */
  events: number;
  users: number;
  seconds: number;
  eps: number;
  /** The hot user's calls answered while the others drained. */
  hotDelivered?: number;
  /** The hot user's events settled (delivered, or carried by a coalesced call) by then. */
  hotSettled?: number;
  /** CPU µs per delivered event, per process group (bench = the relay). */
  cpu_us_per_event?: Partial<Record<CpuGroup, number>>;
  cpu?: CpuReport;
  profile?: string;
  /** Database statements the relay sent per delivered event, and each statement's count and mean latency. */
  queries_per_event?: number;
  queries?: Record<string, { n: number; mean_ms: number }>;
}

async function prefill(url: string, spec: DrainSpec): Promise<void> {
  if (spec.hotEvents) {
    await withClient(url, async (c) => {
      await c.query(
        `insert into users (email, username, password, first_name, last_name) values ('hot@bench.test', $1, 'x', 'h', 'l')`,
        [HOT_USERNAME],
      );
      // One transaction, one row updated many times: each UPDATE is a captured event.
      await c.query(`do $$ begin for i in 1..${spec.hotEvents! - 1} loop
          update users set first_name = 'h' || i where lower(username) = '${HOT_USERNAME}'; end loop; end $$`);
    });
  }
  await seedUsers(url, 1, spec.users, true);
  for (let r = 1; r < spec.perUser; r++) await updateUsers(url, 1, spec.users, r);
  await analyze(url, ['users', 'suekk_sync.events', 'suekk_sync.streams']);
}

export async function runOutboxDrain(ctx: BenchContext, spec: DrainSpec): Promise<DrainRun> {
  const db = await ctx.dbs.clone('suekk', spec.label);
  try {
    await prefill(db.url, spec);
    const expected = spec.users * spec.perUser;
    const total = expected + (spec.hotEvents ?? 0);
    const stored = await withClient(
      db.url,
      async (c) => (await c.query<{ n: number }>('select count(*)::int as n from suekk_sync.events')).rows[0]!.n,
    );
    if (stored !== total) throw new Error(`prefill made ${stored} events, expected ${total}`);
    await ctx.receiver.reset({ tag: spec.hotEvents ? HOT_TAG : undefined });
    await sleep(200); // let the prefill's checkpoint/autovacuum noise settle a little

    const poller = new pg.Client({ connectionString: db.url, application_name: 'suekk-bench poll' });
    await poller.connect();
    const profiler = spec.label.startsWith('drain_') && !spec.label.includes('warmup') ? ctx.profiler : undefined;
    let profile: string | undefined;
    const { value, cpu } = await ctx
      .measureCpu(spec.label, async () => {
        await profiler?.start();
        const t0 = performance.now();
        const relay = await startBenchRelay(ctx, db.url, spec.logging ?? 'warn', spec.relay);
        try {
          const others = async () => {
            const s = await ctx.receiver.stats();
            return s.count - s.tagged;
          };
          // Cheap IPC polling until the receiver has everything, then the database for the marks.
          // Coalescing sends fewer calls than events: only the database can say when all are settled.
          if (!spec.relay?.coalesce)
            await waitUntil(async () => (await others()) >= expected, `${expected} deliveries`, 600_000, 20, others);
          // On the bench's own connection: the relay's round trips are counted, the bench's are not.
          const hotId = spec.hotEvents
            ? (
                await poller.query<{ id: string }>('select id::text from users where lower(username) = $1', [
                  HOT_USERNAME,
                ])
              ).rows[0]!.id
            : null;
          await waitUntil(() => outboxSettled(poller, hotId), 'every event delivered and recorded', 60_000, 10);
          const seconds = (performance.now() - t0) / 1000;
          profile = await profiler?.stop(spec.label);
          const hotDelivered = spec.hotEvents ? (await ctx.receiver.stats()).tagged : undefined;
          const hotSettled = hotId
            ? (
                await poller.query<{ n: number }>(
                  `select count(*)::int as n from suekk_sync.events e join suekk_sync.streams s on s.user_id = e.user_id
                where e.user_id = $1 and e.id <= s.delivered_through`,
                  [hotId],
                )
              ).rows[0]!.n
            : undefined;
          const queries = Object.fromEntries(
            [...relay.queries]
              .sort((a, b) => b[1].n - a[1].n)
              .map(([k, v]) => [k, { n: v.n, mean_ms: round(v.ms / v.n, 2) }]),
          );
          const queryCount = [...relay.queries.values()].reduce((a, v) => a + v.n, 0);
          return { seconds, hotDelivered, hotSettled, queries, queryCount };
        } finally {
          await relay.stop();
        }
      })
      .finally(() => poller.end());
    const run: DrainRun = {
      events: expected,
      users: spec.users,
      seconds: round(value.seconds, 2),
      eps: round(expected / value.seconds),
      ...(value.hotDelivered !== undefined ? { hotDelivered: value.hotDelivered, hotSettled: value.hotSettled } : {}),
      ...(cpu
        ? { cpu_us_per_event: cpuMicrosPer(cpu, total - (spec.hotEvents ?? 0) + (value.hotDelivered ?? 0)), cpu }
        : {}),
      ...(profile ? { profile } : {}),
      queries_per_event: round(value.queryCount / (expected + (value.hotDelivered ?? 0)), 3),
      queries: value.queries,
    };
    ctx.log(
      `  ${spec.label}: ${expected} events / ${spec.users} users in ${run.seconds} s = ${run.eps} events/s` +
        (run.hotDelivered !== undefined ? ` (hot user: ${run.hotDelivered} delivered meanwhile)` : '') +
        (run.cpu_us_per_event
          ? `; CPU µs/event: relay ${run.cpu_us_per_event.bench}, pg ${run.cpu_us_per_event.pg_bench}, receiver ${run.cpu_us_per_event.receiver}`
          : '') +
        `; ${run.queries_per_event} queries/event`,
    );
    return run;
  } finally {
    await ctx.dbs.drop(db.name);
  }
}

export interface DrainResult {
  events: number;
  users: number;
  /** The headline: the relay as the daemon runs by default, logging each delivery to a file. */
  eps: number;
  /** Median over the runs of the relay process's CPU µs per event. */
  relay_cpu_us_per_event?: number;
  pg_cpu_us_per_event?: number;
  runs: DrainRun[];
  /** The same without a line per delivery (warnings only): what the default logging costs. */
  withoutInfoLogs?: { eps: number; relay_cpu_us_per_event?: number; runs: DrainRun[] };
}

export async function runDrain(ctx: BenchContext, withInfoLogs: boolean): Promise<DrainResult> {
  const { users, perUser, repeats, warmupUsers } = ctx.sizes.drain;
  const headline: RelayLogging = withInfoLogs ? 'info-file' : 'warn';
  await runOutboxDrain(ctx, { label: 'drain_warmup', users: warmupUsers, perUser, logging: headline });
  const runs: DrainRun[] = [];
  const quietRuns: DrainRun[] = [];
  for (let i = 0; i < repeats; i++) {
    runs.push(await runOutboxDrain(ctx, { label: `drain_${i + 1}`, users, perUser, logging: headline }));
    // Alternated with the headline runs, so both see the same machine noise.
    if (withInfoLogs)
      quietRuns.push(await runOutboxDrain(ctx, { label: `drain_quiet_${i + 1}`, users, perUser, logging: 'warn' }));
  }
  const perEvent = (list: DrainRun[], g: CpuGroup) =>
    list.map((r) => r.cpu_us_per_event?.[g]).filter((v): v is number => v !== undefined);
  const result: DrainResult = { events: users * perUser, users, eps: round(median(runs.map((r) => r.eps))), runs };
  if (perEvent(runs, 'bench').length > 0) result.relay_cpu_us_per_event = median(perEvent(runs, 'bench'));
  if (perEvent(runs, 'pg_bench').length > 0) result.pg_cpu_us_per_event = median(perEvent(runs, 'pg_bench'));
  if (withInfoLogs) {
    result.withoutInfoLogs = { eps: round(median(quietRuns.map((r) => r.eps))), runs: quietRuns };
    if (perEvent(quietRuns, 'bench').length > 0)
      result.withoutInfoLogs.relay_cpu_us_per_event = median(perEvent(quietRuns, 'bench'));
  }
  return result;
}
