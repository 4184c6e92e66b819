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
import { isConnectionError, type Pool } from '../db/pool.ts';
import {
  answerDoorbell,
  claimStreams,
  fetchMoreEvents,
  heartbeat,
  pruneDelivered,
  pruneIdleStreams,
  registerRelay,
  renewLeases,
  reviveStrandedStreams,
  secondsUntilNextDue,
  unregisterRelay,
  type ClaimedEvent,
  type ClaimedStream,
  type EventOutcome,
  type StreamRelease,
} from '../db/relay-queries.ts';
import { NOTIFY_CHANNEL } from '../capture/generate.ts';
import { buildWebhookBody } from '../webhook/body.ts';
import type { AttemptOutcome, WebhookSender } from '../webhook/sender.ts';
import { VERSION } from '../version.ts';
import { Breaker } from './breaker.ts';
import { Listener } from './listener.ts';
import { OutcomeWriter } from './outcome-writer.ts';
import { RateLimiter } from './rate-limit.ts';
import { deliverRound, type RoundResult } from './round.ts';
import { nextRound } from './schedule.ts';
import { sleep } from './sleep.ts';

/** Events read per stream per query: enough that a hot user costs one read per few deliveries. */
const EVENTS_PER_FETCH = 20;
const HEARTBEAT_MS = 5_000;
const MAINTENANCE_MS = 60_000;
/** A writer holds the stream row for the length of its transaction: look again shortly. */
const LOCKED_RETRY_MS = 25;
/** Events a stream sends before it lets a waiting stream have its place (when one waits). */
const TURN_EVENTS = 5;
/** The first wait before looking at the doorbell again when a silent writer was still open. */
const BELL_RETRY_MIN_MS = 50;

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
}

export interface DeliveryEvent {
  event: ClaimedEvent;
  result: RoundResult;
  /** delivered | rescheduled | failed | returned */
  outcome: 'delivered' | 'rescheduled' | 'failed' | 'returned';
  nextAttemptAt?: Date;
}

interface StreamState {
  userId: string;
  /** Aborts the request in flight when the lease is about to end unrenewed. */
  attempt: AbortController;
  leaseTimer: NodeJS.Timeout | undefined;
  leaseExpiresAt: number;
}

