/**
 * The relay's hot-path SQL: one statement per batch, never one per event. No statement here is
 * named (prepared): a prepared statement falls back to a generic plan after five runs, and that
 * plan is made once, for the tables as they were then, and kept. A daemon starts on a near-empty
 * outbox, so the plan it keeps is one for tiny tables: for the outcome statement, a walk of every
 * pending event per batch. When a resync then queued a million events, each batch took 1.8 s
 * (the benchmark's resync stalled at 547 deliveries in 40 s). Planned with the actual arrays on
 * every call, each statement costs about a millisecond of planning per batch and stays an index
 * lookup per row at any size. Every statement that records an outcome re-checks, in its own WHERE,
 * that the lease is still this relay's, so a relay whose lease lapsed can never overwrite what
 * another relay did. */
import type { Pool, PoolClient } from './pool.ts';

type Queryable = Pick<Pool | PoolClient, 'query'>;

export interface ClaimedEvent {
  id: string;
  webhookId: string;
  userId: string;
  action: 'created' | 'updated' | 'deleted';
  payload: Record<string, unknown>;
  source: string;
  attempts: number;
  rounds: number;
  createdAt: Date;
}

export interface ClaimedStream {
  userId: string;
  /** The stream's generation in the same snapshot as `events`. */
  gen: string;
  /** Pending events in capture order, at most `perStream`. */
  events: ClaimedEvent[];
}

interface EventRow {
  user_id: string;
  snapshot_gen: string;
  id: string | null;
  webhook_id: string;
  action: ClaimedEvent['action'];
  payload: Record<string, unknown>;
  source: string;
  attempts: number;
  rounds: number;
  created_at: Date;
}

const EVENT_COLUMNS = `e.id, e.webhook_id::text, e.action, e.payload, e.source, e.attempts, e.rounds, e.created_at`;

function groupRows(rows: EventRow[]): ClaimedStream[] {
  const byUser = new Map<string, ClaimedStream>();
  for (const row of rows) {
    let stream = byUser.get(row.user_id);
    if (!stream) {
      stream = { userId: row.user_id, gen: row.snapshot_gen, events: [] };
      byUser.set(row.user_id, stream);
    }
    if (row.id !== null) {
      stream.events.push({
        id: row.id,
        webhookId: row.webhook_id,
        userId: row.user_id,
        action: row.action,
        payload: row.payload,
        source: row.source,
        attempts: row.attempts,
        rounds: row.rounds,
        createdAt: row.created_at,
      });
    }
  }
  return [...byUser.values()];
}

/**
 * Claims up to `limit` due streams (live ones first) and reads their first events, in one
 * statement. The generation is read without locking, so it comes from the same snapshot as the
 * events: a writer that commits after that snapshot has bumped it, and the stream will not be
 * marked idle over its event.
 */
export async function claimStreams(
  db: Queryable,
  relayId: string,
  limit: number,
  leaseMs: number,
  perStream: number,
): Promise<ClaimedStream[]> {
  const { rows } = await db.query<EventRow>({
    text: `with candidates as (
        select user_id from suekk_sync.streams
         where next_attempt_at <= now() and not parked
           and (locked_until is null or locked_until < now())
           and not (select paused from suekk_sync.state)
         order by priority, next_attempt_at
         limit $2
         for update skip locked
      ), claimed as (
        update suekk_sync.streams s
           set locked_by = $1, locked_until = now() + make_interval(secs => $3::double precision / 1000)
          from candidates c
         where s.user_id = c.user_id
        returning s.user_id
      )
      select c.user_id,
             (select s.gen from suekk_sync.streams s where s.user_id = c.user_id) as snapshot_gen,
             ${EVENT_COLUMNS}
        from claimed c
        left join lateral suekk_sync.next_events(c.user_id, 0, $4) e on true
       order by c.user_id, e.id`,
    values: [relayId, limit, leaseMs, perStream],
  });
  return groupRows(rows);
}

export const FETCH_MORE_SQL = `select s.user_id, s.gen as snapshot_gen, ${EVENT_COLUMNS}
    from unnest($2::text[], $3::bigint[]) as c(user_id, after_id)
    join suekk_sync.streams s on s.user_id = c.user_id and s.locked_by = $1
    left join lateral suekk_sync.next_events(c.user_id, c.after_id, $4) e on true
   order by s.user_id, e.id`;

/** The next events of streams this relay holds, after the ones it has already handled. */
export async function fetchMoreEvents(
  db: Queryable,
  relayId: string,
  cursors: { userId: string; afterId: string }[],
  perStream: number,
): Promise<ClaimedStream[]> {
  const { rows } = await db.query<EventRow>({
    text: FETCH_MORE_SQL,
    values: [relayId, cursors.map((c) => c.userId), cursors.map((c) => c.afterId), perStream],
  });
  return groupRows(rows);
}

