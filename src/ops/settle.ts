/**
 * Waiting for "the first round" of some events. A user's events go in order, so an event can only
 * have its round once those ahead of it were delivered: an event is settled when it was delivered,
 * superseded, failed or skipped, when it had a round, or when an earlier event of its user had a round that did
 * not deliver (it now waits behind that one, which can take until the next round).
 */
import type { Pool } from '../db/pool.ts';
import { eventStates, type EventState } from '../db/outbox-queries.ts';
import { sleep } from '../sleep.ts';
import { RELAY_ALIVE_SECONDS } from '../db/schema.ts';

export type { EventState };

export interface Target {
  id: string;
  /** Rounds the event had when the command made it due. */
  roundsBefore: number;
}

export type Verdict = 'delivered' | 'superseded' | 'failed' | 'skipped' | 'waiting' | 'blocked' | 'queued';

/** The verdicts of an event whose state reached the backend (superseded: carried by a later call). */
export function wentOut(verdict: Verdict): boolean {
  return verdict === 'delivered' || verdict === 'superseded';
}

/** Each target's verdict: queued means it has not had its round yet. */
export function judge(targets: Target[], states: EventState[]): Map<string, Verdict> {
  const before = new Map(targets.map((t) => [t.id, t.roundsBefore]));
  const verdicts = new Map<string, Verdict>();
  const blockedUsers = new Set<string>();
  for (const s of states) {
    if (blockedUsers.has(s.userId)) {
      verdicts.set(s.id, 'blocked');
      continue;
    }
    if (s.status === 'delivered' || s.status === 'skipped' || s.status === 'superseded') {
      verdicts.set(s.id, s.status);
      continue;
    }
    if (s.status === 'failed') {
      verdicts.set(s.id, 'failed');
      blockedUsers.add(s.userId);
      continue;
    }
    if (s.rounds > (before.get(s.id) ?? 0)) {
      verdicts.set(s.id, 'waiting');
      blockedUsers.add(s.userId);
      continue;
    }
    verdicts.set(s.id, 'queued');
    blockedUsers.add(s.userId); // later events of this user cannot move before this one
  }
  return verdicts;
}

/** How push and retry wait for their events. */
export interface WaitOptions {
  /** Wait for the outcome (default); false only enqueues, and then nothing needs to deliver now. */
  wait?: boolean;
  /** Give up waiting after this long (default: as long as it takes). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Delivery is paused (true) or resumed (false) while the command waits. */
  onPausedChange?: (paused: boolean) => void;
}

export interface SettleOptions {
  pollMs?: number;
  signal?: AbortSignal;
  /** Give up after this long (default: wait as long as it takes). */
  timeoutMs?: number;
  onProgress?: (verdicts: Map<string, Verdict>) => void;
  /** Delivery was paused (true) or resumed (false) while waiting; first called when paused at the start. */
  onPausedChange?: (paused: boolean) => void;
}

export interface Settled {
  states: EventState[];
  verdicts: Map<string, Verdict>;
  /** The wait ended before every target had its round: the time ran out, or the signal. */
  timedOut: boolean;
}

/** Whether delivery is paused (pause/resume): every relay, and a command delivering inline, obeys it. */
export async function deliveryPaused(pool: Pool): Promise<boolean> {
  const { rows } = await pool.query<{ paused: boolean }>(
    'select coalesce((select paused from suekk_sync.state), false) as paused',
  );
  return rows[0]?.paused ?? false;
}

/** Polls until no target is queued (or the time runs out, or the signal ends the wait); returns the final states. */
export async function waitForFirstRound(pool: Pool, targets: Target[], options: SettleOptions = {}): Promise<Settled> {
  const ids = targets.map((t) => t.id);
  const deadline = options.timeoutMs === undefined ? Number.POSITIVE_INFINITY : performance.now() + options.timeoutMs;
  let paused = false;
  for (;;) {
    const states = await eventStates(pool, ids);
    const verdicts = judge(targets, states);
    options.onProgress?.(verdicts);
    const queued = [...verdicts.values()].some((v) => v === 'queued');
    if (!queued) return { states, verdicts, timedOut: false };
    if (options.signal?.aborted || performance.now() >= deadline) return { states, verdicts, timedOut: true };
    if (options.onPausedChange) {
      const now = await deliveryPaused(pool);
      if (now !== paused) options.onPausedChange(now);
      paused = now;
    }
    await sleep(Math.min(options.pollMs ?? 100, Math.max(0, deadline - performance.now())), options.signal);
  }
}

