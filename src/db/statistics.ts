/**
 * The planner's statistics for the outbox's partitions, refreshed when they fall behind. Relays
 * plan their statements once per session, and a partition that was empty when last analyzed (a
 * fresh install, one just emptied by retention) and then took a resync's million events looks
 * tiny to the planner: it walks the id index across every user's events to find one user's.
 * Autovacuum corrects that within a minute or so; a relay cannot wait that long at full speed.
 */
import type { Queryable } from './pool.ts';

/** Rows changed since the last analyze, beyond which it is stale: autovacuum's rule, but sooner. */
const STALE_FRACTION = 0.2;
const STALE_MIN_ROWS = 1_000;

/** Analyzes the events and deliveries partitions whose statistics are stale; returns their names. */
export async function refreshOutboxStatistics(db: Queryable): Promise<string[]> {
  const { rows } = await db.query<{ name: string }>(
    `select format('%I.%I', t.schemaname, t.relname) as name from pg_stat_user_tables t
       join pg_class c on c.oid = t.relid
      where t.schemaname = 'suekk_sync' and (t.relname like 'events\\_p%' or t.relname like 'deliveries\\_p%')
        and t.n_mod_since_analyze > greatest($1::float8, $2::float8 * greatest(c.reltuples, 0))`,
    [STALE_MIN_ROWS, STALE_FRACTION],
  );
  for (const { name } of rows) await db.query(`analyze ${name}`);
  return rows.map((r) => r.name);
}
