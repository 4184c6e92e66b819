/**
 * The relay's hot-path SQL: one statement per batch, never one per event. A claim (due streams,
 * then each lane's ticker) and a batch of releases are each one round trip; every statement that
 * records progress re-checks, in its own WHERE, that the lease is still this relay's, so a relay
 * whose lease lapsed can never overwrite what another relay did.
 *
 * No statement here is named (prepared): a prepared statement falls back to a generic plan after
 * five runs, made once for the tables as they were then and kept. A daemon starts on a near-empty
 * outbox, so that plan is one for tiny tables; planned with the actual arrays on every call, each
 * statement costs a little planning and stays an index lookup per row at any size.
 */
import type { Queryable } from './pool.ts';
import { backendDownCondition, NOTIFY_CHANNEL, type Action } from './schema.ts';

export interface ClaimedEvent {
  id: string;
  webhookId: string;
  userId: string;
  action: Action;
  /** The webhook body, as capture rendered it: sent as it is. */
  body: string;
  source: string;
  runId: string | null;
  /** Attempts and rounds it has had (only the head of a stream can have had any). */
  attempts: number;
  rounds: number;
  createdAt: Date;
}

export interface ClaimedStream {
  userId: string;
  /** Every event of the user up to this id is settled. */
  cursor: string;
  /** Pending events in capture order, at most `perStream`. */
  events: ClaimedEvent[];
}

export interface Claim {
  streams: ClaimedStream[];
  /** Event ids were handed out to transactions still open: look again shortly. */
  openGaps: boolean;
  /** Events are left that this claim did not read (a relay with room claims again at once). */
  more: boolean;
  /** Another relay was ticking a lane: it may leave work behind. */
  busy: boolean;
}

interface EventRow {
  user_id: string | null;
  delivered_through: string | null;
  head_id: string | null;
  head_attempts: number | null;
  head_rounds: number | null;
  id: string | null;
  webhook_id: string | null;
  action: ClaimedEvent['action'] | null;
  body: string | null;
  source: string | null;
  run_id: string | null;
  created_at: Date | null;
  open_gaps: boolean | null;
  more: boolean | null;
  busy: boolean | null;
}

function toEvent(row: EventRow, userId: string, head?: { id: string; attempts: number; rounds: number }): ClaimedEvent {
  const isHead = head !== undefined && head.id === row.id;
  return {
    id: row.id!,
    webhookId: row.webhook_id!,
    userId,
    action: row.action!,
    body: row.body!,
    source: row.source!,
    runId: row.run_id,
    attempts: isHead ? head.attempts : 0,
    rounds: isHead ? head.rounds : 0,
    createdAt: row.created_at!,
  };
}

/**
 * Leases up to `limit` users to this relay (streams due in the due set first, then new work from
 * each lane's ticker, live before resync) and reads their first events, in one statement.
 * `answerBell` clears the doorbell first, so a writer that rings after it is heard.
 */
export async function claimStreams(
  db: Queryable,
  relayId: string,
  options: {
    limit: number;
    leaseMs: number;
    perStream: number;
    readLimit: number;
    answerBell: boolean;
    /** Read a ticked user's events past what the tick saw (coalescing merges what is there). */
    readAhead?: boolean;
  },
): Promise<Claim> {
  const { rows } = await db.query<EventRow>({
    text: `select user_id, delivered_through::text, head_id::text, head_attempts, head_rounds, id::text,
                  webhook_id::text, action, body, source, run_id::text, created_at, open_gaps, more, busy
             from suekk_sync.claim($1, $2, $3, $4, $5, $6, $7)`,
    values: [
      relayId,
      options.limit,
      options.leaseMs,
      options.perStream,
      options.readLimit,
      options.answerBell,
      options.readAhead ?? false,
    ],
  });
  const status = rows.find((r) => r.user_id === null);
  return {
    streams: groupStreams(rows),
    openGaps: status?.open_gaps ?? false,
    more: status?.more ?? false,
    busy: status?.busy ?? false,
  };
}

