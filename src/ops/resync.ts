/**
 * resync: enqueue users' current state through the outbox, a batch per transaction in primary key
 * order, so a million users never become one giant transaction, memory stays flat, relays start
 * delivering at once and an interrupted run continues from the cursor kept in the database.
 */
import { NOTIFY_CHANNEL } from '../capture/generate.ts';
import type { Settings } from '../config.ts';
import { UsageError } from '../errors.ts';
import { withTransaction, type Pool } from '../db/pool.ts';
import { enqueueBatch, previewUsers, type Action, type EnqueueFilter } from '../db/enqueue.ts';
import { sleep } from '../relay/sleep.ts';
import { ensureDelivery } from './inline-delivery.ts';
import { installedSource, resolveUserRef } from './source.ts';

export type ResyncScope = { all: true } | { userRefs: string[] } | { since: Date };

interface StoredFilter {
  all?: true;
  userIds?: string[];
  since?: string;
}

export interface ResyncProgress {
  runId: string;
  /** Users the run covers (counted at its start). */
  total: number;
  enqueued: number;
  delivered: number;
  failed: number;
  /** Had a round that did not deliver; waits for its next one. */
  waiting: number;
  /** Behind an earlier event of the same user that is failed or waiting. */
  blocked: number;
  queued: number;
  /** Deliveries per second since the run started in this process. */
  rate: number;
  elapsedMs: number;
  enqueueDone: boolean;
}

export interface ResyncOptions {
  scope?: ResyncScope;
  action?: Action;
  batchSize?: number;
  wait?: boolean;
  resume?: boolean;
  /** Aborting stops enqueueing after the current batch, and stops waiting. */
  signal?: AbortSignal;
  onProgress?: (progress: ResyncProgress) => void;
  progressIntervalMs?: number;
}

export interface ResyncResult extends ResyncProgress {
  interrupted: boolean;
  delivery: 'relay' | 'inline' | 'none';
}

export interface DryRunResult {
  count: number;
  first: { userId: string; username: string }[];
}

async function filterFor(pool: Pool, scope: ResyncScope): Promise<StoredFilter> {
  if ('all' in scope) return { all: true };
  if ('since' in scope) {
    const source = await installedSource(pool);
    if (source.mapping.updatedAtColumn === null) {
      throw new UsageError('--since needs source.updatedAtColumn, and the installed mapping has none; use --all or --user.');
    }
    return { since: scope.since.toISOString() };
  }
  const source = await installedSource(pool);
  const userIds: string[] = [];
  for (const ref of scope.userRefs) userIds.push((await resolveUserRef(pool, source, ref)).userId);
  return { userIds: [...new Set(userIds)] };
}

function toEnqueueFilter(stored: StoredFilter, after: string | null): EnqueueFilter {
  return {
    after,
    userIds: stored.userIds,
    since: stored.since ? new Date(stored.since) : undefined,
  };
}

export async function resyncDryRun(pool: Pool, scope: ResyncScope): Promise<DryRunResult> {
  const source = await installedSource(pool);
  return previewUsers(pool, source, toEnqueueFilter(await filterFor(pool, scope), null));
}

async function progressOf(pool: Pool, runId: string, countBlocked: boolean): Promise<Omit<ResyncProgress, 'total' | 'rate' | 'elapsedMs' | 'enqueueDone' | 'runId'>> {
  const { rows } = await pool.query<{
    enqueued: number;
    delivered: number;
    failed: number;
    waiting: number;
    pending_fresh: number;
  }>(
    `select count(*)::int as enqueued,
            count(*) filter (where status in ('delivered', 'skipped'))::int as delivered,
            count(*) filter (where status = 'failed')::int as failed,
            count(*) filter (where status = 'pending' and rounds > 0)::int as waiting,
            count(*) filter (where status = 'pending' and rounds = 0)::int as pending_fresh
       from suekk_sync.events where run_id = $1`,
    [runId],
  );
  const r = rows[0]!;
  let blocked = 0;
  // Only worth asking once enqueueing is over and the queue is short: which of the rest sit
  // behind a held-back event. Asked after every batch, it throttled enqueueing itself.
  if (countBlocked && r.pending_fresh > 0 && r.pending_fresh <= 10_000) {
    const { rows: b } = await pool.query<{ n: number }>(
      `select count(*)::int as n from suekk_sync.events e
        where e.run_id = $1 and e.status = 'pending' and e.rounds = 0
          and exists (select 1 from suekk_sync.events p
                       where p.user_id = e.user_id and p.id < e.id
                         and (p.status = 'failed' or (p.status = 'pending' and p.rounds > 0)))`,
      [runId],
    );
    blocked = b[0]!.n;
  }
  return {
    enqueued: r.enqueued,
    delivered: r.delivered,
    failed: r.failed,
    waiting: r.waiting,
    blocked,
    queued: r.pending_fresh - blocked,
  };
}

