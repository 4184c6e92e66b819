/**
 * The relay engine: claims per-user streams under a lease, sends each user's events one at a time
 * in capture order (users in parallel), and records every round's outcome. The daemon
 * (`suekk-sync relay`) runs it; `resync`, `push` and `retry` run it too when no relay is alive.
 */
import { EventEmitter, setMaxListeners } from 'node:events';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { RelaySettings } from '../config.ts';
import type { Logger } from '../logger.ts';
import { isConnectionError, isMissingObjectError, type Pool } from '../db/pool.ts';
import {
  anyWaitingForBackend,
  claimStreams,
  claimUsers,
  heartbeat,
  probeOne,
  readHeldStream,
  recordBackendState,
  registerRelay,
  renewLeases,
  secondsUntilNextDue,
  sweepStreams,
  unregisterRelay,
  wakeWaitingForBackend,
  type Claim,
  type ClaimedEvent,
  type ClaimedStream,
  type DeliveryRecord,
  type HeadState,
  type ReleaseKind,
  type ReleaseResult,
} from '../db/relay-queries.ts';
import { pruneIdleStreams, pruneTicks, rotatePartitions } from '../db/retention.ts';
import { refreshOutboxStatistics } from '../db/statistics.ts';
import { installedSchemaVersion, LATEST_SCHEMA_VERSION } from '../db/migrations.ts';
import { NOTIFY_CHANNEL } from '../db/schema.ts';
import { formatDuration } from '../duration.ts';
import { usernameOf } from '../webhook/body.ts';
import type { AttemptOutcome, WebhookSender } from '../webhook/sender.ts';
import { VERSION } from '../version.ts';
import { Breaker } from './breaker.ts';
import { Listener } from './listener.ts';
import { OutcomeWriter } from './outcome-writer.ts';
import { RateLimiter } from './rate-limit.ts';
import { deliverRound, type RoundResult } from './round.ts';
import { nextRound } from './schedule.ts';
import { sleep } from '../sleep.ts';
import { runAction, runLength, withAction } from './coalesce.ts';

/**
 * Events read per stream per query, and so the most a stream delivers between two records of its
 * progress: enough that a hot user costs one read and one write per many deliveries, few enough
 * that a relay killed mid-turn sends few of them again.
 */
const EVENTS_PER_FETCH = 20;
/**
 * Ids a claim's ticker may move past per lane (the other lane's events it walks by, and its own it
 * reads): a resync queued in front of a live change is crossed in a few claims.
 */
const TICK_READ_MIN = 1_000;
const HEARTBEAT_MS = 5_000;
const MAINTENANCE_MS = 60_000;
/** Events a stream sends before it lets a waiting stream have its place (when one waits). */
const TURN_EVENTS = 5;
/**
 * While ids were handed out to transactions still open (or another relay was ticking), the relay
 * looks again after this, doubling up to RECHECK_MAX_MS: a silent writer's event is seen within
 * that of its commit even if nobody rings.
 */
const RECHECK_MIN_MS = 2;
const RECHECK_MAX_MS = 100;

export interface RelayOptions {
  pool: Pool;
  sender: WebhookSender;
  settings: RelaySettings;
  logger: Logger;
  /** The LISTEN connection's URL; without it the relay only polls. */
  listenUrl?: string;
  relayId?: string;
  /** Register in suekk_sync.relays and beat (false for a CLI command delivering its own events). */
  heartbeat?: boolean;
  /** Run retention and repair sweeps (only the daemon does). */
  maintenance?: boolean;
  /** Wait for LISTEN to prove it works at start (the daemon does). */
  listenSelfCheck?: boolean;
  /**
   * Deliver these users only (a command delivering what it asked for while no relay runs): other
   * users' events stay for the relays, so it neither ticks nor probes nor wakes anyone else.
   */
  onlyUsers?: readonly string[];
}

export interface DeliveryEvent {
  event: ClaimedEvent;
  result: RoundResult;
  /** delivered | rescheduled | failed | returned */
  outcome: 'delivered' | 'rescheduled' | 'failed' | 'returned';
  nextAttemptAt?: Date;
  /** Coalescing: how many earlier events of the user the delivered call carried. */
  superseded?: number;
}

interface StreamState {
  userId: string;
  /** Aborts the request in flight when the lease is about to end unrenewed. */
  attempt: AbortController;
  leaseTimer: NodeJS.Timeout | undefined;
  leaseExpiresAt: number;
  /** A claim leased the user to this relay again while this turn was ending: run it again after. */
  leasedAgain: boolean;
}

/** What one round came to: delivered (the stream goes on), or how it ends the stream's turn. */
type RoundEnd =
  | { kind: 'delivered'; records: DeliveryRecord[] }
  | { kind: Exclude<ReleaseKind, 'idle' | 'checkpoint'>; head: HeadState | null; dueAt?: Date };

