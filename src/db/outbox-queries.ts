/**
 * The operator side of the outbox: what is pending, failed or waiting (derived from the streams'
 * cursors and the delivery log, since events are never updated), and the few writes operators make
 * (making users due, skipping a failed event). The relay's hot path is in relay-queries.ts.
 */
import type { Queryable } from './pool.ts';
import type { Action, EventStatus } from './schema.ts';

export interface QueueGauges {
  /** Pending events, including the ones being sent right now. */
  backlog: number;
  /** Age of the oldest pending event since capture; null when nothing is pending. */
  oldestPendingSeconds: number | null;
  /**
   * The same for live changes only (captured or pushed): a resync's backlog takes as long as the
   * table is large, and a parked user's events wait on the failure status reports, so neither
   * counts towards a lag.
   */
  oldestLiveSeconds: number | null;
  failed: number;
  parkedUsers: number;
  paused: boolean;
}

/**
 * The numbers every view shares (status, metrics, the tail-log live view, pause). Pending events are
 * those past their stream's cursor, and those no ticker has read yet of users without a stream;
 * each stream with work is counted through its own index range, so a parked user's old event does
 * not make the count read everything captured since.
 */
export async function queueGauges(db: Queryable): Promise<QueueGauges> {
  const { rows } = await db.query<QueueGauges>(
    `with h as (select suekk_sync.ticked_horizon() as horizon),
          open as materialized (
            select s.user_id, s.delivered_through, s.parked, s.head_id from suekk_sync.streams s
             where s.last_event_id > s.delivered_through or s.locked_by is not null or s.due_at is not null or s.parked
          ),
          streamed as (
            select c.n, c.oldest, c.oldest_live from open o
             cross join lateral (select count(*) as n, min(e.created_at) as oldest,
                                        min(e.created_at) filter (where e.source <> 'resync' and not o.parked) as oldest_live
                                   from suekk_sync.events e
                                  where e.user_id = o.user_id and e.id > o.delivered_through
                                    and not (o.parked and e.id = o.head_id)) c
          ),
          unread as (
            select e.created_at, e.source from suekk_sync.events e
             where e.id >= (select horizon from h)
               and not exists (select 1 from open o where o.user_id = e.user_id)
               and not exists (select 1 from suekk_sync.streams s where s.user_id = e.user_id and e.id <= s.delivered_through)
          )
     select ((select coalesce(sum(n), 0) from streamed) + (select count(*) from unread))::int as backlog,
            extract(epoch from now() - least((select min(oldest) from streamed), (select min(created_at) from unread)))::float8
              as "oldestPendingSeconds",
            extract(epoch from now() - least((select min(oldest_live) from streamed),
                                             (select min(created_at) from unread where source <> 'resync')))::float8
              as "oldestLiveSeconds",
            (select count(*)::int from open where parked) as failed,
            (select count(*)::int from open where parked) as "parkedUsers",
            coalesce((select paused from suekk_sync.state), false) as paused`,
  );
  return rows[0]!;
}

/** Events delivered in the last `seconds` (by the delivery log's time). */
export async function deliveredWithin(db: Queryable, seconds: number): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `select count(*)::int as n from suekk_sync.deliveries
      where outcome = 'delivered' and at > now() - make_interval(secs => $1)`,
    [seconds],
  );
  return rows[0]!.n;
}

export interface EventState {
  id: string;
  webhookId: string;
  userId: string;
  username: string;
  action: Action;
  status: EventStatus;
  attempts: number;
  rounds: number;
  httpStatus: number | null;
  error: string | null;
  response: string | null;
  durationMs: number | null;
  nextAttemptAt: Date;
  runId: string | null;
  /** Superseded (coalescing): the webhook-id of the call that carried its state. */
  supersededBy: string | null;
}

// ORDER BY prefers the output column "id", which is text here ('10' before '9'); event_log.id is not.
const STATE_COLUMNS = `id::text, 'evt_' || webhook_id as "webhookId", user_id as "userId",
  coalesce(payload->>'username', '') as username, action, status, attempts, rounds,
  last_status as "httpStatus", last_error as error, last_response as response,
  duration_ms as "durationMs", next_attempt_at as "nextAttemptAt", run_id::text as "runId",
  'evt_' || superseded_by::text as "supersededBy"`;

export async function eventStates(db: Queryable, ids: string[]): Promise<EventState[]> {
  const { rows } = await db.query<EventState>(
    `select ${STATE_COLUMNS} from suekk_sync.event_log where id = any($1::bigint[]) order by event_log.id`,
    [ids],
  );
  return rows;
}