/** Extends the leases this relay holds; rows a writer has locked this instant wait for the next beat. */
export async function renewLeases(db: Queryable, relayId: string, userIds: string[], leaseMs: number): Promise<string[]> {
  if (userIds.length === 0) return [];
  const { rows } = await db.query<{ user_id: string }>({
    text: `with mine as (
        select user_id from suekk_sync.streams
         where user_id = any($2::text[]) and locked_by = $1
         for update skip locked
      )
      update suekk_sync.streams s
         set locked_until = now() + make_interval(secs => $3::double precision / 1000)
        from mine where s.user_id = mine.user_id
      returning s.user_id`,
    values: [relayId, userIds, leaseMs],
  });
  return rows.map((r) => r.user_id);
}

export type EventOutcomeStatus = 'delivered' | 'pending' | 'failed';

export interface EventOutcome {
  eventId: string;
  /** `pending` means: rescheduled for its next round. */
  status: EventOutcomeStatus;
  attempts: number;
  httpStatus: number | null;
  error: string | null;
  response: string | null;
  durationMs: number;
  nextAttemptAt: Date | null;
}

export type StreamRelease =
  /** Nothing left in the snapshot of generation `gen`: idle unless a writer added events since. */
  | { userId: string; kind: 'idle'; gen: string }
  /** The head event waits for its next round. */
  | { userId: string; kind: 'reschedule'; nextAttemptAt: Date }
  /** The head event failed: hold the user until an operator retries or skips. */
  | { userId: string; kind: 'park' }
  /** Stopping: hand the stream back as it is, due at once for whoever claims it. */
  | { userId: string; kind: 'return' };

/**
 * Records round outcomes and releases streams in one statement (so one round trip, and atomic:
 * a stream can never go idle while one of its delivered events is still marked pending). Returns
 * the event ids that counted and the user ids whose release had to wait (a writer held the row,
 * or the lease is gone): the caller tells those apart with stillHeld().
 */
export async function recordOutcomes(
  db: Queryable,
  relayId: string,
  outcomes: EventOutcome[],
  releases: StreamRelease[],
): Promise<{ recorded: string[]; releasePending: string[] }> {
  const { rows } = await db.query<{ recorded: string[] | null; released: string[] | null }>({
    text: `with o as (
        select * from unnest($2::bigint[], $3::text[], $4::int[], $5::int[], $6::text[], $7::text[], $8::int[], $9::timestamptz[])
          as o(id, status, attempts, http_status, error, response, duration_ms, next_attempt_at)
      ), recorded as (
        update suekk_sync.events e
           set status = o.status,
               attempts = e.attempts + o.attempts,
               rounds = e.rounds + 1,
               last_status = o.http_status,
               last_error = o.error,
               last_response = o.response,
               duration_ms = o.duration_ms,
               delivered_at = case when o.status = 'delivered' then clock_timestamp() end,
               next_attempt_at = coalesce(o.next_attempt_at, e.next_attempt_at)
          from o, suekk_sync.streams s
         where e.id = o.id and e.status = 'pending'
           and s.user_id = e.user_id and s.locked_by = $1
        returning e.id
      ), r as (
        select * from unnest($10::text[], $11::text[], $12::bigint[], $13::timestamptz[]) as r(user_id, kind, gen, next_attempt_at)
      ), mine as (
        select s.user_id from suekk_sync.streams s join r using (user_id)
         where s.locked_by = $1
         for update of s skip locked
      ), released as (
        update suekk_sync.streams s
           set locked_by = null,
               locked_until = null,
               parked = s.parked or r.kind = 'park',
               next_attempt_at = case r.kind
                 when 'idle' then case when s.gen = r.gen then null else s.next_attempt_at end
                 when 'reschedule' then r.next_attempt_at
                 else s.next_attempt_at end
          from r join mine using (user_id)
         where s.user_id = r.user_id
        returning s.user_id
      )
      select (select array_agg(id::text) from recorded) as recorded,
             (select array_agg(user_id) from released) as released`,
    values: [
      relayId,
      outcomes.map((o) => o.eventId),
      outcomes.map((o) => o.status),
      outcomes.map((o) => o.attempts),
      outcomes.map((o) => o.httpStatus),
      outcomes.map((o) => o.error),
      outcomes.map((o) => o.response),
      outcomes.map((o) => o.durationMs),
      outcomes.map((o) => o.nextAttemptAt),
      releases.map((r) => r.userId),
      releases.map((r) => r.kind),
      releases.map((r) => (r.kind === 'idle' ? r.gen : null)),
      releases.map((r) => (r.kind === 'reschedule' ? r.nextAttemptAt : null)),
    ],
  });
  const released = new Set(rows[0]?.released ?? []);
  return {
    recorded: rows[0]?.recorded ?? [],
    releasePending: releases.map((r) => r.userId).filter((id) => !released.has(id)),
  };
}

