/**
 * Keeping the outbox small without deleting rows one by one: events and their delivery records go
 * to the partition suekk_sync.current_part names, a relay moves that on every quarter of the
 * retention, and a partition is truncated as a whole once it has been retired for the retention
 * and everything in it is settled. Undelivered events of a partition that is due (a parked user's,
 * say) move to the current partition first, keeping their ids: nothing unsettled is ever lost to
 * retention.
 *
 * Also the bookkeeping rows the relays leave: idle streams and old ticker states.
 */
import { PARTITION_COUNT } from './schema.ts';
import { withTransaction, type Pool, type PoolClient, type Queryable } from './pool.ts';

/** One relay at a time rotates (in the two-int advisory key space suekk-sync uses). */
const ROTATION_LOCK = '1937075051, 20';
/** A partition serves this share of the retention before the next one takes over. */
const PERIODS_PER_RETENTION = 4;

export interface RotationReport {
  /** The partition now current, when this call moved it on. */
  rotatedTo: number | null;
  /** Partitions emptied. */
  truncated: number[];
  /** Undelivered events moved out of partitions being emptied. */
  moved: number;
  /** A truncate waited too long for its lock (a long query on the partition): tried again later. */
  deferred: number[];
}

interface PartitionRow {
  part: number;
  current_since: Date | null;
  retired_at: Date | null;
  /** Seconds since retired_at, or since current_since (database clock). */
  retired_for: number | null;
  current_for: number | null;
}

/**
 * Truncates what may go and moves the current partition on when its period is over. Safe to call
 * from every relay: one does the work, the others return at once.
 */
export async function rotatePartitions(pool: Pool, retentionMs: number): Promise<RotationReport> {
  const report: RotationReport = { rotatedTo: null, truncated: [], moved: 0, deferred: [] };
  const retentionS = retentionMs / 1000;
  const { rows: partitions } = await pool.query<PartitionRow>(
    `select part, current_since, retired_at,
            extract(epoch from now() - retired_at)::float8 as retired_for,
            extract(epoch from now() - current_since)::float8 as current_for
       from suekk_sync.partitions order by part`,
  );
  const current = partitions.find((p) => p.current_since !== null && p.retired_at === null);
  for (const p of partitions) {
    if (p.retired_at === null || (p.retired_for ?? 0) < retentionS) continue;
    const outcome = await emptyPartition(pool, p.part, current?.part ?? 0);
    if (outcome === 'deferred') report.deferred.push(p.part);
    else if (outcome !== 'busy') {
      report.truncated.push(p.part);
      report.moved += outcome;
    }
  }
  if (current && (current.current_for ?? 0) >= retentionS / PERIODS_PER_RETENTION) {
    const next = (current.part + 1) % PARTITION_COUNT;
    const nextRow = partitions.find((p) => p.part === next);
    const free = nextRow !== undefined && nextRow.retired_at === null && nextRow.current_since === null;
    if (free || report.truncated.includes(next)) {
      const moved = await withTransaction(pool, async (client) => {
        if (!(await lock(client))) return false;
        // Writers read the sequence at every insert: from the next one on, rows go to `next`.
        await client.query("select setval('suekk_sync.current_part', $1, true)", [next]);
        await client.query(
          `update suekk_sync.partitions set retired_at = case when part = $1 then now() else retired_at end,
                  current_since = case when part = $2 then now() else current_since end
            where part in ($1, $2)`,
          [current.part, next],
        );
        return true;
      });
      if (moved) report.rotatedTo = next;
    }
  }
  return report;
}

async function lock(client: PoolClient): Promise<boolean> {
  const { rows } = await client.query<{ ok: boolean }>(`select pg_try_advisory_xact_lock(${ROTATION_LOCK}) as ok`);
  return rows[0]?.ok === true;
}

/**
 * Moves the partition's unsettled events to `into`, then truncates it and its delivery records.
 * Unsettled: past its stream's cursor, or not yet read by both tickers. Returns how many events
 * moved, 'busy' when another relay is rotating, 'deferred' when the truncate's lock timed out.
 */
async function emptyPartition(pool: Pool, part: number, into: number): Promise<number | 'busy' | 'deferred'> {
  const events = `suekk_sync.events_p${part}`;
  try {
    return await withTransaction(pool, async (client) => {
      if (!(await lock(client))) return 'busy' as const;
      // A reader of the partition (a long report, pg_dump) must not queue every relay query behind
      // this truncate for long: give up and try at the next maintenance.
      await client.query("set local lock_timeout = '1s'");
      const { rowCount } = await client.query(
        `update suekk_sync.events e set part = $1
          where e.part = $2 and e.id in (
            select ev.id from suekk_sync.streams s
              join suekk_sync.events ev on ev.user_id = s.user_id and ev.id > s.delivered_through
             where ev.part = $2
            union all
            select ev.id from suekk_sync.events ev where ev.part = $2 and ev.id >= suekk_sync.ticked_horizon())`,
        [into, part],
      );
      await client.query(`truncate ${events}, suekk_sync.deliveries_p${part}`);
      await client.query('update suekk_sync.partitions set retired_at = null, current_since = null where part = $1', [
        part,
      ]);
      return rowCount ?? 0;
    });
  } catch (err) {
    if ((err as { code?: string }).code === '55P03') return 'deferred';
    throw err;
  }
}

/**
 * Idle streams are only bookkeeping; deleting them keeps the table at the size of the work in
 * hand. Only below the tickers' horizon: a user without a stream must have nothing read and
 * unsettled (see suekk_sync.tick, which starts a new stream there).
 */
export async function pruneIdleStreams(db: Queryable, batch = 5000): Promise<number> {
  const { rowCount } = await db.query(
    `delete from suekk_sync.streams where user_id in (
       select user_id from suekk_sync.streams
        where locked_by is null and due_at is null and not parked and last_event_id <= delivered_through
          and delivered_through < suekk_sync.ticked_horizon()
        limit $1 for update skip locked)`,
    [batch],
  );
  return rowCount ?? 0;
}

/** The tickers' state is their latest row; earlier ones go in bulk. */
export async function pruneTicks(db: Queryable, keep = 10): Promise<number> {
  const { rowCount } = await db.query(
    `delete from suekk_sync.ticks t
      where t.tick < (select max(k.tick) from suekk_sync.ticks k where k.lane = t.lane) - $1`,
    [keep],
  );
  return rowCount ?? 0;
}