export interface RelayEvents {
  delivery: [DeliveryEvent];
  attempt: [AttemptOutcome];
  /** The backend looks down (the breaker opened), or answers again. */
  backend: ['down' | 'up'];
  idle: [];
}

export class Relay extends EventEmitter<RelayEvents> {
  readonly id: string;
  private readonly pool: Pool;
  private readonly sender: WebhookSender;
  private readonly settings: RelaySettings;
  private readonly logger: Logger;
  private readonly writer: OutcomeWriter;
  private readonly breaker: Breaker;
  private readonly limiter: RateLimiter;
  private readonly listener: Listener | undefined;
  private readonly stopController = new AbortController();
  private readonly streams = new Map<string, StreamState>();
  private readonly tasks = new Set<Promise<void>>();
  private sending = 0;
  private readonly placeWaiters: (() => void)[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  private dueTimer: NodeJS.Timeout | undefined;
  /** A writer may have rung since this relay last answered the doorbell (true at start). */
  private bellMayBeRung = true;
  private recheckTimer: NodeJS.Timeout | undefined;
  private recheckMs = RECHECK_MIN_MS;
  private claiming = false;
  /** The claim loop running now, if any: a stop waits for it, so no query outlives the relay. */
  private claimRun: Promise<void> | undefined;
  private probeTimer: NodeJS.Timeout | undefined;
  private wakeRequested = false;
  private started = false;
  private stopped: Promise<void> | undefined;
  paused = false;
  /** True while the last claim found the database unreachable. */
  databaseDown = false;
  /**
   * Why the relay delivers nothing while set: the schema it was built for is gone (uninstalled) or
   * another version's. It looks again every few seconds and carries on once it is back.
   */
  schemaMissing: string | undefined;
  private schemaCheck: Promise<boolean> | undefined;
  /** Whether state records a captured table, as last read (undefined before the first read). */
  private captureInstalled: boolean | undefined;

  constructor(private readonly options: RelayOptions) {
    super();
    // Every stream waiting out a backoff or a rate-limit slot listens on this one signal (and
    // removes its listener when done), so more than Node's default ten is normal, not a leak.
    setMaxListeners(0, this.stopController.signal);
    this.id = options.relayId ?? `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
    this.pool = options.pool;
    this.sender = options.sender;
    this.settings = options.settings;
    this.logger = options.logger.child({ relayId: this.id });
    this.writer = new OutcomeWriter(this.pool, this.id, this.logger, {
      maxBatch: Math.max(100, this.settings.batchSize),
      leaseMs: this.settings.leaseMs,
      perStream: EVENTS_PER_FETCH,
      schemaGone: (err) => this.schemaGone(err),
    });
    this.breaker = new Breaker(this.settings.breakerThreshold);
    this.limiter = new RateLimiter(this.settings.maxRps);
    this.listener = options.listenUrl
      ? new Listener(options.listenUrl, this.logger, {
          onWake: () => {
            this.bellMayBeRung = true;
            this.wake();
          },
          onControl: (payload) => this.control(payload),
          onLost: (err) => this.connectionLost(err),
        })
      : undefined;
  }

  /** Streams held right now (for metrics and tests). */
  get inFlight(): number {
    return this.streams.size;
  }

  get listening(): boolean {
    return this.listener?.connected ?? false;
  }

  get breakerOpen(): boolean {
    return this.breaker.open;
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    try {
      await this.startParts();
    } catch (err) {
      // Nothing half-started may keep the process alive or hold a lease.
      await this.stop();
      throw err;
    }
    this.wake();
  }

  private async startParts(): Promise<void> {
    this.pool.on('error', this.onPoolError);
    if (this.options.heartbeat !== false) {
      await registerRelay(this.pool, { id: this.id, host: hostname(), pid: process.pid, version: VERSION });
      this.every(HEARTBEAT_MS, () => this.beat());
    }
    await this.refreshState();
    if (this.listener) {
      await this.listener.start();
      if (this.options.listenSelfCheck) await this.listener.selfCheck(this.pool, this.id);
    }
    this.every(this.settings.pollIntervalMs, () => {
      // The backstop for a ringer that rolled back after silencing others: look at the bell too.
      this.bellMayBeRung = true;
      this.wake();
    });
    this.every(Math.max(100, Math.floor(this.settings.leaseMs / 3)), () => this.renew());
    // A relay that died leaves its users leased until the lease runs out; whoever sweeps first
    // makes them due again.
    this.every(Math.max(250, Math.floor(this.settings.leaseMs / 3)), () => this.sweep());
    if (this.options.maintenance) {
      await this.maintain();
      this.every(MAINTENANCE_MS, () => this.maintain());
    }
    this.every(HEARTBEAT_MS, () => this.lookForSchema());
    // Users already waiting for the backend (a relay starting during an outage, or after one):
    // start by probing, so they go as soon as it answers rather than at their own next round.
    if (this.options.onlyUsers === undefined && (await anyWaitingForBackend(this.pool))) {
      this.breaker.trip();
      this.backendDown();
    }
  }

  private every(ms: number, fn: () => unknown): void {
    const timer = setInterval(() => {
      if (!this.stopController.signal.aborted) void Promise.resolve(fn()).catch(() => undefined);
    }, ms);
    this.timers.push(timer);
  }

  /** Something may be due: claim until the slots are full or nothing is left. */
  wake(): void {
    if (this.stopController.signal.aborted || !this.started) return;
    if (this.claiming) {
      this.wakeRequested = true;
      return;
    }
    this.claiming = true;
    this.claimRun = this.claimLoop().finally(() => {
      this.claiming = false;
      this.claimRun = undefined;
    });
  }

  private capacity(): number {
    // An open breaker probes with one user at a time instead of burning everyone's rounds.
    return this.breaker.open ? 1 : this.settings.concurrency;
  }

  /**
   * Streams claimed beyond the sending capacity wait here, lease held, for a sender to free up.
   * Without them a finished stream's place stayed empty for a whole claim round trip, so under
   * load a third of the places were empty, and a hot user, which never waits for a claim, took
   * a far larger share of the relay than its one place.
   */
  private reserve(): number {
    return Math.ceil(this.capacity() / 2);
  }

  /** Waits for one of `capacity()` places to send in; give it back with leaveSendingPlace(). */
  private takeSendingPlace(): Promise<void> | undefined {
    if (this.sending < this.capacity()) {
      this.sending++;
      return undefined;
    }
    return new Promise((resolve) => this.placeWaiters.push(resolve));
  }

  private leaveSendingPlace(): void {
    this.sending--;
    this.admitWaiting();
  }

  private admitWaiting(): void {
    while (this.sending < this.capacity() && this.placeWaiters.length > 0) {
      this.sending++;
      this.placeWaiters.shift()!();
    }
  }

  private async claimLoop(): Promise<void> {
    do {
      this.wakeRequested = false;
      while (!this.stopController.signal.aborted && !this.paused && this.schemaMissing === undefined) {
        const free = this.capacity() + this.reserve() - this.streams.size;
        if (free <= 0) break;
        // Every place busy and streams waiting for one: a claim can wait until it is worth a batch.
        // Claiming for each stream that ends made a claim per event, and a claim costs about as much
        // for one user as for fifty.
        if (this.streams.size >= this.capacity() && free < Math.max(1, Math.floor(this.reserve() / 2))) break;
        const limit = Math.min(free, this.settings.batchSize);
        // Answering the doorbell inside the claim: a writer that rings from now on is heard.
        const answerBell = this.bellMayBeRung && this.listener !== undefined;
        this.bellMayBeRung = false;
        let claim: Claim;
        // The leases start when the database runs the claim: count them from before it was sent.
        const claimedAt = performance.now();
        try {
          claim = this.options.onlyUsers
            ? await claimUsers(this.pool, this.id, this.options.onlyUsers, {
                limit,
                leaseMs: this.settings.leaseMs,
                perStream: EVENTS_PER_FETCH,
              })
            : await claimStreams(this.pool, this.id, {
                limit,
                leaseMs: this.settings.leaseMs,
                perStream: EVENTS_PER_FETCH,
                readLimit: Math.max(TICK_READ_MIN, limit * 10),
                answerBell,
                readAhead: this.settings.coalesce,
              });
          if (this.databaseDown) this.logger.info('The database answers again; delivering');
          this.databaseDown = false;
        } catch (err) {
          if (answerBell) this.bellMayBeRung = true;
          this.noteDatabaseError(err, 'claim');
          this.scheduleWake(1_000);
          return;
        }
        if (this.logger.isLevelEnabled('debug')) {
          this.logger.debug(
            {
              limit,
              streams: claim.streams.map((c) => `${c.userId}>${c.cursor}:${c.events.map((e) => e.id).join(',')}`),
              openGaps: claim.openGaps,
              more: claim.more,
              busy: claim.busy,
            },
            'Claimed',
          );
        }
        for (const stream of claim.streams) this.startStream(stream, claimedAt);
        // Back off only while looking again finds nothing: under steady writes some transaction is
        // nearly always open, and a relay that kept doubling its wait would deliver 100 ms late.
        if (claim.streams.length > 0 || !(claim.openGaps || claim.busy)) this.recheckMs = RECHECK_MIN_MS;
        if (claim.openGaps || claim.busy) this.scheduleRecheck();
        if (claim.streams.length < limit && !claim.more) {
          // Nothing else is due now. Only an empty claim asks when something will be: while
          // streams are in flight, their ends wake the relay again anyway.
          if (claim.streams.length === 0) await this.sleepUntilNextDue();
          break;
        }
      }
    } while (this.wakeRequested && !this.stopController.signal.aborted);
    if (this.streams.size === 0) this.emit('idle');
  }

  /**
   * A connection to the database dropped: the server may have crashed, and with asynchronous
   * commit the newest leases may not have survived it, so another relay could claim those users as
   * soon as the server is back. Stop every request in flight now (the events stay pending and keep
   * their webhook-ids); each stream is handed back and claimed again once the database answers.
   */
  private connectionLost(err: Error): void {
    if (/timeout exceeded when trying to connect/i.test(err.message)) return; // a busy pool, not a lost server
    if (this.streams.size === 0) return;
    this.logger.warn(
      { err: { message: err.message }, streams: this.streams.size },
      'A database connection dropped; stopping the requests in flight until the leases are confirmed',
    );
    for (const state of this.streams.values()) state.attempt.abort();
  }

  private readonly onPoolError = (err: Error): void => this.connectionLost(err);

  private noteDatabaseError(err: unknown, what: string): void {
    if (isMissingObjectError(err)) {
      // Said once, by schemaGone, when the schema is what is missing.
      void this.schemaGone(err).then((gone) => {
        if (!gone) this.logDatabaseError(err, what);
      });
      return;
    }
    this.logDatabaseError(err, what);
  }

  private logDatabaseError(err: unknown, what: string): void {
    if (isConnectionError(err)) {
      this.connectionLost(err as Error);
      if (!this.databaseDown) {
        this.logger.warn(
          { err: { message: (err as Error).message } },
          `The database is unreachable (${what}); retrying`,
        );
      }
      this.databaseDown = true;
    } else {
      this.logger.error(
        { err: { message: (err as Error).message, code: (err as { code?: string }).code } },
        `Database error during ${what}`,
      );
    }
  }

  /**
   * Whether `err` (a missing relation, function or column) means the schema this relay was built
   * for is gone: uninstalled, or replaced by another version's install. Then the relay says so
   * once, stops what is in flight (there is nowhere left to record it) and delivers nothing until
   * lookForSchema finds the schema back. A daemon under a supervisor that restarts it would
   * otherwise be refused at every start; waiting lets `suekk-sync install` bring it back.
   */
  private schemaGone(err: unknown): Promise<boolean> {
    if (this.schemaMissing !== undefined) return Promise.resolve(true);
    if (!isMissingObjectError(err)) return Promise.resolve(false);
    this.schemaCheck ??= this.checkSchema().finally(() => (this.schemaCheck = undefined));
    return this.schemaCheck;
  }

  private async checkSchema(): Promise<boolean> {
    let version: number;
    try {
      version = await installedSchemaVersion(this.pool);
    } catch {
      return false;
    }
    if (version === LATEST_SCHEMA_VERSION) return false;
    this.schemaMissing =
      version === 0
        ? 'suekk-sync is no longer installed in this database (`suekk-sync uninstall --drop-events` dropped the suekk_sync schema): this relay delivers nothing and waits for `suekk-sync install`; stop it if suekk-sync is gone for good'
        : `The suekk_sync schema is now at version ${version}, which this relay (schema version ${LATEST_SCHEMA_VERSION}) cannot use: it delivers nothing until the schema is back at version ${LATEST_SCHEMA_VERSION}; restart it with the suekk-sync that installed version ${version}`;
    this.logger[version === 0 ? 'warn' : 'error']({ schemaVersion: version }, this.schemaMissing);
    for (const state of this.streams.values()) state.attempt.abort();
    return true;
  }

  /** While the schema is missing: is it back (an install of this version)? Then deliver again. */
  private async lookForSchema(): Promise<void> {
    if (this.schemaMissing === undefined) return;
    try {
      if ((await installedSchemaVersion(this.pool)) !== LATEST_SCHEMA_VERSION) return;
    } catch {
      return; // the database is away: the next look tells
    }
    this.schemaMissing = undefined;
    this.captureInstalled = undefined;
    this.logger.info({ schemaVersion: LATEST_SCHEMA_VERSION }, 'suekk-sync is installed again; delivering');
    await this.beat();
    this.bellMayBeRung = true;
    this.wake();
  }

  /**
   * Ids were handed out to transactions still open when the claim looked (or another relay was
   * ticking): look again soon, backing off, so a writer that stayed silent because the bell was
   * rung is delivered within moments of its commit.
   */
  private scheduleRecheck(): void {
    if (this.recheckTimer) return;
    this.recheckTimer = setTimeout(() => {
      this.recheckTimer = undefined;
      this.wake();
    }, this.recheckMs);
    this.recheckMs = Math.min(this.recheckMs * 2, RECHECK_MAX_MS, this.settings.pollIntervalMs);
  }

  /** Sets a timer for the next stream that becomes due before the next poll. */
  private async sleepUntilNextDue(): Promise<void> {
    try {
      const seconds = await secondsUntilNextDue(this.pool);
      if (seconds !== null && seconds * 1000 < this.settings.pollIntervalMs)
        this.scheduleWake(Math.max(5, seconds * 1000 + 5));
    } catch {
      // The poll comes anyway.
    }
  }

  private scheduleWake(ms: number): void {
    if (this.dueTimer) clearTimeout(this.dueTimer);
    this.dueTimer = setTimeout(() => {
      this.dueTimer = undefined;
      this.wake();
    }, ms);
  }

  private startStream(claimed: ClaimedStream, leasedAt = performance.now()): void {
    const running = this.streams.get(claimed.userId);
    if (running) {
      // Its turn is ending (the release landed, its answer not yet here) and a ticker leased it to
      // this relay again: run it once more, from what the database says then.
      running.leasedAgain = true;
      return;
    }
    const state: StreamState = {
      userId: claimed.userId,
      attempt: new AbortController(),
      leaseTimer: undefined,
      leaseExpiresAt: 0,
      leasedAgain: false,
    };
    this.streams.set(claimed.userId, state);
    // Abort a little before the lease ends, so the request ends before another relay may start.
    this.armLease(state, leasedAt);
    const task = this.runStreamInPlace(claimed, state)
      .catch((err: unknown) => {
        this.logger.error({ err: { message: (err as Error).message }, userId: claimed.userId }, 'Stream task failed');
      })
      .finally(() => {
        clearTimeout(state.leaseTimer);
        this.streams.delete(claimed.userId);
        this.tasks.delete(task);
        if (state.leasedAgain) void this.restartStream(claimed.userId);
        this.wake();
      });
    this.tasks.add(task);
  }

  private async restartStream(userId: string): Promise<void> {
    if (this.stopController.signal.aborted) return; // the lease runs out and the stream goes back
    try {
      const stream = await this.retryDatabase(() => readHeldStream(this.pool, this.id, userId, EVENTS_PER_FETCH));
      if (stream) this.startStream(stream);
    } catch {
      // Stopping: the lease runs out and the stream is due again for whoever claims it.
    }
  }

  private armLease(state: StreamState, renewedAt: number): void {
    state.leaseExpiresAt = renewedAt + this.settings.leaseMs;
    clearTimeout(state.leaseTimer);
    const margin = Math.min(2_000, this.settings.leaseMs / 5);
    state.leaseTimer = setTimeout(
      () => {
        this.logger.warn(
          { userId: state.userId },
          'Could not renew the lease in time; aborting the request so no other relay sends in parallel',
        );
        state.attempt.abort();
      },
      Math.max(0, state.leaseExpiresAt - margin - performance.now()),
    );
  }

  private async renew(): Promise<void> {
    const held = [...this.streams.keys()];
    if (held.length === 0) return;
    const startedAt = performance.now();
    try {
      const renewed = await renewLeases(this.pool, this.id, held, this.settings.leaseMs);
      for (const userId of renewed) {
        const state = this.streams.get(userId);
        if (state) this.armLease(state, startedAt);
      }
    } catch (err) {
      this.noteDatabaseError(err, 'lease renewal');
    }
  }

  private async runStreamInPlace(claimed: ClaimedStream, state: StreamState): Promise<void> {
    const waiting = this.takeSendingPlace();
    if (waiting) await waiting;
    try {
      await this.runStream(claimed, state);
    } finally {
      this.leaveSendingPlace();
    }
  }

  /**
   * One user's turn: its events one at a time, in capture order. Progress is recorded once at the
   * end of the turn (and after every EVENTS_PER_FETCH events of a long one), together with what was
   * delivered, never per event.
   */
  private async runStream(claimed: ClaimedStream, state: StreamState): Promise<void> {
    const { userId } = claimed;
    let cursor = claimed.cursor;
    let queue = claimed.events;
    let mayHaveMore = queue.length >= EVENTS_PER_FETCH;
    let delivered: DeliveryRecord[] = [];
    let sentInTurn = 0;
    const release = async (
      kind: ReleaseKind,
      end?: Exclude<RoundEnd, { kind: 'delivered' }>,
    ): Promise<ReleaseResult> => {
      // A lease kept is renewed by the statement, which runs after this: count from here.
      const asked = performance.now();
      const result = await this.writer.release({
        userId,
        kind,
        cursor,
        dueAt: end?.dueAt,
        head: end?.head ?? null,
        delivered,
      });
      delivered = [];
      if (result.outcome === 'continued') this.armLease(state, asked);
      return result;
    };

    for (;;) {
      if (this.stopController.signal.aborted || this.paused || state.attempt.signal.aborted) {
        await release('return');
        return;
      }
      if (queue.length === 0) {
        // Read all there was: record it, and go on if more came (or was not read yet).
        const result = await release(mayHaveMore ? 'checkpoint' : 'idle');
        if (result.outcome !== 'continued') return;
        queue = result.events;
        mayHaveMore = queue.length >= EVENTS_PER_FETCH;
        continue;
      }
      const run = queue.splice(0, this.settings.coalesce ? runLength(queue) : 1);
      const end = await this.deliver(run, state);
      if (end.kind !== 'delivered') {
        await release(end.kind, end);
        return;
      }
      cursor = run.at(-1)!.id;
      delivered.push(...end.records);
      sentInTurn += run.length;
      if (sentInTurn >= TURN_EVENTS && this.placeWaiters.length > 0) {
        // A user with a backlog takes turns with the users waiting for a place instead of
        // keeping its place for thousands of events: its lease and order stay as they are, and
        // what its turn delivered is recorded as it hands the place over.
        sentInTurn = 0;
        this.leaveSendingPlace();
        const result = await release('checkpoint');
        const waiting = this.takeSendingPlace();
        if (waiting) await waiting;
        if (result.outcome !== 'continued') return;
        queue = result.events;
        mayHaveMore = queue.length >= EVENTS_PER_FETCH;
      }
    }
  }

  /** Runs a database read until it lands (the database may be restarting); the lease covers the wait. */
  private async retryDatabase<T>(read: () => Promise<T>): Promise<T> {
    for (let failures = 1; ; failures++) {
      try {
        return await read();
      } catch (err) {
        // Stopping: the stream's lease hands it back by itself; nothing was sent for this read.
        if (this.stopController.signal.aborted || this.schemaMissing !== undefined) throw err;
        this.noteDatabaseError(err, 'read');
        await sleep(Math.min(5_000, 100 * 2 ** failures));
      }
    }
  }

  /**
   * One round for one call: a single event, or (coalescing) a run of a user's events sent as its
   * newest one. The run's rounds are its first event's: that is the one waiting when it fails.
   */
  private async deliver(run: readonly ClaimedEvent[], state: StreamState): Promise<RoundEnd> {
    const first = run[0]!;
    const event = run.at(-1)!;
    const action = run.length > 1 ? runAction(run) : event.action;
    const body = run.length > 1 ? withAction(event.body, action) : event.body;
    const username = usernameOf(event.body) || event.userId;
    const webhookId = `evt_${event.webhookId}`;
    const logFields = () => ({
      eventId: event.id,
      webhookId,
      userId: event.userId,
      action,
      source: event.source,
      round: first.rounds + 1,
      ...(run.length > 1 ? { merged: run.length } : {}),
    });
    const result = await deliverRound(
      { webhookId, body, username, logFields },
      {
        sender: this.sender,
        logger: this.logger,
        limiter: this.limiter,
        maxAttempts: this.settings.maxAttempts,
        backoffMs: this.settings.backoffMs,
        stopSignal: this.stopController.signal,
        attemptSignal: state.attempt.signal,
        onAttempt: this.onAttempt,
      },
    );
    const last = result.last;

    if (result.kind === 'delivered') {
      if (this.logger.isLevelEnabled('info')) {
        this.logger.info(
          { ...logFields(), attempt: result.attempts, status: last?.status, durationMs: last?.durationMs },
          `User ${username} synced to backend (action: ${action})`,
        );
      }
      this.emit('delivery', { event, result, outcome: 'delivered', superseded: run.length - 1 });
      const carried: DeliveryRecord = {
        eventId: event.id,
        outcome: 'delivered',
        supersededBy: null,
        attempts: event.attempts + result.attempts,
        rounds: event.rounds + 1,
        httpStatus: last?.status ?? null,
        durationMs: result.durationMs,
        response: event.source === 'push' ? (last?.responseSnippet ?? null) : null,
        runId: event.runId,
      };
      const merged = run.slice(0, -1).map((e): DeliveryRecord => ({
        eventId: e.id,
        outcome: 'superseded',
        supersededBy: event.webhookId,
        attempts: e.attempts,
        rounds: e.rounds,
        httpStatus: null,
        durationMs: 0,
        response: null,
        runId: e.runId,
      }));
      return { kind: 'delivered', records: [...merged, carried] };
    }
    if (result.kind === 'aborted') {
      if (result.attempts > 0) {
        this.logger.info(
          { ...logFields(), attempts: result.attempts },
          'Stopped before the round finished; the event stays pending and keeps its webhook-id',
        );
      }
      this.emit('delivery', { event, result, outcome: 'returned' });
      return { kind: 'return', head: null };
    }

    const head: HeadState = {
      eventId: first.id,
      attempts: first.attempts + result.attempts,
      rounds: first.rounds + 1,
      httpStatus: last?.status ?? null,
      error: last?.error ?? null,
      response: last?.responseSnippet ?? null,
      durationMs: result.durationMs,
    };
    this.logger.error(
      { ...logFields(), attempts: result.attempts, status: last?.status, error: last?.error },
      `Failed to sync user ${username} after ${result.attempts} attempts`,
    );
    const next =
      result.kind === 'retryable'
        ? nextRound(this.settings, first.rounds + 1, first.createdAt, Date.now(), last?.retryAfterMs ?? 0)
        : ({ giveUp: true } as const);
    if (next.giveUp) {
      const why =
        result.kind === 'rejected'
          ? `the backend rejected it (HTTP ${last?.status})`
          : `it still failed ${formatDuration(this.settings.giveUpAfterMs)} after capture`;
      this.logger.error(
        { ...logFields(), status: last?.status },
        `Event evt_${first.webhookId} is now failed because ${why}; user ${username} is parked until \`suekk-sync retry --user ${event.userId}\` or \`suekk-sync skip --user ${event.userId}\``,
      );
      this.emit('delivery', { event, result, outcome: 'failed' });
      return { kind: 'park', head };
    }
    this.logger.warn(
      { ...logFields(), nextAttemptAt: next.at.toISOString(), delayMs: next.delayMs },
      `Next round for user ${username} in ${Math.round(next.delayMs / 1000)}s at ${next.at.toISOString()}; later events of this user wait behind it`,
    );
    this.emit('delivery', { event, result, outcome: 'rescheduled', nextAttemptAt: next.at });
    return { kind: 'reschedule', head, dueAt: next.at };
  }

  private readonly onAttempt = (outcome: AttemptOutcome): void => this.recordAttempt(outcome);

  private recordAttempt(outcome: AttemptOutcome): void {
    const change = this.breaker.record(outcome);
    if (change === 'opened') {
      this.logger.error(
        { consecutiveFailures: this.breaker.failures, probeIntervalMs: this.settings.probeIntervalMs },
        `The backend looks down (consecutive connection errors, timeouts, 408, 425, 429 or 5xx); probing every ${formatDuration(this.settings.probeIntervalMs)} with one waiting user until it answers`,
      );
      this.backendDown();
    } else if (change === 'closed') {
      void this.backendUp();
    }
    this.emit('attempt', outcome);
  }

  /** Since when this relay has seen the backend down; undefined while it answers. */
  backendDownSince: Date | undefined;

  private backendDown(): void {
    this.backendDownSince = new Date();
    this.recordBackendState();
    clearInterval(this.probeTimer);
    this.probeTimer = setInterval(() => void this.probe(), this.settings.probeIntervalMs);
    this.emit('backend', 'down');
  }

  /**
   * While the backend looks down, users that failed a round wait for their next one, which may be
   * an hour away: a fixed cadence of probes (a real delivery of one waiting user's head event)
   * notices the backend is back, whatever the users' own schedules.
   */
  private async probe(): Promise<void> {
    // One is in flight; or this relay delivers its own users only, which go by their own schedule.
    if (
      this.stopController.signal.aborted ||
      this.paused ||
      this.schemaMissing !== undefined ||
      this.streams.size > 0 ||
      this.options.onlyUsers
    )
      return;
    try {
      if (await probeOne(this.pool)) this.wake();
    } catch (err) {
      this.noteDatabaseError(err, 'probe');
    }
  }

  private async backendUp(): Promise<void> {
    clearInterval(this.probeTimer);
    this.probeTimer = undefined;
    const since = this.backendDownSince;
    this.backendDownSince = undefined;
    this.recordBackendState();
    this.emit('backend', 'up');
    this.admitWaiting();
    this.wake();
    if (this.options.onlyUsers) return;
    let woken = 0;
    try {
      woken = await wakeWaitingForBackend(this.pool);
    } catch (err) {
      // The sweep and the users' own schedules still bring them back.
      this.noteDatabaseError(err, 'waking the users that waited for the backend');
    }
    const after = since === undefined ? '' : ` after ${formatDuration(Date.now() - since.getTime())}`;
    this.logger.info(
      { usersDue: woken, downMs: since === undefined ? undefined : Date.now() - since.getTime() },
      `The backend answers again${after}; ${woken} user${woken === 1 ? '' : 's'} waiting for their next round ${woken === 1 ? 'is' : 'are'} due now`,
    );
    if (woken > 0) this.wake();
  }

  private recordBackendState(): void {
    if (this.options.heartbeat === false) return;
    recordBackendState(this.pool, this.id, this.backendDownSince ?? null).catch((err: unknown) =>
      this.noteDatabaseError(err, 'backend state'),
    );
  }

  private control(payload: string): void {
    if (payload === 'pause') {
      if (!this.paused) this.logger.info('Paused: no new users are claimed until `suekk-sync resume`');
      this.paused = true;
    } else if (payload === 'resume') {
      if (this.paused) this.logger.info('Resumed');
      this.paused = false;
      this.wake();
    }
  }

  /** The switches in suekk_sync.state, read at start and with every beat: pause, and whether capture is installed. */
  private async refreshState(): Promise<void> {
    const { rows } = await this.pool.query<{ paused: boolean; table: string | null }>(
      'select paused, source_table as table from suekk_sync.state',
    );
    const paused = rows[0]?.paused ?? false;
    if (paused !== this.paused) this.control(paused ? 'pause' : 'resume');
    // Uninstalled with the events kept: delivering them is still this relay's job.
    const installed = (rows[0]?.table ?? null) !== null;
    if (installed !== this.captureInstalled && !installed) {
      this.logger.warn(
        'Capture is not installed (suekk-sync uninstall kept the events): delivering the events already captured; changes to the users table are not captured until `suekk-sync install`',
      );
    } else if (installed && this.captureInstalled === false) {
      this.logger.info(`Capture is installed again on ${rows[0]!.table}`);
    }
    this.captureInstalled = installed;
  }

  private async beat(): Promise<void> {
    if (this.schemaMissing !== undefined) return;
    try {
      await heartbeat(this.pool, { id: this.id, host: hostname(), pid: process.pid, version: VERSION });
      // Again with every beat: a relay row registered again (a restored schema) must not say "up".
      if (this.backendDownSince !== undefined) await recordBackendState(this.pool, this.id, this.backendDownSince);
      await this.refreshState();
    } catch (err) {
      this.noteDatabaseError(err, 'heartbeat');
    }
  }

  private async sweep(): Promise<void> {
    if (this.schemaMissing !== undefined) return;
    try {
      const { expired, stranded } = await sweepStreams(this.pool);
      if (expired > 0)
        this.logger.warn(
          { users: expired },
          'Took back users whose relay stopped renewing its lease; they are due again',
        );
      if (stranded > 0)
        this.logger.warn(
          { users: stranded },
          'Found users with pending events that nobody was delivering; made them due',
        );
      if (expired + stranded > 0) this.wake();
    } catch (err) {
      this.noteDatabaseError(err, 'sweep');
    }
  }

  private async maintain(): Promise<void> {
    if (this.schemaMissing !== undefined) return;
    try {
      const rotation = await rotatePartitions(this.pool, this.settings.retentionMs);
      if (rotation.truncated.length > 0) {
        this.logger.info(
          { partitions: rotation.truncated, moved: rotation.moved },
          'Emptied outbox partitions past retention',
        );
      }
      if (rotation.deferred.length > 0) {
        this.logger.warn(
          { partitions: rotation.deferred },
          'An outbox partition past retention is in use by a long query; emptying it later',
        );
      }
      for (let batch = 0; batch < 100; batch++) {
        if ((await pruneIdleStreams(this.pool)) === 0) break;
      }
      await pruneTicks(this.pool);
      await refreshOutboxStatistics(this.pool);
    } catch (err) {
      this.noteDatabaseError(err, 'maintenance');
    }
  }

  /**
   * Graceful stop: claim nothing more, start no further event, cut backoff waits short, let the
   * attempts in flight finish, hand the streams back and tell the other relays at once.
   */
  stop(): Promise<void> {
    this.stopped ??= this.shutdown();
    return this.stopped;
  }

  private async shutdown(): Promise<void> {
    this.stopController.abort();
    clearInterval(this.probeTimer);
    if (this.dueTimer) clearTimeout(this.dueTimer);
    if (this.recheckTimer) clearTimeout(this.recheckTimer);
    for (const timer of this.timers) clearInterval(timer);
    // Leases must outlive the requests still in flight.
    const renewal = setInterval(() => void this.renew(), Math.max(100, Math.floor(this.settings.leaseMs / 3)));
    // Bounded: with the database gone, outcomes cannot land. What is not recorded stays pending
    // under a lease that runs out, and is sent again (same webhook-id): at-least-once, never lost.
    const giveUp = new AbortController();
    const deadline = sleep(this.settings.timeoutMs + this.settings.leaseMs, giveUp.signal);
    try {
      const settled = await Promise.race([
        (async () => {
          await this.claimRun;
          while (this.tasks.size > 0) await Promise.allSettled([...this.tasks]);
          await this.writer.drain();
          return true;
        })(),
        deadline.then(() => false),
      ]);
      giveUp.abort();
      if (!settled) {
        this.writer.abandon();
        this.logger.warn(
          { inFlight: this.tasks.size, unrecorded: this.writer.backlog },
          'Stopping without recording every outcome (the database does not answer); those events stay pending and are sent again after their lease',
        );
      }
    } finally {
      clearInterval(renewal);
    }
    await this.listener?.stop();
    this.pool.off('error', this.onPoolError);
    try {
      await this.pool.query('select pg_notify($1, $2)', [NOTIFY_CHANNEL, '']);
      if (this.options.heartbeat !== false) await unregisterRelay(this.pool, this.id);
    } catch (err) {
      this.noteDatabaseError(err, 'stop');
    }
  }
}