export interface RelayEvents {
  delivery: [DeliveryEvent];
  attempt: [AttemptOutcome];
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
  private bellTimer: NodeJS.Timeout | undefined;
  private bellRetryMs = BELL_RETRY_MIN_MS;
  private claiming = false;
  /** The claim loop running now, if any: a stop waits for it, so no query outlives the relay. */
  private claimRun: Promise<void> | undefined;
  private wakeRequested = false;
  private started = false;
  private stopped: Promise<void> | undefined;
  paused = false;
  /** True while the last claim found the database unreachable. */
  databaseDown = false;

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
    this.writer = new OutcomeWriter(this.pool, this.id, this.logger, Math.max(100, this.settings.batchSize));
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
    await this.refreshPaused();
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
    if (this.options.maintenance) {
      await this.maintain();
      this.every(MAINTENANCE_MS, () => this.maintain());
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
      while (!this.stopController.signal.aborted && !this.paused) {
        const free = this.capacity() + this.reserve() - this.streams.size;
        if (free <= 0) break;
        const limit = Math.min(free, this.settings.batchSize);
        let claimed: ClaimedStream[];
        try {
          claimed = await claimStreams(this.pool, this.id, limit, this.settings.leaseMs, EVENTS_PER_FETCH);
          if (this.databaseDown) this.logger.info('The database answers again; delivering');
          this.databaseDown = false;
        } catch (err) {
          this.noteDatabaseError(err, 'claim');
          this.scheduleWake(1_000);
          return;
        }
        for (const stream of claimed) this.startStream(stream);
        if (claimed.length < limit && this.bellMayBeRung && this.listener) {
          // About to rely on notifications again: answer the doorbell, then look once more for
          // what the writers that stayed silent meanwhile committed.
          this.bellMayBeRung = false;
          await this.answerDoorbell();
          continue;
        }
        if (claimed.length < limit) {
          // Nothing else is due now. Only an empty claim asks when something will be: while
          // streams are in flight, their ends wake the relay again anyway.
          if (claimed.length === 0) await this.sleepUntilNextDue();
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
    if (isConnectionError(err)) {
      this.connectionLost(err as Error);
      if (!this.databaseDown) {
        this.logger.warn({ err: { message: (err as Error).message } }, `The database is unreachable (${what}); retrying`);
      }
      this.databaseDown = true;
    } else {
      this.logger.error({ err: { message: (err as Error).message, code: (err as { code?: string }).code } }, `Database error during ${what}`);
    }
  }

  /**
   * Clears the doorbell (see generate.ts, ringDoorbell). When a silent writer's transaction is still
   * open, its stream is not visible yet: look again after a backoff, up to the poll interval.
   */
  private async answerDoorbell(): Promise<void> {
    let answered = false;
    try {
      answered = await answerDoorbell(this.pool);
    } catch (err) {
      this.noteDatabaseError(err, 'doorbell');
    }
    if (answered) {
      this.bellRetryMs = BELL_RETRY_MIN_MS;
      return;
    }
    if (this.bellTimer) return;
    this.bellTimer = setTimeout(() => {
      this.bellTimer = undefined;
      this.bellMayBeRung = true;
      this.wake();
    }, this.bellRetryMs);
    this.bellRetryMs = Math.min(this.bellRetryMs * 2, this.settings.pollIntervalMs);
  }

  /** Sets a timer for the next stream that becomes due before the next poll. */
  private async sleepUntilNextDue(): Promise<void> {
    try {
      const seconds = await secondsUntilNextDue(this.pool);
      if (seconds !== null && seconds * 1000 < this.settings.pollIntervalMs) this.scheduleWake(Math.max(5, seconds * 1000 + 5));
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

  private startStream(claimed: ClaimedStream): void {
    const state: StreamState = {
      userId: claimed.userId,
      attempt: new AbortController(),
      leaseTimer: undefined,
      leaseExpiresAt: 0,
    };
    this.streams.set(claimed.userId, state);
    // The claim's lease started at the database's now(), a moment before this line: count from here
    // minus nothing, but abort a little early so the request ends before another relay may start.
    this.armLease(state, performance.now());
    const task = this.runStreamInPlace(claimed, state)
      .catch((err: unknown) => {
        this.logger.error({ err: { message: (err as Error).message }, userId: claimed.userId }, 'Stream task failed');
      })
      .finally(() => {
        clearTimeout(state.leaseTimer);
        this.streams.delete(claimed.userId);
        this.tasks.delete(task);
        this.wake();
      });
    this.tasks.add(task);
  }

  private armLease(state: StreamState, renewedAt: number): void {
    state.leaseExpiresAt = renewedAt + this.settings.leaseMs;
    clearTimeout(state.leaseTimer);
    const margin = Math.min(2_000, this.settings.leaseMs / 5);
    state.leaseTimer = setTimeout(() => {
      this.logger.warn({ userId: state.userId }, 'Could not renew the lease in time; aborting the request so no other relay sends in parallel');
      state.attempt.abort();
    }, Math.max(0, state.leaseExpiresAt - margin - performance.now()));
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

  private async runStream(claimed: ClaimedStream, state: StreamState): Promise<void> {
    const { userId } = claimed;
    let gen = claimed.gen;
    let queue = claimed.events;
    let mayHaveMore = queue.length >= EVENTS_PER_FETCH;
    let lastId: string | undefined;
    let sentInTurn = 0;

    for (;;) {
      if (this.stopController.signal.aborted || this.paused || state.attempt.signal.aborted) {
        await this.writer.release({ userId, kind: 'return' });
        return;
      }
      const event = queue.shift();
      if (event === undefined) {
        if (mayHaveMore && lastId !== undefined) {
          const more = await this.retryDatabase(() =>
            fetchMoreEvents(this.pool, this.id, [{ userId, afterId: lastId! }], EVENTS_PER_FETCH),
          );
          const stream = more[0];
          if (stream === undefined) return; // the lease is no longer ours
          gen = stream.gen;
          queue = stream.events;
          mayHaveMore = queue.length >= EVENTS_PER_FETCH;
          if (queue.length > 0) continue;
        }
        const released = await this.writer.release({ userId, kind: 'idle', gen });
        if (released !== 'locked') return;
        // A writer is adding an event to this user right now: wait for its commit and read again.
        await sleep(LOCKED_RETRY_MS, this.stopController.signal);
        mayHaveMore = true;
        lastId ??= '0';
        continue;
      }
      lastId = event.id;
      const done = await this.deliver(event, state);
      if (!done) return;
      if (++sentInTurn >= TURN_EVENTS && this.placeWaiters.length > 0) {
        // A user with a backlog takes turns with the users waiting for a place instead of
        // keeping its place for thousands of events: its lease and order stay as they are.
        sentInTurn = 0;
        this.leaveSendingPlace();
        const waiting = this.takeSendingPlace();
        if (waiting) await waiting;
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
        if (this.stopController.signal.aborted) throw err;
        this.noteDatabaseError(err, 'read');
        await sleep(Math.min(5_000, 100 * 2 ** failures));
      }
    }
  }

  /** One round for one event; true when the stream may go on to its next event. */
  private async deliver(event: ClaimedEvent, state: StreamState): Promise<boolean> {
    const username = typeof event.payload.username === 'string' && event.payload.username !== '' ? event.payload.username : event.userId;
    const webhookId = `evt_${event.webhookId}`;
    const logFields = () => ({
      eventId: event.id,
      webhookId,
      userId: event.userId,
      action: event.action,
      source: event.source,
      round: event.rounds + 1,
    });
    const result = await deliverRound(
      { webhookId, body: buildWebhookBody(event.payload, event.action), username, logFields },
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
    const base = {
      eventId: event.id,
      attempts: result.attempts,
      httpStatus: last?.status ?? null,
      error: last?.kind === 'delivered' ? null : (last?.error ?? null),
      response: last?.responseSnippet ?? null,
      durationMs: result.durationMs,
    };

    if (result.kind === 'delivered') {
      if (this.logger.isLevelEnabled('info')) this.logger.info(
        { ...logFields(), attempt: result.attempts, status: last?.status, durationMs: last?.durationMs },
        `User ${username} synced to backend (action: ${event.action})`,
      );
      this.writer.add({ ...base, status: 'delivered', nextAttemptAt: null });
      this.emit('delivery', { event, result, outcome: 'delivered' });
      return true;
    }
    if (result.kind === 'aborted') {
      if (result.attempts > 0) {
        this.logger.info({ ...logFields(), attempts: result.attempts }, 'Stopped before the round finished; the event stays pending and keeps its webhook-id');
      }
      await this.writer.release({ userId: event.userId, kind: 'return' });
      this.emit('delivery', { event, result, outcome: 'returned' });
      return false;
    }

    this.logger.error(
      { ...logFields(), attempts: result.attempts, status: last?.status, error: last?.error },
      `Failed to sync user ${username} after ${result.attempts} attempts`,
    );
    const next = result.kind === 'retryable'
      ? nextRound(this.settings, event.rounds + 1, event.createdAt, Date.now(), last?.retryAfterMs ?? 0)
      : ({ giveUp: true } as const);
    if (next.giveUp) {
      const why = result.kind === 'rejected'
        ? `the backend rejected it (HTTP ${last?.status})`
        : `it still failed ${Math.round(this.settings.giveUpAfterMs / 60_000)} minutes after capture`;
      this.logger.error(
        { ...logFields(), status: last?.status },
        `Event evt_${event.webhookId} is now failed because ${why}; user ${username} is parked until \`suekk-sync retry --user ${event.userId}\` or \`suekk-sync skip --user ${event.userId}\``,
      );
      await this.releaseFully({ userId: event.userId, kind: 'park' }, { ...base, status: 'failed', nextAttemptAt: null });
      this.emit('delivery', { event, result, outcome: 'failed' });
      return false;
    }
    this.logger.warn(
      { ...logFields(), nextAttemptAt: next.at.toISOString(), delayMs: next.delayMs },
      `Next round for user ${username} in ${Math.round(next.delayMs / 1000)}s at ${next.at.toISOString()}; later events of this user wait behind it`,
    );
    await this.releaseFully(
      { userId: event.userId, kind: 'reschedule', nextAttemptAt: next.at },
      { ...base, status: 'pending', nextAttemptAt: next.at },
    );
    this.emit('delivery', { event, result, outcome: 'rescheduled', nextAttemptAt: next.at });
    return false;
  }

  /**
   * A park or reschedule must land: left undone, the stream would come back due with its failed
   * head skipped and a later event would go first. A writer holding the row only delays it.
   */
  private async releaseFully(release: StreamRelease, outcome: EventOutcome): Promise<void> {
    let result = await this.writer.release(release, outcome);
    while (result === 'locked') {
      await sleep(LOCKED_RETRY_MS);
      result = await this.writer.release(release);
    }
  }

  private readonly onAttempt = (outcome: AttemptOutcome): void => this.recordAttempt(outcome);

  private recordAttempt(outcome: AttemptOutcome): void {
    const change = this.breaker.record(outcome);
    if (change === 'opened') {
      this.logger.error(
        { consecutiveFailures: this.breaker.failures },
        'The backend looks down (consecutive connection errors or 5xx); probing with one user at a time until it answers',
      );
    } else if (change === 'closed') {
      this.logger.info('The backend answers again; delivering at full concurrency');
      this.admitWaiting();
      this.wake();
    }
    this.emit('attempt', outcome);
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

  private async refreshPaused(): Promise<void> {
    const { rows } = await this.pool.query<{ paused: boolean }>('select paused from suekk_sync.state');
    const paused = rows[0]?.paused ?? false;
    if (paused !== this.paused) this.control(paused ? 'pause' : 'resume');
  }

  private async beat(): Promise<void> {
    try {
      await heartbeat(this.pool, { id: this.id, host: hostname(), pid: process.pid, version: VERSION });
      await this.refreshPaused();
    } catch (err) {
      this.noteDatabaseError(err, 'heartbeat');
    }
  }

  private async maintain(): Promise<void> {
    try {
      const revived = await reviveStrandedStreams(this.pool);
      if (revived > 0) this.logger.warn({ revived }, 'Found users with pending events but no due stream; made them due');
      let pruned = 0;
      for (let batch = 0; batch < 100; batch++) {
        const n = await pruneDelivered(this.pool, this.settings.retentionMs);
        pruned += n;
        if (n === 0) break;
      }
      if (pruned > 0) this.logger.info({ pruned }, 'Pruned delivered events past retention');
      await pruneIdleStreams(this.pool);
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
    if (this.dueTimer) clearTimeout(this.dueTimer);
    if (this.bellTimer) clearTimeout(this.bellTimer);
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

export type { EventOutcome };