/**
 * Leases these users only, for a command that delivers its own events while no relay runs, and
 * reads their first events. It never ticks: a lane's ticker leases whichever users it reads, and
 * a command must leave other users' events to the relays. A user's events commit in id order (each
 * writer holds the user's row while it takes its id), so they are read straight from the outbox:
 * the user's stream learns of events no ticker has read yet, and a user without a stream gets one
 * starting below the ticked horizon, as a ticker would start it. Nothing is leased while paused.
 */
export async function claimUsers(
  db: Queryable,
  relayId: string,
  userIds: readonly string[],
  options: { limit: number; leaseMs: number; perStream: number },
): Promise<Claim> {
  await db.query(
    `insert into suekk_sync.streams as s (user_id, delivered_through, last_event_id, lane)
     select w.user_id, h.horizon - 1, m.max_id, case when m.source = 'resync' then 1 else 0 end
       from unnest($1::text[]) w(user_id)
      cross join (select suekk_sync.ticked_horizon() as horizon) h
      cross join lateral (select e.id as max_id, e.source from suekk_sync.events e
                           where e.user_id = w.user_id order by e.id desc limit 1) m
      where m.max_id >= h.horizon
      order by w.user_id
     on conflict (user_id) do update set last_event_id = excluded.last_event_id
      where s.last_event_id < excluded.last_event_id`,
    [userIds],
  );
  const { rows } = await db.query<EventRow>({
    text: `with c as (
        select s.user_id from suekk_sync.streams s
         where s.user_id = any($2::text[]) and not s.parked
           and (s.locked_by is null or s.locked_until < now())
           and (s.due_at <= now() or (s.due_at is null and s.last_event_id > s.delivered_through))
           and not coalesce((select st.paused from suekk_sync.state st), false)
         order by s.user_id limit $3 for update skip locked
      ), u as (
        update suekk_sync.streams s
           set locked_by = $1, locked_until = now() + make_interval(secs => $4::double precision / 1000), due_at = null
          from c where s.user_id = c.user_id
        returning s.user_id, s.delivered_through, s.head_id, s.head_attempts, s.head_rounds
      )
      select u.user_id, u.delivered_through::text, u.head_id::text, u.head_attempts, u.head_rounds, e.id::text,
             e.webhook_id::text, e.action, e.body, e.source, e.run_id::text, e.created_at
        from u left join lateral suekk_sync.next_events(u.user_id, u.delivered_through, $5) e on true
       order by 1, e.id`,
    values: [relayId, userIds, options.limit, options.leaseMs, options.perStream],
  });
  const streams = groupStreams(rows);
  return { streams, openGaps: false, more: streams.length >= options.limit, busy: false };
}

/** Rows of stream columns and (left-joined) events, in user and id order, as streams. */
function groupStreams(rows: EventRow[]): ClaimedStream[] {
  const byUser = new Map<string, ClaimedStream>();
  for (const row of rows) {
    if (row.user_id === null) continue;
    let stream = byUser.get(row.user_id);
    if (!stream) {
      stream = { userId: row.user_id, cursor: row.delivered_through!, events: [] };
      byUser.set(row.user_id, stream);
    }
    const head =
      row.head_id === null
        ? undefined
        : { id: row.head_id, attempts: row.head_attempts ?? 0, rounds: row.head_rounds ?? 0 };
    if (row.id !== null) stream.events.push(toEvent(row, row.user_id, head));
  }
  return [...byUser.values()];
}

/**
 * A stream this relay holds, read afresh: for one a claim leased again while the relay was still
 * finishing its previous turn of it.
 */
export async function readHeldStream(
  db: Queryable,
  relayId: string,
  userId: string,
  perStream: number,
): Promise<ClaimedStream | undefined> {
  const { rows } = await db.query<EventRow>({ text: READ_HELD_STREAM_SQL, values: [relayId, userId, perStream] });
  return groupStreams(rows)[0];
}

/**
 * A held stream and its next events: the same read as the claim's and the release's
 * (suekk_sync.next_events), an index range from the cursor in id order that stops after
 * `perStream` rows, so a user with ten thousand pending events costs what a user with one does
 * (relay-order.test.ts holds it to that).
 */
