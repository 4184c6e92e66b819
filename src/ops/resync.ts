/**
 * resync: enqueue users' current state through the outbox, a batch per transaction in primary key
 * order, so a million users never become one giant transaction, memory stays flat, relays start
 * delivering at once and an interrupted run continues from the cursor kept in the database.
 * It owns the run's record (resync_runs) and, when the command waits, keeping enqueueing to the
 * relays' pace and counting the run until it settles.
 */
import { NOTIFY_CHANNEL } from '../db/schema.ts';
import type { Settings } from '../config.ts';
import { errorMessage, UsageError } from '../errors.ts';
import type { Pool } from '../db/pool.ts';
import { refreshOutboxStatistics } from '../db/statistics.ts';
import { enqueueBatch, previewUsers, type EnqueueFilter } from '../db/enqueue.ts';
import type { Action } from '../db/schema.ts';
import { sleep } from '../sleep.ts';
import { ensureDelivery, type DeliveryHandle } from './inline-delivery.ts';
import { deliveryPaused } from './settle.ts';
import { installedSource, resolveUserRef, type InstalledSource } from '../db/source.ts';

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

/** Users per transaction: a batch is one statement, and commits often enough that writers never wait long. */
export const DEFAULT_RESYNC_BATCH_SIZE = 1000;

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
      throw new UsageError(
        '--since needs source.updatedAtColumn, and the installed mapping has none; use --all or --user.',
      );
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
  const { rows } = await pool.query<{
    enqueued: string;
    settled: string;
    failed: number;
    waiting: number;
    blocked: number;
  }>(
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

/** A run's row in resync_runs: what it enqueues, and how far its enqueueing got. */
interface RunRecord {
  runId: string;
  filter: StoredFilter;
  action: Action | undefined;
  cursor: string | null;
  enqueued: number;
}

/** The most recent run whose enqueueing did not finish: what --resume continues. Reads only. */
async function interruptedRun(pool: Pool): Promise<RunRecord> {
  // resync_runs.id, not the text "id" of the output, or run 9 would count as later than run 10.
  const { rows } = await pool.query<{
    id: string;
    filter: StoredFilter;
    action: Action | null;
    cursor: string | null;
    enqueued: string;
  }>(
    `select id::text, filter, action, cursor, enqueued::text from suekk_sync.resync_runs
      where finished_at is null order by resync_runs.id desc limit 1`,
  );
  const run = rows[0];
  if (!run) throw new UsageError('There is no interrupted resync to resume; start one with --all, --user or --since.');
  return {
    runId: run.id,
    filter: run.filter,
    action: run.action ?? undefined,
    cursor: run.cursor,
    enqueued: Number(run.enqueued),
  };
}

async function createRun(pool: Pool, filter: StoredFilter, action: Action | undefined): Promise<RunRecord> {
  const { rows } = await pool.query<{ id: string }>(
    'insert into suekk_sync.resync_runs (filter, action) values ($1, $2) returning id::text',
    [filter, action ?? null],
  );
  return { runId: rows[0]!.id, filter, action, cursor: null, enqueued: 0 };
}

export async function resync(pool: Pool, settings: Settings, options: ResyncOptions): Promise<ResyncResult> {
  if (!options.resume && !options.scope)
    throw new UsageError('Say what to resync: --all, --user <ref> or --since <iso>.');
  const source = await installedSource(pool);
  const resumed = options.resume ? await interruptedRun(pool) : undefined;
  const filter = resumed?.filter ?? (await filterFor(pool, options.scope!));
  const wait = options.wait ?? true;
  // Before the run is recorded: a resync that nothing would deliver leaves nothing to resume.
  const delivery = wait ? await ensureDelivery(pool, settings, { onlyUsers: filter.userIds }) : undefined;
  try {
    const record = resumed ?? (await createRun(pool, filter, options.action));
    await delivery?.start();
    return await new ResyncRun(pool, source, record, delivery, options).execute();
  } finally {
    await delivery?.stop();
  }
}

/**
 * Counting the run costs the database time in proportion to its backlog; polls are spaced at
 * least COUNT_SPACING times the last count's duration apart, so counting never takes more than
 * about 1/COUNT_SPACING of a core, whatever the interval asked for.
 */
const COUNT_SPACING = 20;

/** Counts a run for its reports and waits, one count at a time; keeps the last, when it was read and what it cost. */
class RunCounter {
  /** The last counts read. */
  last: RunCounts | undefined;
  /** Delivered at the first count: the rate is of what was delivered while this process ran. */
  deliveredAtStart: number | undefined;
  /** The count under way: whoever asks meanwhile shares it rather than start a second. */
  inFlight: Promise<RunCounts> | undefined;
  private countedAt = Number.NEGATIVE_INFINITY;
  private costMs = 0;

  constructor(
    private readonly pool: Pool,
    private readonly runId: string,
  ) {}

  count(): Promise<RunCounts> {
    this.inFlight ??= this.read();
    return this.inFlight;
  }

  private async read(): Promise<RunCounts> {
    const t0 = performance.now();
    try {
      const c = await countRun(this.pool, this.runId);
      this.costMs = performance.now() - t0;
      this.countedAt = performance.now();
      this.last = c;
      this.deliveredAtStart ??= c.delivered;
      return c;
    } finally {
      this.inFlight = undefined;
    }
  }

  /** The earliest a next count may start (it may be asked for, and be free, sooner when waiting on it). */
  nextAt(minInterval: number): number {
    return this.countedAt + Math.max(minInterval, COUNT_SPACING * this.costMs);
  }

  /** What the run had enqueued at the last count and was no longer queued (delivered, failed, held back). */
  get settled(): number {
    return this.last ? this.last.enqueued - this.last.queued : 0;
  }

  /** Lets the count under way end; its error, if any, belongs to whoever asked for it. */
  async idle(): Promise<void> {
    if (this.inFlight) await this.inFlight.catch(() => undefined);
  }
}

/**
 * Tells onPausedChange when pause/resume flips delivery; checks at most once a second, as a paused
 * wait polls for nothing else.
 */
class PauseWatch {
  private paused = false;
  private checkedAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly pool: Pool,
    private readonly onChange: ((paused: boolean) => void) | undefined,
  ) {}

  async check(): Promise<void> {
    if (!this.onChange || performance.now() - this.checkedAt < 1000) return;
    this.checkedAt = performance.now();
    const now = await deliveryPaused(this.pool);
    if (now !== this.paused) this.onChange(now);
    this.paused = now;
  }
}