/** Which of these users this relay still holds (to tell a lost lease from a writer's row lock). */
export async function stillHeld(db: Queryable, relayId: string, userIds: string[]): Promise<Set<string>> {
  if (userIds.length === 0) return new Set();
  const { rows } = await db.query<{ user_id: string }>(
    'select user_id from suekk_sync.streams where user_id = any($2::text[]) and locked_by = $1',
    [relayId, userIds],
  );
  return new Set(rows.map((r) => r.user_id));
}

/**
 * Defence in depth: a stream marked idle while it has pending events (which the generation check
 * should make impossible) is made due again. Cheap: it walks the partial index of undelivered events.
 */
export async function reviveStrandedStreams(db: Queryable): Promise<number> {
  const { rowCount } = await db.query(
    `update suekk_sync.streams s set next_attempt_at = now()
       from (select distinct user_id from suekk_sync.events where status = 'pending') p
      where s.user_id = p.user_id and s.next_attempt_at is null and not s.parked`,
  );
  return rowCount ?? 0;
}

/**
 * Clears the doorbell and waits (briefly) for the writers that stayed silent while it was rung;
 * false when one of them is still open, so the caller must look again later.
 */
export async function answerDoorbell(db: Queryable): Promise<boolean> {
  const { rows } = await db.query<{ answered: boolean }>('select suekk_sync.answer_doorbell() as answered');
  return rows[0]?.answered === true;
}

/** Seconds until the next stream becomes due (database clock), or null when none waits. */
export async function secondsUntilNextDue(db: Queryable): Promise<number | null> {
  // One ordered probe of streams_due per priority, not a scan of every waiting stream.
  const { rows } = await db.query<{ s: number | null }>(
    `select extract(epoch from least(
        (select next_attempt_at from suekk_sync.streams
          where priority = 0 and next_attempt_at is not null and not parked and locked_until is null
          order by priority, next_attempt_at limit 1),
        (select next_attempt_at from suekk_sync.streams
          where priority = 1 and next_attempt_at is not null and not parked and locked_until is null
          order by priority, next_attempt_at limit 1)) - now())::float8 as s`,
  );
  const s = rows[0]?.s ?? null;
  return s === null ? null : Math.max(0, s);
}

export async function registerRelay(db: Queryable, relay: { id: string; host: string; pid: number; version: string }) {
  await db.query(
    `insert into suekk_sync.relays (id, host, pid, version) values ($1, $2, $3, $4)
     on conflict (id) do update set heartbeat_at = now()`,
    [relay.id, relay.host, relay.pid, relay.version],
  );
}

/** Beats, and registers again if the row went missing (e.g. the schema was restored). */
export async function heartbeat(db: Queryable, relay: { id: string; host: string; pid: number; version: string }) {
  const { rowCount } = await db.query('update suekk_sync.relays set heartbeat_at = now() where id = $1', [relay.id]);
  if (rowCount === 0) await registerRelay(db, relay);
}

export async function unregisterRelay(db: Queryable, relayId: string): Promise<void> {
  await db.query('delete from suekk_sync.relays where id = $1', [relayId]);
}

/** Deletes delivered/skipped events past retention, a small batch at a time (no long locks). */
export async function pruneDelivered(db: Queryable, retentionMs: number, batch = 1000): Promise<number> {
  const { rowCount } = await db.query(
    `delete from suekk_sync.events where id in (
       select id from suekk_sync.events
        where status in ('delivered', 'skipped')
          and created_at < now() - make_interval(secs => $1::double precision / 1000)
        limit $2)`,
    [retentionMs, batch],
  );
  return rowCount ?? 0;
}

/**
 * Idle streams are only bookkeeping; deleting them keeps the table at the size of the backlog. A
 * writer that holds the row (adding an event) makes the delete re-check and skip it.
 */
export async function pruneIdleStreams(db: Queryable, batch = 5000): Promise<number> {
  const { rowCount } = await db.query(
    `delete from suekk_sync.streams where user_id in (
       select user_id from suekk_sync.streams
        where next_attempt_at is null and locked_by is null and not parked
        limit $1 for update skip locked)
     and next_attempt_at is null and locked_by is null and not parked`,
    [batch],
  );
  return rowCount ?? 0;
}
