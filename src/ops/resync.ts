/**
 * resync: enqueue users' current state through the outbox, a batch per transaction in primary key
 * order, so a million users never become one giant transaction, memory stays flat, relays start
 * delivering at once and an interrupted run continues from the cursor kept in the database.
 */
import { NOTIFY_CHANNEL } from '../db/schema.ts';
import type { Settings } from '../config.ts';
import { UsageError } from '../errors.ts';
import type { Pool } from '../db/pool.ts';
import { refreshOutboxStatistics } from '../db/statistics.ts';
import { enqueueBatch, previewUsers, type Action, type EnqueueFilter } from '../db/enqueue.ts';
import { sleep } from '../relay/sleep.ts';
import { ensureDelivery, type DeliveryHandle } from './inline-delivery.ts';
import { deliveryPaused } from './settle.ts';
import { installedSource, resolveUserRef, type InstalledSource } from './source.ts';

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
  /**
   * While waiting: delivery is paused (true), at once when it is at the start, or resumed (false).
   * Nothing is delivered meanwhile, so the progress stands still.
   */
  onPausedChange?: (paused: boolean) => void;
  /** At least this long between progress reports (default 250 ms); counting the run may space them further. */
  progressIntervalMs?: number;
  /**
   * When waiting: how many of the run's events may be queued for the relays before enqueueing
   * pauses for them (default 20 batches, at least 20 000).
   */
  maxQueued?: number;
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

/** The run's counts as one snapshot of the database (see countRun). */
type RunCounts = Pick<ResyncProgress, 'enqueued' | 'delivered' | 'failed' | 'waiting' | 'blocked' | 'queued'>;

/**
 * The run's counts, exact, in one statement (one snapshot). "delivered" (delivered or skipped) is
 * the run's settled count, which the relays add to as they record each turn; what is held back
 * (failed, waiting for a next round, or behind one of those) is found from the streams whose head
 * had a round, normally a handful. So a poll costs the held-back users, not the run: a million
 * delivered events cost nothing.
 */
async function countRun(pool: Pool, runId: string): Promise<RunCounts> {
  const { rows } = await pool.query<{ enqueued: string; settled: string; failed: number; waiting: number; blocked: number }>(
    `with held as (
        select s.user_id, s.head_id, s.parked from suekk_sync.streams s where s.head_id is not null
      )
      select r.enqueued::text as enqueued, r.settled::text as settled,
             (select count(*)::int from held h join suekk_sync.events e on e.id = h.head_id and e.user_id = h.user_id
               where e.run_id = $1::bigint and h.parked) as failed,
             (select count(*)::int from held h join suekk_sync.events e on e.id = h.head_id and e.user_id = h.user_id
               where e.run_id = $1::bigint and not h.parked) as waiting,
             (select count(*)::int from held h join suekk_sync.events e on e.user_id = h.user_id and e.id > h.head_id
               where e.run_id = $1::bigint) as blocked
        from suekk_sync.resync_runs r where r.id = $1::bigint`,
    [runId],
  );
  const r = rows[0];
  if (!r) throw new Error(`resync run ${runId} is gone`);
  const enqueued = Number(r.enqueued);
  const delivered = Math.min(Number(r.settled), enqueued);
  const open = enqueued - delivered;
  const failed = Math.min(r.failed, open);
  const waiting = Math.min(r.waiting, open - failed);
  const blocked = Math.min(r.blocked, open - failed - waiting);
  return { enqueued, delivered, failed, waiting, blocked, queued: open - failed - waiting - blocked };
}

interface Run {
  runId: string;
  filter: StoredFilter;
  action: Action | undefined;
  cursor: string | null;
  enqueued: number;
}

/** The most recent run whose enqueueing did not finish: what --resume continues. Reads only. */
async function interruptedRun(pool: Pool): Promise<Run> {
  // resync_runs.id, not the text "id" of the output, or run 9 would count as later than run 10.
  const { rows } = await pool.query<{ id: string; filter: StoredFilter; action: Action | null; cursor: string | null; enqueued: string }>(
    `select id::text, filter, action, cursor, enqueued::text from suekk_sync.resync_runs
      where finished_at is null order by resync_runs.id desc limit 1`,
  );
  const run = rows[0];
  if (!run) throw new UsageError('There is no interrupted resync to resume; start one with --all, --user or --since.');
  return { runId: run.id, filter: run.filter, action: run.action ?? undefined, cursor: run.cursor, enqueued: Number(run.enqueued) };
}

