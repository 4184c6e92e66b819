/**
 * `tail-log`: the delivery log, and following it live.
 *
 * Following cannot page by `id > last`: ids are assigned at insert, so a transaction that inserted
 * id 7 may commit after one that inserted id 8, and a cursor past 8 would never see 7. The
 * follower instead keeps a floor below which every id is settled (committed and read, or never
 * going to commit) and re-reads everything above it on each poll, showing what is new or changed.
 * The floor advances from the database's own bookkeeping: an id below the highest committed one
 * that is not visible yet belongs to a transaction still open, and the snapshot horizon says when
 * every transaction open at a given moment has ended.
 */
import type { Pool, PoolClient } from '../db/pool.ts';
import { EVENT_STATUSES, type EventStatus } from '../db/schema.ts';
import { UsageError } from '../errors.ts';
import { installedSource, resolveUserRef } from '../db/source.ts';

type Queryable = Pick<Pool | PoolClient, 'query'>;

export { EVENT_STATUSES, type EventStatus };

export interface LogEntry {
  id: string;
  webhookId: string;
  userId: string;
  /** From the payload: the event's own snapshot, so deleted users keep their name here. */
  username: string;
  action: string;
  source: string;
  status: EventStatus;
  attempts: number;
  rounds: number;
  httpStatus: number | null;
  durationMs: number | null;
  error: string | null;
  createdAt: Date;
  deliveredAt: Date | null;
  nextAttemptAt: Date;
  /** Superseded (coalescing): the webhook-id of the call that carried its state. */
  supersededBy: string | null;
}

export interface TailFilter {
  status?: EventStatus;
  userId?: string;
}

// Selecting id::text names the output column "id", and ORDER BY prefers an output column: every
// "order by" here names event_log.id, or ids would sort as text ('10' before '9'). event_log derives
// each event's status from its stream and the delivery log (events are never updated).
const COLUMNS = `id::text, 'evt_' || webhook_id::text as "webhookId", user_id as "userId",
  coalesce(payload->>'username', '') as username, action, source, status, attempts, rounds,
  last_status as "httpStatus", duration_ms as "durationMs", last_error as error,
  created_at as "createdAt", delivered_at as "deliveredAt", next_attempt_at as "nextAttemptAt",
  'evt_' || superseded_by::text as "supersededBy"`;

/**
 * What the follower reads besides: when the event's outcome was written. The log shows changes in
 * the order they happened, and an old event delivered after a new one was captured comes after it.
 */
const FOLLOW_COLUMNS = `${COLUMNS},
  (select d.at from suekk_sync.deliveries d where d.event_id = event_log.id order by d.at desc limit 1) as "settledAt"`;

type FollowedRow = LogEntry & { settledAt: Date | null };

/** Rows read per statement while following; a burst is read in pages, never skipped. */
const PAGE = 1_000;
/**
 * How far back the first poll looks for transactions that were already open when following began
 * (the horizon only covers them from then on): one open longer and committing later is missed.
 */
const START_LOOKBACK = '2 minutes';
/** Undelivered events below the floor re-read for status changes, at most (the oldest are kept). */
const MAX_TRACKED = 10_000;

/**
 * Failed and skipped events are rare among many delivered ones: found through the streams and the
 * delivery log, not by deriving every event's status until enough match.
 */
const RARE_STATUS: Partial<Record<EventStatus, string>> = {
  failed: 'id in (select head_id from suekk_sync.streams where parked)',
  skipped: "id in (select event_id from suekk_sync.deliveries where outcome = 'skipped')",
  superseded: "id in (select event_id from suekk_sync.deliveries where outcome = 'superseded')",
};

function where(filter: TailFilter, conditions: string[], values: unknown[]): string {
  const all = [...conditions];
  if (filter.status !== undefined) {
    values.push(filter.status);
    all.push(`status = $${values.length}`);
    const rare = RARE_STATUS[filter.status];
    if (rare) all.push(rare);
  }
  if (filter.userId !== undefined) {
    values.push(filter.userId);
    all.push(`user_id = $${values.length}`);
  }
  return all.length === 0 ? '' : `where ${all.join(' and ')}`;
}

/** The last `limit` events matching the filter, oldest first. */
export async function recentEntries(db: Queryable, filter: TailFilter, limit: number): Promise<LogEntry[]> {
  const values: unknown[] = [];
  const clause = where(filter, [], values);
  values.push(limit);
  const { rows } = await db.query<LogEntry>(
    `select ${COLUMNS} from suekk_sync.event_log ${clause} order by event_log.id desc limit $${values.length}`,
    values,
  );
  return rows.reverse();
}

/**
 * The user id a `--user <ref>` names: a user in the table (id, email, username), else one the log
 * still knows by id, email or username — hard-deleted users leave only their events behind.
 */
