/**
 * longtx: the relay delivering waves of changes while an old snapshot is held open, as a nightly
 * pg_dump or a long report holds one: nothing written after it began may be vacuumed away, so an
 * outbox that leaves dead row versions behind per event slows down wave after wave, and grows.
 *
 * Each wave is one UPDATE of every user (one `updated` event each); its clock runs from that
 * statement's commit until every event is delivered and recorded. The same waves run on a second
 * database with no snapshot held, for comparison. Storage is what the suekk_sync schema grew over
 * all waves (tables, indexes, TOAST), per event.
 */
import pg from 'pg';
import type { BenchContext } from '../context.ts';
import { analyze, seedUsers, updateUsers } from '../db.ts';
import { outboxSettled, startBenchRelay } from '../relay-harness.ts';
import { round, waitUntil } from '../stats.ts';

export interface LongTxRun {
  /** Events per second of each wave, in order. */
  eps: number[];
  /** The last wave's rate over the first's. */
  last_first: number;
  bytes_per_event: number;
}

export interface LongTxResult extends LongTxRun {
  users: number;
  waves: number;
  no_snapshot: LongTxRun;
}

const SCHEMA_BYTES = `select coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint as bytes
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where n.nspname = 'suekk_sync' and c.relkind in ('r', 'm')`;

async function waves(ctx: BenchContext, label: string, holdSnapshot: boolean): Promise<LongTxRun> {
  const { users, waves: count } = ctx.sizes.longtx;
  const db = await ctx.dbs.clone('suekk', label);
  const holder = new pg.Client({ connectionString: db.url, application_name: 'suekk-bench old snapshot' });
  const poller = new pg.Client({ connectionString: db.url, application_name: 'suekk-bench poll' });
  try {
    await seedUsers(db.url, 1, users, false);
    await analyze(db.url, ['users']);
    await Promise.all([holder.connect(), poller.connect()]);
    if (holdSnapshot) {
      // A read-only snapshot, as pg_dump takes: it holds back vacuum for the whole database.
      await holder.query('begin isolation level repeatable read read only');
      await holder.query('select count(*) from users');
    }
    const relay = await startBenchRelay(ctx, db.url);
    try {
      const bytes = async () => Number((await poller.query<{ bytes: string }>(SCHEMA_BYTES)).rows[0]!.bytes);
      const before = await bytes();
      const eps: number[] = [];
      for (let wave = 1; wave <= count; wave++) {
        await updateUsers(db.url, 1, users, wave);
        const t0 = performance.now();
        await waitUntil(() => outboxSettled(poller), `wave ${wave} delivered`, 600_000, 10);
        eps.push(round(users / ((performance.now() - t0) / 1000)));
      }
      const run: LongTxRun = {
        eps,
        last_first: round(eps.at(-1)! / eps[0]!, 3),
        bytes_per_event: round(((await bytes()) - before) / (users * count)),
      };
      ctx.log(
        `  ${label}: waves of ${users} at ${eps.join(', ')} events/s (last/first ×${run.last_first}), ${run.bytes_per_event} bytes of suekk_sync per event`,
      );
      return run;
    } finally {
      await relay.stop();
    }
  } finally {
    if (holdSnapshot) await holder.query('rollback').catch(() => undefined);
    await holder.end().catch(() => undefined);
    await poller.end().catch(() => undefined);
    await ctx.dbs.drop(db.name);
  }
}

export async function runLongTx(ctx: BenchContext): Promise<LongTxResult> {
  const { users, waves: count } = ctx.sizes.longtx;
  const held = await waves(ctx, 'longtx_snapshot', true);
  const free = await waves(ctx, 'longtx_no_snapshot', false);
  return { users, waves: count, ...held, no_snapshot: free };
}