/** Every undelivered (pending or failed) event of these users, in capture order. */
export async function openEventsOf(db: Queryable, userIds: string[]): Promise<EventState[]> {
  const { rows } = await db.query<EventState>(
    `select ${STATE_COLUMNS} from suekk_sync.event_log
      where user_id = any($1::text[]) and status in ('pending', 'failed') order by event_log.id`,
    [userIds],
  );
  return rows;
}

/**
 * Events that hold their user back: failed ones (their user is parked) and those waiting for a
 * further round after one that did not deliver. They are always a stream's head.
 */
export async function heldBackEvents(db: Queryable): Promise<EventState[]> {
  const { rows } = await db.query<EventState>(
    `select ${STATE_COLUMNS} from suekk_sync.event_log
      where id in (select head_id from suekk_sync.streams where head_id is not null)
        and status in ('pending', 'failed') order by event_log.id`,
  );
  return rows;
}

/**
 * Events by id or webhook id. A failed or waiting event is its stream's head, found at once; only
 * an id that is no head is looked for in the whole outbox (webhook ids are not indexed: nothing
 * on the delivery path needs them).
 */
export async function findEvents(db: Queryable, ids: string[], webhookIds: string[]): Promise<EventState[]> {
  const heads = await db.query<EventState>(
    `select ${STATE_COLUMNS} from suekk_sync.event_log
      where id in (select head_id from suekk_sync.streams where head_id is not null)
        and (id = any($1::bigint[]) or webhook_id = any($2::uuid[])) order by event_log.id`,
    [ids, webhookIds],
  );
  const found = new Set(heads.rows.flatMap((e) => [e.id, e.webhookId.slice(4)]));
  const missingIds = ids.filter((id) => !found.has(id));
  const missingWebhooks = webhookIds.filter((id) => !found.has(id.toLowerCase()));
  if (missingIds.length === 0 && missingWebhooks.length === 0) return heads.rows;
  const rest = await db.query<EventState>(
    `select ${STATE_COLUMNS} from suekk_sync.event_log
      where id = any($1::bigint[]) or webhook_id = any($2::uuid[]) order by event_log.id`,
    [missingIds, missingWebhooks],
  );
  const seen = new Set(heads.rows.map((e) => e.id));
  return [...heads.rows, ...rest.rows.filter((e) => !seen.has(e.id))].sort((a, b) =>
    BigInt(a.id) < BigInt(b.id) ? -1 : 1,
  );
}

/**
 * Makes these users due now (the due set), un-parking them: their held-back head goes first, with
 * its webhook-id, then the rest in order. A user being delivered right now is left to its relay.
 */
export async function makeUsersDue(db: Queryable, userIds: string[], options: { unpark: boolean }): Promise<void> {
  await db.query(
    `update suekk_sync.streams set due_at = now(), parked = false, lane = 0
      where user_id = any($1::text[]) and (locked_by is null or locked_until < now())
        and (due_at is not null or ($2 and parked))`,
    [userIds, options.unpark],
  );
}

/**
 * Skips failed events: each is settled as `skipped` in the delivery log (with what its rounds came
 * to), its stream's cursor moves past it and the user is un-parked, due at once when more waits.
 */
export async function skipFailed(db: Queryable, eventIds: string[]): Promise<string[]> {
  const { rows } = await db.query<{ user_id: string }>(
    `with f as (
        select s.user_id, s.head_id, s.head_attempts, s.head_rounds, s.head_http_status, s.head_error, e.run_id
          from suekk_sync.streams s join suekk_sync.events e on e.id = s.head_id and e.user_id = s.user_id
         where s.parked and s.head_id = any($1::bigint[])
         order by s.user_id for update of s
      ), logged as (
        insert into suekk_sync.deliveries (event_id, outcome, attempts, rounds, http_status, error)
        select head_id, 'skipped', coalesce(head_attempts, 0), coalesce(head_rounds, 0), head_http_status, head_error from f
      ), runs as (
        update suekk_sync.resync_runs r set settled = r.settled + c.n
          from (select run_id, count(*) as n from f where run_id is not null group by run_id) c where r.id = c.run_id
      )
      update suekk_sync.streams s
         set delivered_through = f.head_id, parked = false,
             due_at = case when s.last_event_id > f.head_id then now() end,
             head_id = null, head_attempts = null, head_rounds = null, head_http_status = null,
             head_error = null, head_response = null, head_duration_ms = null
        from f where s.user_id = f.user_id
      returning s.user_id`,
    [eventIds],
  );
  return rows.map((r) => r.user_id);
}