export async function resolveLogUser(db: Queryable, ref: string): Promise<string> {
  try {
    return (await resolveUserRef(db, await installedSource(db), ref)).userId;
  } catch (err) {
    if (!(err instanceof UsageError) || !err.message.startsWith('No user matches')) throw err;
    const { rows } = await db.query<{ user_id: string }>(
      `select distinct user_id from suekk_sync.events
        where user_id = $1 or body::json->>'email' = $1 or body::json->>'username' = $1 limit 2`,
      [ref],
    );
    if (rows.length === 1) return rows[0]!.user_id;
    if (rows.length > 1)
      throw new UsageError(`"${ref}" matches more than one user in the log; use the user's id instead.`);
    throw new UsageError(`No user and no logged event matches "${ref}" by id, email or username; check the reference.`);
  }
}

interface Seen {
  /** What was last shown of the event: a change of either shows it again. */
  key: string;
  settled: boolean;
}

interface Horizon {
  /** Every transaction with an id below this has ended. */
  xmin: bigint;
  /** Every transaction with an id at or above this started after the snapshot. */
  xmax: bigint;
  /** The highest committed event id. */
  maxId: bigint;
}

export class LogFollower {
  /** Every event id at or below it is settled: committed and read, or never going to commit. */
  private floor = 0n;
  /** Each raises the floor to `floor` once every transaction below `until` has ended. */
  private readonly gates: { floor: bigint; until: bigint }[] = [];
  private lastMaxId = 0n;
  /** Events above the floor, and undelivered events below it whose changes are still followed. */
  private readonly seen = new Map<bigint, Seen>();

  /** Follows one user's events, or everyone's when `userId` is undefined. */
  constructor(
    private readonly db: Queryable,
    private readonly userId?: string,
  ) {}

  /** Takes the starting point and returns the last `limit` events (of `status`, when given). */
  async start(limit: number, status?: EventStatus): Promise<LogEntry[]> {
    this.lastMaxId = (await this.horizon()).maxId;
    const { rows } = await this.db.query<{ id: string }>(
      // Walks back by id (ids follow capture time closely) to the last event older than the look-back.
      `select coalesce((select id from suekk_sync.events where created_at < now() - interval '${START_LOOKBACK}'
                         order by id desc limit 1), 0)::text as id`,
    );
    this.floor = BigInt(rows[0]!.id);
    this.absorb(await this.readAbove(this.floor));
    this.absorb(await this.readUnsettledBelow(this.floor));
    const shown = limit > 0 ? await recentEntries(this.db, { status, userId: this.userId }, limit) : [];
    this.absorb(shown);
    return shown;
  }

  /**
   * What committed or changed since the last call, whatever its status (the caller filters what it
   * shows, and its counters see everything), in the order the changes happened: a capture at its
   * capture time, an outcome at the time it was written. A round that failed records no time of its
   * own; it comes last, as the latest thing this poll learnt. Ties go by id.
   */
  async poll(): Promise<LogEntry[]> {
    const horizon = await this.horizon();
    const changed = this.absorb([...(await this.readAbove(this.floor)), ...(await this.readTracked())]);
    // An id below the previous poll's highest that was not visible then belonged to a transaction
    // open then, which has its xid by now (the id and the row's insert are one statement): it is
    // settled once every transaction open at this poll has ended. Ids are handed out in order only
    // while the identity sequence caches one value (its default).
    this.gates.push({ floor: this.lastMaxId, until: horizon.xmax });
    this.lastMaxId = horizon.maxId;
    while (this.gates.length > 0 && this.gates[0]!.until <= horizon.xmin) {
      const gate = this.gates.shift()!;
      if (gate.floor > this.floor) this.floor = gate.floor;
    }
    this.forgetSettled();
    return changed
      .sort((a, b) => a.at - b.at || (BigInt(a.entry.id) < BigInt(b.entry.id) ? -1 : 1))
      .map((c) => c.entry);
  }

  /** Records rows, returning the ones not seen in this state before, each with when it changed. */
  private absorb(rows: (LogEntry | FollowedRow)[]): { entry: LogEntry; at: number }[] {
    const changed: { entry: LogEntry; at: number }[] = [];
    for (const row of rows) {
      const id = BigInt(row.id);
      const key = `${row.status}:${row.attempts}`;
      const before = this.seen.get(id);
      if (before?.key === key) continue;
      const settled = row.status !== 'pending' && row.status !== 'failed';
      this.seen.set(id, { key, settled });
      const { settledAt = null, ...entry } = row as FollowedRow;
      const at =
        settled && settledAt !== null
          ? settledAt.getTime()
          : before === undefined && row.attempts === 0
            ? row.createdAt.getTime()
            : Number.POSITIVE_INFINITY;
      changed.push({ entry, at });
    }
    return changed;
  }

  private forgetSettled(): void {
    const tracked: bigint[] = [];
    for (const [id, seen] of this.seen) {
      if (id > this.floor) continue;
      if (seen.settled) this.seen.delete(id);
      else tracked.push(id);
    }
    if (tracked.length > MAX_TRACKED) {
      tracked.sort((a, b) => (a < b ? -1 : 1));
      for (const id of tracked.slice(MAX_TRACKED)) this.seen.delete(id);
    }
  }