async function createRun(pool: Pool, filter: StoredFilter, action: Action | undefined): Promise<Run> {
  const { rows } = await pool.query<{ id: string }>(
    'insert into suekk_sync.resync_runs (filter, action) values ($1, $2) returning id::text',
    [filter, action ?? null],
  );
  return { runId: rows[0]!.id, filter, action, cursor: null, enqueued: 0 };
}

/**
 * Counting the run costs the database time in proportion to its backlog; polls are spaced at
 * least COUNT_SPACING times the last count's duration apart, so counting never takes more than
 * about 1/COUNT_SPACING of a core, whatever the interval asked for.
 */
const COUNT_SPACING = 20;

export async function resync(pool: Pool, settings: Settings, options: ResyncOptions): Promise<ResyncResult> {
  if (!options.resume && !options.scope) throw new UsageError('Say what to resync: --all, --user <ref> or --since <iso>.');
  const source = await installedSource(pool);
  const resumed = options.resume ? await interruptedRun(pool) : undefined;
  const filter = resumed?.filter ?? (await filterFor(pool, options.scope!));
  const wait = options.wait ?? true;
  // Before the run is recorded: a resync that nothing would deliver leaves nothing to resume.
  const delivery = wait ? await ensureDelivery(pool, settings, { onlyUsers: filter.userIds }) : undefined;
  try {
    const run = resumed ?? (await createRun(pool, filter, options.action));
    await delivery?.start();
    return await runResync(pool, source, run, delivery, options);
  } finally {
    await delivery?.stop();
  }
}

