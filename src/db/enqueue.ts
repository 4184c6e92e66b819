/**
 * Enqueueing current user state through the outbox (resync and push): one statement per batch,
 * through the same payload function the trigger uses, so the three can never disagree.
 *
 * The rows are read `FOR SHARE`: a writer's concurrent change either committed before (and is in
 * the snapshot) or waits for this batch and is captured after it. A resync can therefore never
 * deliver a state older than one already captured for that user.
 */
import type { Pool, PoolClient } from './pool.ts';
import { quoteIdent } from '../capture/source-table.ts';
import type { InstalledSource } from '../ops/source.ts';

type Queryable = Pick<Pool | PoolClient, 'query'>;

export type Action = 'created' | 'updated' | 'deleted';

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
  eventIds: string[];
}

async function primaryKeyType(db: Queryable, source: InstalledSource): Promise<string> {
  const { rows } = await db.query<{ type: string }>(
    `select format_type(atttypid, atttypmod) as type from pg_attribute
      where attrelid = $1::regclass and attname = $2`,
    [source.table, source.primaryKey],
  );
  return rows[0]?.type ?? 'text';
}

/**
 * Enqueues one batch of users in primary key order. `action` null means DESIGN's default:
 * `created` for live users (what the backend upserts on), `deleted` for soft-deleted ones.
 */
export async function enqueueBatch(
  client: PoolClient,
  source: InstalledSource,
  options: {
    filter: EnqueueFilter;
    limit: number;
    action: Action | null;
    eventSource: 'resync' | 'push';
    runId: string | null;
    /** 0 puts the users ahead of a running resync (push); 1 behind live changes (resync). */
    priority: 0 | 1;
  },
): Promise<EnqueueBatchResult> {
  const pk = quoteIdent(source.primaryKey);
  const pkType = await primaryKeyType(client, source);
  const conditions: string[] = [];
  const values: unknown[] = [options.limit, options.action, options.eventSource, options.runId, options.priority];
  if (options.filter.after != null) {
    values.push(options.filter.after);
    conditions.push(`u.${pk} > $${values.length}::text::${pkType}`);
  }
  if (options.filter.userIds) {
    values.push(options.filter.userIds);
    conditions.push(`u.${pk}::text = any($${values.length}::text[])`);
  }
  if (options.filter.since) {
    values.push(options.filter.since);
    conditions.push(`suekk_sync.user_updated_at(u) >= $${values.length}`);
  }
  const where = conditions.length > 0 ? `where ${conditions.join(' and ')}` : '';
  const { rows } = await client.query<{ user_id: string; id: string; last_key: string }>({
    text: `with batch as (
        select u as r, u.${pk} as k from ${source.table} u ${where}
         order by u.${pk} limit $1
         for share of u
      ), events as (
        insert into suekk_sync.events (user_id, action, payload, source, run_id, application_name)
        select suekk_sync.user_key(b.r),
               coalesce($2::text, case when suekk_sync.user_is_live(b.r) then 'created' else 'deleted' end),
               suekk_sync.user_payload(b.r), $3, $4::bigint, current_setting('application_name', true)
          from batch b order by b.k
        returning user_id, id
      ), streams as (
        insert into suekk_sync.streams as s (user_id, next_attempt_at, priority)
        select distinct user_id, clock_timestamp(), $5::smallint from events
        on conflict (user_id) do update
          set gen = s.gen + 1,
              next_attempt_at = coalesce(s.next_attempt_at, excluded.next_attempt_at),
              priority = case when s.next_attempt_at is null then excluded.priority
                              else least(s.priority, excluded.priority) end
      )
      select e.user_id, e.id::text, (select b.k::text from batch b order by b.k desc limit 1) as last_key
        from events e order by e.id`,
    values,
  });
  return {
    enqueued: rows.length,
    lastKey: rows[0]?.last_key ?? null,
    eventIds: rows.map((r) => r.id),
  };
}

/** How many users a filter selects, and the first few (for --dry-run). */
export async function previewUsers(
  db: Queryable,
  source: InstalledSource,
  filter: EnqueueFilter,
  sample = 5,
): Promise<{ count: number; first: { userId: string; username: string }[] }> {
  const pk = quoteIdent(source.primaryKey);
  const conditions: string[] = [];
  const values: unknown[] = [];
  if (filter.userIds) {
    values.push(filter.userIds);
    conditions.push(`u.${pk}::text = any($${values.length}::text[])`);
  }
  if (filter.since) {
    values.push(filter.since);
    conditions.push(`suekk_sync.user_updated_at(u) >= $${values.length}`);
  }
  const where = conditions.length > 0 ? `where ${conditions.join(' and ')}` : '';
  const count = await db.query<{ n: string }>(`select count(*) as n from ${source.table} u ${where}`, values);
  values.push(sample);
  const first = await db.query<{ userId: string; username: string }>(
    `select u.${pk}::text as "userId", coalesce(suekk_sync.user_payload(u)->>'username', '') as username
       from ${source.table} u ${where} order by u.${pk} limit $${values.length}`,
    values,
  );
  return { count: Number(count.rows[0]!.n), first: first.rows };
}