/**
 * One resync in this process, from its record to its result: execute() enqueues batch after batch
 * from the cursor, holding back while the relays are far behind (when waiting), then waits for
 * the run to settle, reporting the counts all along.
 */
class ResyncRun {
  private readonly runId: string;
  private readonly filter: StoredFilter;
  private readonly action: Action | null;
  /** Whether the command waits for the deliveries (then someone delivers: relays or inline). */
  private readonly wait: boolean;
  private readonly delivery: ResyncResult['delivery'];
  private readonly signal: AbortSignal | undefined;
  private readonly onProgress: ((progress: ResyncProgress) => void) | undefined;
  private readonly batchSize: number;
  private readonly interval: number;
  private readonly maxQueued: number;

  /** Where the next batch starts: the last key enqueued (null: the beginning). */
  private cursor: string | null;
  /** What the run enqueued so far, this process's batches included: the counts lag behind it. */
  private enqueued: number;
  private enqueueDone = false;
  /** The run's size when the outbox's statistics were last refreshed. */
  private analyzedAt = 5_000;
  private readonly counter: RunCounter;
  private readonly pause: PauseWatch;
  /** Users the run covers, and when this process started it: both set by begin(). */
  private total = 0;
  private started = 0;
  private lastReport = Number.NEGATIVE_INFINITY;
  /** A count that failed beside the batches: the next batch throws it. */
  private countError: Error | undefined;

  constructor(
    private readonly pool: Pool,
    private readonly source: InstalledSource,
    record: RunRecord,
    delivery: DeliveryHandle | undefined,
    options: ResyncOptions,
  ) {
    this.runId = record.runId;
    this.filter = record.filter;
    this.action = record.action ?? null;
    this.cursor = record.cursor;
    this.enqueued = record.enqueued;
    this.wait = delivery !== undefined;
    this.delivery = delivery?.mode ?? 'none';
    this.signal = options.signal;
    this.onProgress = options.onProgress;
    this.batchSize = options.batchSize ?? DEFAULT_RESYNC_BATCH_SIZE;
    this.interval = options.progressIntervalMs ?? 250;
    this.maxQueued = options.maxQueued ?? Math.max(20 * this.batchSize, 20_000);
    this.counter = new RunCounter(pool, record.runId);
    this.pause = new PauseWatch(pool, options.onPausedChange);
  }

  async execute(): Promise<ResyncResult> {
    await this.begin();
    try {
      await this.enqueueAll();
      await this.counter.idle();
      const interrupted = !this.enqueueDone;
      if (this.wait && !interrupted) await this.waitForSettlement();
      else await this.counter.count();
      return this.finish(interrupted);
    } finally {
      await this.counter.idle();
    }
  }

  /** Tells a pause already in force at once; the run's total, and the clock of its rate, start here. */
  private async begin(): Promise<void> {
    if (this.wait) await this.pause.check();
    this.started = performance.now();
    this.total = (await previewUsers(this.pool, this.source, toEnqueueFilter(this.filter, null), 0)).count;
  }