async function startRun(pool: Pool, filter: StoredFilter, action: Action | undefined, resume: boolean) {
  if (resume) {
    // resync_runs.id, not the text "id" of the output, or run 9 would count as later than run 10.
    const { rows } = await pool.query<{ id: string; filter: StoredFilter; action: Action | null; cursor: string | null }>(
      `select id::text, filter, action, cursor from suekk_sync.resync_runs
        where finished_at is null order by resync_runs.id desc limit 1`,
    );
    const run = rows[0];
    if (!run) throw new UsageError('There is no interrupted resync to resume; start one with --all, --user or --since.');
    return { runId: run.id, filter: run.filter, action: run.action ?? undefined, cursor: run.cursor };
  }
  const { rows } = await pool.query<{ id: string }>(
    'insert into suekk_sync.resync_runs (filter, action) values ($1, $2) returning id::text',
    [filter, action ?? null],
  );
  return { runId: rows[0]!.id, filter, action, cursor: null as string | null };
}

export async function resync(pool: Pool, settings: Settings, options: ResyncOptions): Promise<ResyncResult> {
  if (!options.resume && !options.scope) throw new UsageError('Say what to resync: --all, --user <ref> or --since <iso>.');
  const source = await installedSource(pool);
  const filter = options.resume ? {} : await filterFor(pool, options.scope!);
  const run = await startRun(pool, filter, options.action, options.resume ?? false);
  const wait = options.wait ?? true;
  const delivery = wait ? await ensureDelivery(pool, settings) : undefined;
  const batchSize = options.batchSize ?? 1000;
  const started = performance.now();
  const total = (await previewUsers(pool, source, toEnqueueFilter(run.filter, null), 0)).count;
  let enqueueDone = false;
  let interrupted = false;
  let deliveredAtStart: number | undefined;

  const snapshot = async (): Promise<ResyncProgress> => {
    const p = await progressOf(pool, run.runId, enqueueDone);
    deliveredAtStart ??= p.delivered;
    const elapsedMs = performance.now() - started;
    return {
      runId: run.runId,
      total,
      ...p,
      rate: elapsedMs > 0 ? ((p.delivered - deliveredAtStart) * 1000) / elapsedMs : 0,
      elapsedMs,
      enqueueDone,
    };
  };

  let lastReport = 0;
  const report = async (force = false) => {
    if (!options.onProgress) return;
    const now = performance.now();
    if (!force && now - lastReport < (options.progressIntervalMs ?? 250)) return;
    lastReport = now;
    options.onProgress(await snapshot());
  };

  try {
    let cursor = run.cursor;
    while (!options.signal?.aborted) {
      const batch = await withTransaction(pool, async (client) => {
        const result = await enqueueBatch(client, source, {
          filter: toEnqueueFilter(run.filter, cursor),
          limit: batchSize,
          action: (run.action as Action | undefined) ?? null,
          eventSource: 'resync',
          runId: run.runId,
          priority: 1,
        });
        await client.query(
          `update suekk_sync.resync_runs set cursor = coalesce($2, cursor), enqueued = enqueued + $3,
                  finished_at = case when $3 < $4 then now() end
            where id = $1`,
          [run.runId, result.lastKey, result.enqueued, batchSize],
        );
        if (result.enqueued > 0) await client.query('select pg_notify($1, $2)', [NOTIFY_CHANNEL, '']);
        return result;
      });
      cursor = batch.lastKey ?? cursor;
      await report();
      if (batch.enqueued < batchSize) {
        enqueueDone = true;
        break;
      }
    }
    interrupted = !enqueueDone;
    if (wait && !interrupted) {
      for (;;) {
        const p = await snapshot();
        options.onProgress?.(p);
        if (p.queued === 0 || options.signal?.aborted) break;
        await sleep(options.progressIntervalMs ?? 250, options.signal);
      }
    }
    const final = await snapshot();
    await report(true);
    return { ...final, interrupted: interrupted || (options.signal?.aborted ?? false), delivery: delivery?.mode ?? 'none' };
  } finally {
    await delivery?.stop();
  }
}