  private async horizon(): Promise<Horizon> {
    const { rows } = await this.db.query<{ xmin: string; xmax: string; max_id: string }>(
      `select pg_snapshot_xmin(s)::text as xmin, pg_snapshot_xmax(s)::text as xmax,
              (select coalesce(max(id), 0) from suekk_sync.events)::text as max_id
         from pg_current_snapshot() as s`,
    );
    const row = rows[0]!;
    return { xmin: BigInt(row.xmin), xmax: BigInt(row.xmax), maxId: BigInt(row.max_id) };
  }

  private async readAbove(floor: bigint): Promise<FollowedRow[]> {
    const all: FollowedRow[] = [];
    let after = floor;
    for (;;) {
      const values: unknown[] = [after.toString()];
      const clause = where({ userId: this.userId }, ['id > $1'], values);
      values.push(PAGE);
      const { rows } = await this.db.query<FollowedRow>(
        `select ${FOLLOW_COLUMNS} from suekk_sync.event_log ${clause} order by event_log.id limit $${values.length}`,
        values,
      );
      all.push(...rows);
      if (rows.length < PAGE) return all;
      after = BigInt(rows[rows.length - 1]!.id);
    }
  }

  private async readUnsettledBelow(floor: bigint): Promise<LogEntry[]> {
    const values: unknown[] = [floor.toString()];
    const clause = where({ userId: this.userId }, ["status in ('pending', 'failed')", 'id <= $1'], values);
    values.push(MAX_TRACKED);
    const { rows } = await this.db.query<LogEntry>(
      `select ${COLUMNS} from suekk_sync.event_log ${clause} order by event_log.id limit $${values.length}`,
      values,
    );
    return rows;
  }

  private async readTracked(): Promise<FollowedRow[]> {
    const ids = [...this.seen.keys()].filter((id) => id <= this.floor).map(String);
    if (ids.length === 0) return [];
    const { rows } = await this.db.query<FollowedRow>(
      `select ${FOLLOW_COLUMNS} from suekk_sync.event_log where id = any($1::bigint[])`,
      [ids],
    );
    return rows;
  }
}

export interface RateSnapshot {
  deliveredPerMinute: number;
  failedPerMinute: number;
  /** Capture-to-delivery lag over the last minute's deliveries; null when there were none. */
  lagP50Ms: number | null;
  lagP99Ms: number | null;
}

/** Delivery counters over a sliding minute, from the changes a follower sees. */
export class DeliveryRates {
  private delivered: { at: number; lagMs: number }[] = [];
  private failed: number[] = [];

  constructor(private readonly windowMs = 60_000) {}

  record(changes: LogEntry[], now = Date.now()): void {
    for (const e of changes) {
      if (e.status === 'delivered' && e.deliveredAt !== null) {
        this.delivered.push({ at: now, lagMs: Math.max(0, e.deliveredAt.getTime() - e.createdAt.getTime()) });
      } else if (e.status === 'failed') {
        this.failed.push(now);
      }
    }
  }

  snapshot(now = Date.now()): RateSnapshot {
    const since = now - this.windowMs;
    this.delivered = this.delivered.filter((d) => d.at > since);
    this.failed = this.failed.filter((at) => at > since);
    const lags = this.delivered.map((d) => d.lagMs).sort((a, b) => a - b);
    return {
      deliveredPerMinute: this.delivered.length,
      failedPerMinute: this.failed.length,
      lagP50Ms: percentile(lags, 0.5),
      lagP99Ms: percentile(lags, 0.99),
    };
  }
}

/** Nearest rank: an observed value, never an interpolated one. */
function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
}

/** One `tail-log --json` line: its keys are a contract scripts rely on. */
export function entryJson(e: LogEntry): Record<string, unknown> {
  return {
    id: e.id,
    webhookId: e.webhookId,
    userId: e.userId,
    username: e.username,
    action: e.action,
    source: e.source,
    status: e.status,
    attempts: e.attempts,
    rounds: e.rounds,
    httpStatus: e.httpStatus,
    durationMs: e.durationMs,
    error: e.error,
    createdAt: e.createdAt.toISOString(),
    deliveredAt: e.deliveredAt?.toISOString() ?? null,
    // Only a pending event waits for anything.
    nextAttemptAt: e.status === 'pending' ? e.nextAttemptAt.toISOString() : null,
    supersededBy: e.supersededBy,
  };
}

/** One plain log line: capture time, webhook id, user, what happened and how it went. */
export function formatEntry(e: LogEntry): string {
  const parts = [
    e.createdAt.toISOString(),
    e.webhookId,
    (e.username || e.userId).padEnd(16),
    e.action.padEnd(7),
    e.source.padEnd(7),
    e.status.padEnd(9),
    `attempts=${e.attempts} rounds=${e.rounds}`,
  ];
  if (e.httpStatus !== null) parts.push(`http=${e.httpStatus}`);
  if (e.durationMs !== null) parts.push(`${e.durationMs}ms`);
  if (e.status === 'pending' && e.rounds > 0) parts.push(`next=${e.nextAttemptAt.toISOString()}`);
  if (e.supersededBy !== null) parts.push(`carried by ${e.supersededBy}`);
  if (e.error !== null && e.status !== 'delivered') parts.push(`error: ${e.error}`);
  return parts.join('  ');
}