async function runResync(
  pool: Pool,
  source: InstalledSource,
  run: Run,
  delivery: DeliveryHandle | undefined,
  options: ResyncOptions,
): Promise<ResyncResult> {
  const wait = delivery !== undefined;
  let paused = false;
  let pauseCheckedAt = Number.NEGATIVE_INFINITY;
  /** At most once a second: a paused wait polls for nothing else. */
  const watchPause = async () => {
    if (!options.onPausedChange || performance.now() - pauseCheckedAt < 1000) return;
    pauseCheckedAt = performance.now();
    const now = await deliveryPaused(pool);
    if (now !== paused) options.onPausedChange(now);
    paused = now;
  };
  if (wait) await watchPause();
  const batchSize = options.batchSize ?? 1000;
  const interval = options.progressIntervalMs ?? 250;
  const maxQueued = options.maxQueued ?? Math.max(20 * batchSize, 20_000);
  const started = performance.now();
  const total = (await previewUsers(pool, source, toEnqueueFilter(run.filter, null), 0)).count;
  let enqueued = run.enqueued;
  let enqueueDone = false;
  let deliveredAtStart: number | undefined;

  // The last counts read, when, and what reading them cost.
  let counts: RunCounts | undefined;
  let countedAt = Number.NEGATIVE_INFINITY;
  let countMs = 0;
  let counting: Promise<RunCounts> | undefined;
  /** What the run had enqueued at the last count and was no longer queued (delivered, failed, held back). */
  let settledAtCount = 0;
  const count = (): Promise<RunCounts> => {
    counting ??= (async () => {
      const t0 = performance.now();
      try {
        const c = await countRun(pool, run.runId);
        countMs = performance.now() - t0;
        countedAt = performance.now();
        counts = c;
        settledAtCount = c.enqueued - c.queued;
        deliveredAtStart ??= c.delivered;
        return c;
      } finally {
        counting = undefined;
      }
    })();
    return counting;
  };
  /** The earliest a next count may start (it may be asked for, and be free, sooner when waiting on it). */
  const nextCountAt = (minInterval: number) => countedAt + Math.max(minInterval, COUNT_SPACING * countMs);

  const progress = (): ResyncProgress => {
    const c = counts ?? { enqueued, delivered: 0, failed: 0, waiting: 0, blocked: 0, queued: enqueued };
    const elapsedMs = performance.now() - started;
    return {
      runId: run.runId,
      total,
      ...c,
      // Batches committed since the last count: known here exactly, still queued.
      enqueued: Math.max(enqueued, c.enqueued),
      queued: c.queued + Math.max(0, enqueued - c.enqueued),
      rate: elapsedMs > 0 && deliveredAtStart !== undefined ? ((c.delivered - deliveredAtStart) * 1000) / elapsedMs : 0,
      elapsedMs,
      enqueueDone,
    };
  };

  // While enqueueing, a count runs beside the batches (never holding them up), at most one at a
  // time; between counts the reports still show the enqueued figure move.
  let lastReport = Number.NEGATIVE_INFINITY;
  let asyncError: unknown;
  const report = () => {
    lastReport = performance.now();
    options.onProgress?.(progress());
  };
  const reportWhileEnqueueing = () => {
    if (!options.onProgress) return;
    const now = performance.now();
    if (counting === undefined && now >= nextCountAt(interval)) {
      count().then(report).catch((err: unknown) => (asyncError ??= err));
    }
    if (now - lastReport >= interval) report();
  };

  /**
   * When waiting, enqueueing keeps at most maxQueued of the run's events queued ahead of the
   * relays, then waits for half of them to go: enqueueing further ahead would not deliver anything
   * sooner, and it keeps the outbox, and each count, the size of the queue rather than of the run.
   */
  const holdBack = async () => {
    if (enqueued - settledAtCount <= maxQueued) return;
    let previous: { at: number; settled: number } | undefined;
    while (!options.signal?.aborted) {
      // Counting is spaced by its cost: until the next count, the estimate stands and we wait.
      const early = nextCountAt(0) - performance.now();
      if (early > 0 && !(await sleep(early, options.signal))) return;
      if (counting) await counting.catch(() => undefined);
      const c = await count();
      report();
      if (c.queued <= maxQueued / 2) return;
      await watchPause();
      // Sleep about as long as the relays need to bring the queue down to half, by their pace.
      const now = performance.now();
      const settled = c.enqueued - c.queued;
      const pace = previous && settled > previous.settled ? (settled - previous.settled) / (now - previous.at) : undefined;
      previous = { at: now, settled };
      const forecast = pace === undefined ? interval : (c.queued - maxQueued / 2) / pace;
      if (!(await sleep(Math.max(Math.min(forecast, 1000), 50), options.signal))) return;
    }
  };

  let analyzedAt = 5_000;
  try {
    let cursor = run.cursor;
    while (!options.signal?.aborted) {
      const batch = await enqueueBatch(pool, source, {
        filter: toEnqueueFilter(run.filter, cursor),
        limit: batchSize,
        action: (run.action as Action | undefined) ?? null,
        eventSource: 'resync',
        runId: run.runId,
        returnIds: false,
        recordRun: true,
        notifyChannel: NOTIFY_CHANNEL,
      });
      enqueued += batch.enqueued;
      cursor = batch.lastKey ?? cursor;
      // The relays' plans follow the outbox's statistics: refreshed as the run doubles the outbox.
      if (enqueued >= analyzedAt * 2) {
        analyzedAt = enqueued;
        await refreshOutboxStatistics(pool);
      }
      if (asyncError !== undefined) throw asyncError;
      if (batch.enqueued < batchSize) {
        await refreshOutboxStatistics(pool);
        enqueueDone = true;
        break;
      }
      reportWhileEnqueueing();
      if (wait) await holdBack();
    }
    if (counting) await counting.catch(() => undefined);
    const interrupted = !enqueueDone;
    if (wait && !interrupted) {
      for (;;) {
        const c = await count();
        report();
        if (c.queued === 0 || options.signal?.aborted) break;
        await watchPause();
        await sleep(Math.max(0, nextCountAt(Math.min(interval, 250)) - performance.now()), options.signal);
      }
    } else {
      await count();
    }
    const final = progress();
    report();
    return { ...final, interrupted: interrupted || (options.signal?.aborted ?? false), delivery: delivery?.mode ?? 'none' };
  } finally {
    if (counting) await counting.catch(() => undefined);
  }
}