/**
 * The targets after their command: waited for while something delivers them, or read as they
 * stand when the command only enqueued (--no-wait).
 */
export async function settleTargets(
  pool: Pool,
  targets: Target[],
  delivering: boolean,
  options: WaitOptions,
): Promise<Settled> {
  if (delivering) {
    return waitForFirstRound(pool, targets, {
      signal: options.signal,
      timeoutMs: options.timeoutMs,
      onPausedChange: options.onPausedChange,
    });
  }
  const states = await eventStates(
    pool,
    targets.map((t) => t.id),
  );
  return { states, verdicts: judge(targets, states), timedOut: false };
}

/** What an operator needs to know about why events are not through yet. */
export interface DeliveryConditions {
  paused: boolean;
  relaysAlive: number;
  /** Since when a live relay has seen the backend down; null while it answers. */
  backendDownSince: Date | null;
  /** Per user: when its stream is due again (its next round), and whether a relay holds it now. */
  streams: Map<string, { dueAt: Date | null; leased: boolean }>;
  now: Date;
}

async function deliveryConditions(pool: Pool, userIds: string[]): Promise<DeliveryConditions> {
  const { rows } = await pool.query<{ paused: boolean; relays: number; down_since: Date | null; now: Date }>(
    `select coalesce((select paused from suekk_sync.state), false) as paused,
            (select count(*)::int from suekk_sync.relays where heartbeat_at > now() - make_interval(secs => $1)) as relays,
            (select min(backend_down_since) from suekk_sync.relays
              where heartbeat_at > now() - make_interval(secs => $1)) as down_since,
            now() as now`,
    [RELAY_ALIVE_SECONDS],
  );
  const { rows: streams } = await pool.query<{ user_id: string; due_at: Date | null; leased: boolean }>(
    `select user_id, due_at, coalesce(locked_by is not null and locked_until > now(), false) as leased
       from suekk_sync.streams where user_id = any($1::text[])`,
    [userIds],
  );
  const row = rows[0]!;
  return {
    paused: row.paused,
    relaysAlive: row.relays,
    backendDownSince: row.down_since,
    streams: new Map(streams.map((s) => [s.user_id, { dueAt: s.due_at, leased: s.leased }])),
    now: row.now,
  };
}

/**
 * Why an event that is not through yet still waits, in words an operator can act on; undefined
 * for one that is through. Asked when the command is done waiting, so a command that delivered by
 * itself counts for nothing: once it exits, only relays deliver.
 */
export function pendingReason(s: EventState, verdict: Verdict, c: DeliveryConditions): string | undefined {
  if (verdict === 'delivered' || verdict === 'superseded' || verdict === 'skipped' || verdict === 'failed')
    return undefined;
  if (verdict === 'blocked') return 'waits behind an earlier event of this user';
  const stream = c.streams.get(s.userId);
  const nextRound = verdict === 'waiting' ? s.nextAttemptAt : (stream?.dueAt ?? null);
  const stopped = c.paused
    ? 'delivery is paused; run `suekk-sync resume`'
    : c.relaysAlive === 0
      ? 'no relay is running; start `suekk-sync relay`'
      : undefined;
  // A round that is already due is not "next": say what holds it instead.
  if (nextRound !== null && nextRound.getTime() > c.now.getTime()) {
    const down =
      c.backendDownSince === null
        ? ''
        : `, and the backend looks down to the relays since ${c.backendDownSince.toISOString()}`;
    const inSeconds = Math.ceil((nextRound.getTime() - c.now.getTime()) / 1000);
    return `waits for its next round at ${nextRound.toISOString()} (in ${inSeconds}s)${down}${stopped === undefined ? '' : `; ${stopped}`}`;
  }
  if (stopped !== undefined) return stopped;
  if (c.backendDownSince !== null) {
    return `the backend looks down to the relays since ${c.backendDownSince.toISOString()}; they send it once a probe gets through`;
  }
  if (stream?.leased) return 'being sent right now';
  return verdict === 'waiting' ? 'due again now, not sent yet' : 'not sent yet';
}

/** Why each of these events that is not through yet still waits, by event id. */
export async function explainPending(
  pool: Pool,
  states: EventState[],
  verdicts: Map<string, Verdict>,
): Promise<Map<string, string>> {
  const conditions = await deliveryConditions(pool, [...new Set(states.map((s) => s.userId))]);
  const reasons = new Map<string, string>();
  for (const s of states) {
    const why = pendingReason(s, verdicts.get(s.id)!, conditions);
    if (why !== undefined) reasons.set(s.id, why);
  }
  return reasons;
}