export const READ_HELD_STREAM_SQL = `select s.user_id, s.delivered_through::text, s.head_id::text, s.head_attempts, s.head_rounds, e.id,
         e.webhook_id::text, e.action, e.body, e.source, e.run_id::text, e.created_at
    from suekk_sync.streams s
    left join lateral suekk_sync.next_events(s.user_id, s.delivered_through, $3) e on true
   where s.user_id = $2 and s.locked_by = $1
   order by e.id`;

/** Extends the leases this relay holds; rows another statement has locked this instant wait for the next beat. */
export async function renewLeases(
  db: Queryable,
  relayId: string,
  userIds: string[],
  leaseMs: number,
): Promise<string[]> {
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

/** What the head event of a stream has been through, kept on the stream until it is delivered. */
export interface HeadState {
  eventId: string;
  attempts: number;
  rounds: number;
  httpStatus: number | null;
  error: string | null;
  response: string | null;
  durationMs: number;
}

/** One settled event, for the delivery log. */
export interface DeliveryRecord {
  eventId: string;
  /** superseded: merged into a later event's call (coalescing), whose webhook-id is supersededBy. */
  outcome: 'delivered' | 'superseded';
  supersededBy: string | null;
  /** In all its rounds. */
  attempts: number;
  rounds: number;
  httpStatus: number | null;
  durationMs: number;
  /** The backend's answer, kept only for pushes: their operator waits to see it. */
  response: string | null;
  /** Its resync run, whose settled count it adds to. */
  runId: string | null;
}

export type ReleaseKind =
  /** Everything read was delivered: idle, unless a ticker has seen more since (then it goes on). */
  | 'idle'
  /** The events read so far are delivered: record that, keep the lease, read the next ones. */
  | 'checkpoint'
  /** The head event waits for its next round (dueAt). */
  | 'reschedule'
  /** The head event failed: hold the user until an operator retries or skips. */
  | 'park'
  /** Stopping: hand the stream back, due at once for whoever claims it. */
  | 'return';

export interface StreamRelease {
  userId: string;
  kind: ReleaseKind;
  /** Every event of the user up to this id is settled now. */
  cursor: string;
  /** reschedule: when the next round is due. */
  dueAt?: Date;
  /** reschedule and park: the event whose round failed, and all its rounds so far. */
  head: HeadState | null;
  /** Delivered in this turn, appended to the log with the release. */
  delivered: DeliveryRecord[];
}

export interface ReleaseResult {
  userId: string;
  /** released: handed back; continued: still this relay's, with its next events; lost: the lease was not ours. */
  outcome: 'released' | 'continued' | 'lost';
  events: ClaimedEvent[];
}

/**
 * Records the turns of several streams in one statement: each stream's cursor and head, the
 * delivery log rows of what it delivered, the resync runs' counts, and the lease (handed back, or
 * kept with the next events read for a stream that goes on). All or nothing per stream: a stream
 * whose lease is no longer ours records nothing, and the relay that holds it now delivers again.
 */
export async function releaseStreams(
  db: Queryable,
  relayId: string,
  releases: StreamRelease[],
  options: { leaseMs: number; perStream: number },
): Promise<ReleaseResult[]> {
  const delivered = releases.flatMap((r) => r.delivered.map((d) => ({ ...d, userId: r.userId })));
  const head = (r: StreamRelease) => r.head;
  const { rows } = await db.query<EventRow & { kept: boolean }>({
    text: `with r as (
        select * from unnest($2::text[], $3::text[], $4::bigint[], $5::timestamptz[], $6::bigint[], $7::int[], $8::int[],
                             $9::int[], $10::text[], $11::text[], $12::int[])
          as r(user_id, kind, cursor, due_at, head_id, head_attempts, head_rounds, head_status, head_error, head_response, head_duration)
      ), mine as (
        select s.user_id, s.last_event_id from suekk_sync.streams s
         where s.user_id = any($2::text[]) and s.locked_by = $1
         order by s.user_id for update
      ), done as (
        update suekk_sync.streams s
           set delivered_through = greatest(s.delivered_through, r.cursor),
               locked_by = case when r.kind = 'checkpoint' or (r.kind = 'idle' and mine.last_event_id > r.cursor) then s.locked_by end,
               locked_until = case when r.kind = 'checkpoint' or (r.kind = 'idle' and mine.last_event_id > r.cursor)
                                   then now() + make_interval(secs => $13::double precision / 1000) end,
               due_at = case r.kind when 'reschedule' then r.due_at when 'return' then now() end,
               parked = r.kind = 'park',
               -- A failed round records its head; otherwise the head's record stays until the cursor passes it.
               head_id = case when r.kind in ('reschedule', 'park') then r.head_id when s.head_id <= r.cursor then null else s.head_id end,
               head_attempts = case when r.kind in ('reschedule', 'park') then r.head_attempts when s.head_id <= r.cursor then null else s.head_attempts end,
               head_rounds = case when r.kind in ('reschedule', 'park') then r.head_rounds when s.head_id <= r.cursor then null else s.head_rounds end,
               head_http_status = case when r.kind in ('reschedule', 'park') then r.head_status when s.head_id <= r.cursor then null else s.head_http_status end,
               head_error = case when r.kind in ('reschedule', 'park') then r.head_error when s.head_id <= r.cursor then null else s.head_error end,
               head_response = case when r.kind in ('reschedule', 'park') then r.head_response when s.head_id <= r.cursor then null else s.head_response end,
               head_duration_ms = case when r.kind in ('reschedule', 'park') then r.head_duration when s.head_id <= r.cursor then null else s.head_duration_ms end
          from r join mine using (user_id)
         where s.user_id = r.user_id
        returning s.user_id, s.locked_by is not null as kept, r.cursor
      ), d as (
        select * from unnest($14::bigint[], $15::text[], $16::int[], $17::int[], $18::int[], $19::int[], $20::bigint[], $22::text[],
                             $23::text[], $24::uuid[])
          as d(event_id, user_id, attempts, rounds, http_status, duration_ms, run_id, response, outcome, superseded_by)
      ), logged as (
        insert into suekk_sync.deliveries (event_id, outcome, attempts, rounds, http_status, duration_ms, response, superseded_by)
        select d.event_id, d.outcome, d.attempts, d.rounds, d.http_status, d.duration_ms, d.response, d.superseded_by
          from d join done using (user_id)
      ), runs as (
        update suekk_sync.resync_runs rr set settled = rr.settled + c.n
          from (select d.run_id, count(*) as n from d join done using (user_id)
                 where d.run_id is not null group by d.run_id) c
         where rr.id = c.run_id
      )
      -- Only a stream that goes on reads its next events (a function call each).
      -- Ids as bigint (numeric order); node-postgres hands them over as strings anyway.
      select done.user_id, done.kept, null::bigint as id, null::text as webhook_id, null::text as action, null::text as body,
             null::text as source, null::bigint as run_id, null::timestamptz as created_at
        from done where not done.kept
      union all
      select done.user_id, done.kept, e.id, e.webhook_id::text, e.action, e.body, e.source, e.run_id, e.created_at
        from done left join lateral suekk_sync.next_events(done.user_id, done.cursor, $21) e on true
       where done.kept
       order by 1, 3`,
    values: [
      relayId,
      releases.map((r) => r.userId),
      releases.map((r) => r.kind),
      releases.map((r) => r.cursor),
      releases.map((r) => r.dueAt ?? null),
      releases.map((r) => head(r)?.eventId ?? null),
      releases.map((r) => head(r)?.attempts ?? null),
      releases.map((r) => head(r)?.rounds ?? null),
      releases.map((r) => head(r)?.httpStatus ?? null),
      releases.map((r) => head(r)?.error ?? null),
      releases.map((r) => head(r)?.response ?? null),
      releases.map((r) => head(r)?.durationMs ?? null),
      options.leaseMs,
      delivered.map((d) => d.eventId),
      delivered.map((d) => d.userId),
      delivered.map((d) => d.attempts),
      delivered.map((d) => d.rounds),
      delivered.map((d) => d.httpStatus),
      delivered.map((d) => d.durationMs),
      delivered.map((d) => d.runId),
      options.perStream,
      delivered.map((d) => d.response),
      delivered.map((d) => d.outcome),
      delivered.map((d) => d.supersededBy),
    ],
  });
  const results = new Map<string, ReleaseResult>();
  for (const row of rows) {
    const userId = row.user_id!;
    let result = results.get(userId);
    if (!result) {
      result = { userId, outcome: row.kept ? 'continued' : 'released', events: [] };
      results.set(userId, result);
    }
    if (row.id !== null) result.events.push(toEvent(row, userId));
  }
  return releases.map((r) => results.get(r.userId) ?? { userId: r.userId, outcome: 'lost', events: [] });
}

/**
 * Streams nobody is delivering although they should be: leases of relays that died (run out), and,
 * as a defence, users with work left that are neither leased, due, nor parked. Both are made due.
 */
export async function sweepStreams(db: Queryable): Promise<{ expired: number; stranded: number }> {
  const { rows } = await db.query<{ expired: number; stranded: number }>(
    `with found as (
        select s.user_id, s.locked_by is not null as expired from suekk_sync.streams s
         where s.due_at is null and not s.parked
           and ((s.locked_by is not null and s.locked_until < now())
                or (s.locked_by is null and s.last_event_id > s.delivered_through))
         for update skip locked
      ), swept as (
        update suekk_sync.streams s set due_at = now(), locked_by = null, locked_until = null
          from found where s.user_id = found.user_id
        returning found.expired
      )
      select count(*) filter (where expired)::int as expired, count(*) filter (where not expired)::int as stranded from swept`,
  );
  return rows[0] ?? { expired: 0, stranded: 0 };
}

/** Seconds until the next stream in the due set becomes due (database clock), or null when none waits. */
export async function secondsUntilNextDue(db: Queryable): Promise<number | null> {
  // One ordered probe of streams_due per lane, not a scan of every waiting stream.
  const { rows } = await db.query<{ s: number | null }>(
    `select extract(epoch from least(
        (select due_at from suekk_sync.streams
          where lane = 0 and due_at is not null and not parked and locked_by is null order by due_at limit 1),
        (select due_at from suekk_sync.streams
          where lane = 1 and due_at is not null and not parked and locked_by is null order by due_at limit 1)) - now())::float8 as s`,
  );
  const s = rows[0]?.s ?? null;
  return s === null ? null : Math.max(0, s);
}

/** A user waiting for its next round only because the backend was down (not parked, not leased). */
const WAITING_FOR_BACKEND = `s.due_at > now() and not s.parked and (s.locked_by is null or s.locked_until < now())
  and s.head_id is not null and ${backendDownCondition('s.head_http_status')}`;

/** Whether any user waits for its next round only because the backend was down. */
export async function anyWaitingForBackend(db: Queryable): Promise<boolean> {
  const { rows } = await db.query<{ any: boolean }>(
    `select exists (select 1 from suekk_sync.streams s where ${WAITING_FOR_BACKEND}) as any`,
  );
  return rows[0]?.any ?? false;
}

/**
 * A probe: one user waiting only for the backend (live before resync, the longest waiting first)
 * made due now, so a claim sends its head event as usual. False when there is none.
 */
export async function probeOne(db: Queryable): Promise<boolean> {
  const { rowCount } = await db.query(
    `with one as (
        select s.user_id from suekk_sync.streams s where ${WAITING_FOR_BACKEND}
         order by s.lane, s.due_at limit 1 for update skip locked
      )
      update suekk_sync.streams s set due_at = now() from one where s.user_id = one.user_id`,
  );
  return (rowCount ?? 0) > 0;
}

/**
 * The backend answers again: every user waiting only because it was down is due now (the due
 * set serves live users first), and every relay hears of it. Returns how many.
 */
export async function wakeWaitingForBackend(db: Queryable): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `with woken as (
        update suekk_sync.streams s set due_at = now() where ${WAITING_FOR_BACKEND} returning 1
      )
      select count(*)::int as n, case when count(*) > 0 then pg_notify('${NOTIFY_CHANNEL}', '') end from woken`,
  );
  return rows[0]?.n ?? 0;
}

/** What this relay sees of the backend, for status: since when it looks down, or null. */
export async function recordBackendState(db: Queryable, relayId: string, downSince: Date | null): Promise<void> {
  await db.query('update suekk_sync.relays set backend_down_since = $2 where id = $1', [relayId, downSince]);
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
