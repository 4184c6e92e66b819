/**
 * Enqueueing current user state through the outbox (resync and push): one statement per batch,
 * through the same payload function the trigger uses, so the three can never disagree.
 *
 * The rows are locked `FOR NO KEY UPDATE`: a writer's concurrent change either committed before
 * (and is in the snapshot) or waits for this batch and is captured after it, so a resync can never
 * deliver a state older than one already captured for that user. The lock also makes two enqueuers
 * of one user (a resync and a push) take turns, as writers of the row do: a user's events commit in
 * id order, which the relay's per-user cursor relies on.
 */
import type { Queryable } from './pool.ts';
import type { Action } from './schema.ts';
import { quoteIdent } from './sql.ts';
import type { InstalledSource } from './source.ts';

export interface EnqueueFilter {
  /** Page after this primary key (as text), in primary key order. */
  after?: string | null;
  /** Only these primary keys (as text). */
  userIds?: string[];
  /** Only rows whose updated-at column is at or after this instant. */
  since?: Date;
}

export interface EnqueueBatchResult {
  enqueued: number;
  /** The last primary key of the batch (the resume cursor), null when the batch was empty. */
  lastKey: string | null;
  /** The events' ids in capture order (empty when `returnIds` is false). */
  eventIds: string[];
}

/** The primary key's type, looked up once per InstalledSource (a resync asks for every batch). */
const keyTypes = new WeakMap<InstalledSource, Promise<string>>();

function primaryKeyType(db: Queryable, source: InstalledSource): Promise<string> {
  let type = keyTypes.get(source);
  if (!type) {
    type = db
      .query<{ type: string }>(
        `select format_type(atttypid, atttypmod) as type from pg_attribute
          where attrelid = $1::regclass and attname = $2`,
        [source.table, source.primaryKey],
      )
      .then((r) => r.rows[0]?.type ?? 'text');
    keyTypes.set(source, type);
    type.catch(() => keyTypes.delete(source));
  }
  return type;
}

/** Conditions of a filter on `u`, with their values appended to `values`. */
function filterConditions(source: InstalledSource, pkType: string, filter: EnqueueFilter, values: unknown[]): string[] {
  const pk = quoteIdent(source.primaryKey);
  const conditions: string[] = [];
  if (filter.after != null) {
    values.push(filter.after);
    conditions.push(`u.${pk} > $${values.length}::text::${pkType}`);
  }
  if (filter.userIds) {
    // Compared as the key's own type, so the primary key index finds them (not a scan of users).
    values.push(filter.userIds);
    conditions.push(`u.${pk} = any($${values.length}::text[]::${pkType}[])`);
  }
  if (filter.since) {
    values.push(filter.since);
    conditions.push(`suekk_sync.user_updated_at(u) >= $${values.length}`);
  }
  return conditions;
}

/**
 * Enqueues one batch of users in primary key order. `action` null means the default:
 * `created` for live users (what the backend upserts on), `deleted` for soft-deleted ones.
 *
 * One statement: the rows read FOR NO KEY UPDATE (a writer of the same user waits, so its event
 * follows this one), their events, and (for a resync) the run's cursor and count and the relays'
 * wake-up, so it is atomic on its own (no BEGIN/COMMIT round trips) and the row locks last only as
 * long as the statement.
 */
export async function enqueueBatch(
  db: Queryable,
  source: InstalledSource,
  options: {
    filter: EnqueueFilter;
    limit: number;
    action: Action | null;
    /** resync events wait behind live changes; a push goes with them. */
    eventSource: 'resync' | 'push';
    runId: string | null;
    /** Return the events' ids (default true); a resync only needs the count. */
    returnIds?: boolean;
    /** Advance the run's cursor and enqueued count (and finish it on a short batch) in the same statement. */
    recordRun?: boolean;
    /** pg_notify this channel when the batch enqueued anything. */
    notifyChannel?: string;
  },
): Promise<EnqueueBatchResult> {
  const pk = quoteIdent(source.primaryKey);
  const pkType = await primaryKeyType(db, source);
  const values: unknown[] = [options.limit, options.action, options.eventSource, options.runId];
  const conditions = filterConditions(source, pkType, options.filter, values);
  // The transaction takes its id before the first event id (a gating condition, evaluated before
  // any row reaches the insert): the relays' tickers count on that to tell an event id whose
  // transaction is still open from one that never committed (see suekk_sync.tick).
  const where = `where ${['(select pg_current_xact_id()) is not null', ...conditions].join(' and ')}`;
  let run = '';
  if (options.recordRun) {
    if (options.runId === null) throw new Error('recordRun needs a runId');
    run = `, run as (
        update suekk_sync.resync_runs
           set cursor = coalesce((select k from last), cursor),
               enqueued = enqueued + (select count(*) from events),
               finished_at = case when (select count(*) from events) < $1 then now() end
         where id = $4::bigint
      )`;
  }
  let notify = 'null';
  if (options.notifyChannel !== undefined) {
    values.push(options.notifyChannel);
    notify = `case when exists (select from events) then pg_notify($${values.length}, '') end`;
  }
  // The rows go straight from the locked scan into the insert: carrying each whole row through a
  // CTE first cost about a fifth more. Event ids follow the scan, so the last event is the last key
  // (user_key is the key as text), which is the cursor.
  const { rows } = await db.query<{ n: number; last_key: string | null; ids: string[] | null }>({
    text: `with events as (
        insert into suekk_sync.events (user_id, action, body, source, run_id, application_name)
        select u.k, u.act, u.p || ',"action":"' || u.act || '"}', $3, $4::bigint, current_setting('application_name', true)
          from (select suekk_sync.user_key(u) as k,
                       coalesce($2::text, case when suekk_sync.user_is_live(u) then 'created' else 'deleted' end) as act,
                       suekk_sync.user_payload(u) as p
                  from ${source.table} u ${where}
                 order by u.${pk} limit $1
                 for no key update of u) u
        returning user_id, id
      ), last as (
        select e.user_id as k from events e order by e.id desc limit 1
      )${run}
      select (select count(*) from events)::int as n,
             (select k from last) as last_key,
             ${options.returnIds === false ? 'null::text[]' : '(select array_agg(e.id::text order by e.id) from events e)'} as ids,
             ${notify} as notified`,
    values,
  });
  const row = rows[0]!;
  return { enqueued: row.n, lastKey: row.last_key, eventIds: row.ids ?? [] };
}

/** How many users a filter selects, and the first few (for --dry-run). */
export async function previewUsers(
  db: Queryable,
  source: InstalledSource,
  filter: EnqueueFilter,
  sample = 5,
): Promise<{ count: number; first: { userId: string; username: string }[] }> {
  const pk = quoteIdent(source.primaryKey);
  const values: unknown[] = [];
  const conditions = filterConditions(source, await primaryKeyType(db, source), { ...filter, after: null }, values);
  const where = conditions.length > 0 ? `where ${conditions.join(' and ')}` : '';
  const count = await db.query<{ n: string }>(`select count(*) as n from ${source.table} u ${where}`, values);
  if (sample <= 0) return { count: Number(count.rows[0]!.n), first: [] };
  values.push(sample);
  const first = await db.query<{ userId: string; username: string }>(
    `select u.${pk}::text as "userId", coalesce((suekk_sync.user_payload(u) || '}')::json->>'username', '') as username
       from ${source.table} u ${where} order by u.${pk} limit $${values.length}`,
    values,
  );
  return { count: Number(count.rows[0]!.n), first: first.rows };
}