  /** Until the scope is exhausted or the signal ends enqueueing (the cursor in the database keeps the place). */
  private async enqueueAll(): Promise<void> {
    while (!this.signal?.aborted) {
      await this.enqueueNext();
      if (this.enqueueDone) return;
      this.reportWhileEnqueueing();
      if (this.wait) await this.holdBack();
    }
  }

  /** One batch, in one transaction that also moves the run's cursor; a short batch is the last. */
  private async enqueueNext(): Promise<void> {
    const batch = await enqueueBatch(this.pool, this.source, {
      filter: toEnqueueFilter(this.filter, this.cursor),
      limit: this.batchSize,
      action: this.action,
      eventSource: 'resync',
      runId: this.runId,
      returnIds: false,
      recordRun: true,
      notifyChannel: NOTIFY_CHANNEL,
    });
    this.enqueued += batch.enqueued;
    this.cursor = batch.lastKey ?? this.cursor;
    // The relays' plans follow the outbox's statistics: refreshed as the run doubles the outbox.
    if (this.enqueued >= this.analyzedAt * 2) {
      this.analyzedAt = this.enqueued;
      await refreshOutboxStatistics(this.pool);
    }
    if (this.countError !== undefined) throw this.countError;
    if (batch.enqueued < this.batchSize) {
      await refreshOutboxStatistics(this.pool);
      this.enqueueDone = true;
    }
  }

  /**
   * While enqueueing, a count runs beside the batches (never holding them up), at most one at a
   * time; between counts the reports still show the enqueued figure move.
   */
  private reportWhileEnqueueing(): void {
    if (!this.onProgress) return;
    const now = performance.now();
    if (this.counter.inFlight === undefined && now >= this.counter.nextAt(this.interval)) {
      this.counter
        .count()
        .then(() => this.report())
        .catch((err: unknown) => (this.countError ??= err instanceof Error ? err : new Error(errorMessage(err))));
    }
    if (now - this.lastReport >= this.interval) this.report();
  }

  /**
   * When waiting, enqueueing keeps at most maxQueued of the run's events queued ahead of the
   * relays, then waits for half of them to go: enqueueing further ahead would not deliver anything
   * sooner, and it keeps the outbox, and each count, the size of the queue rather than of the run.
   */
  private async holdBack(): Promise<void> {
    if (this.enqueued - this.counter.settled <= this.maxQueued) return;
    let previous: { at: number; settled: number } | undefined;
    while (!this.signal?.aborted) {
      // Counting is spaced by its cost: until the next count, the estimate stands and we wait.
      const early = this.counter.nextAt(0) - performance.now();
      if (early > 0 && !(await sleep(early, this.signal))) return;
      await this.counter.idle();
      const c = await this.counter.count();
      this.report();
      if (c.queued <= this.maxQueued / 2) return;
      await this.pause.check();
      // Sleep about as long as the relays need to bring the queue down to half, by their pace.
      const now = performance.now();
      const settled = c.enqueued - c.queued;
      const pace =
        previous && settled > previous.settled ? (settled - previous.settled) / (now - previous.at) : undefined;
      previous = { at: now, settled };
      const forecast = pace === undefined ? this.interval : (c.queued - this.maxQueued / 2) / pace;
      if (!(await sleep(Math.max(Math.min(forecast, 1000), 50), this.signal))) return;
    }
  }

  /** Everything is enqueued: counts until none of the run's events is queued, or the signal ends the wait. */
  private async waitForSettlement(): Promise<void> {
    for (;;) {
      const c = await this.counter.count();
      this.report();
      if (c.queued === 0 || this.signal?.aborted) return;
      await this.pause.check();
      await sleep(Math.max(0, this.counter.nextAt(Math.min(this.interval, 250)) - performance.now()), this.signal);
    }
  }

  /** The last report is the result; the signal interrupts a run even after its enqueueing was done. */
  private finish(interrupted: boolean): ResyncResult {
    const final = this.progress();
    this.report();
    return { ...final, interrupted: interrupted || (this.signal?.aborted ?? false), delivery: this.delivery };
  }

  private report(): void {
    this.lastReport = performance.now();
    this.onProgress?.(this.progress());
  }

  private progress(): ResyncProgress {
    const enqueued = this.enqueued;
    const c = this.counter.last ?? { enqueued, delivered: 0, failed: 0, waiting: 0, blocked: 0, queued: enqueued };
    const atStart = this.counter.deliveredAtStart;
    const elapsedMs = performance.now() - this.started;
    return {
      runId: this.runId,
      total: this.total,
      ...c,
      // Batches committed since the last count: known here exactly, still queued.
      enqueued: Math.max(enqueued, c.enqueued),
      queued: c.queued + Math.max(0, enqueued - c.enqueued),
      rate: elapsedMs > 0 && atStart !== undefined ? ((c.delivered - atStart) * 1000) / elapsedMs : 0,
      elapsedMs,
      enqueueDone: this.enqueueDone,
    };
  }
}
