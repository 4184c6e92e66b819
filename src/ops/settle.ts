/**
 * Waiting for "the first round" of some events. A user's events go in order, so an event can only
 * have its round once those ahead of it were delivered: an event is settled when it was delivered,
 * failed or skipped, when it had a round, or when an earlier event of its user had a round that did
 * not deliver (it now waits behind that one, which can take until the next round).
 */
import type { Pool } from '../db/pool.ts';
import { sleep } from '../relay/sleep.ts';

export interface EventState {
  id: string;
  webhookId: string;
  userId: string;
  username: string;
  action: string;
  status: 'pending' | 'delivered' | 'failed' | 'skipped';
  attempts: number;
  rounds: number;
  httpStatus: number | null;
  error: string | null;
  response: string | null;
  durationMs: number | null;
  nextAttemptAt: Date;
}

export async function eventStates(pool: Pool, ids: string[]): Promise<EventState[]> {
  // ORDER BY prefers the output column "id", which is text here ('10' before '9'); events.id is not.
  const { rows } = await pool.query<EventState>(
    `select id::text, 'evt_' || webhook_id as "webhookId", user_id as "userId",
            coalesce(payload->>'username', '') as username, action, status, attempts, rounds,
            last_status as "httpStatus", last_error as error, last_response as response,
            duration_ms as "durationMs", next_attempt_at as "nextAttemptAt"
       from suekk_sync.events where id = any($1::bigint[]) order by events.id`,
    [ids],
  );
  return rows;
}

export interface Target {
  id: string;
  /** Rounds the event had when the command made it due. */
  roundsBefore: number;
}

export type Verdict = 'delivered' | 'failed' | 'skipped' | 'waiting' | 'blocked' | 'queued';

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
    if (s.status === 'delivered' || s.status === 'skipped') {
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

export interface SettleOptions {
  pollMs?: number;
  signal?: AbortSignal;
  onProgress?: (verdicts: Map<string, Verdict>) => void;
}

/** Polls until no target is queued (or the signal ends the wait); returns the final states. */
export async function waitForFirstRound(
  pool: Pool,
  targets: Target[],
  options: SettleOptions = {},
): Promise<{ states: EventState[]; verdicts: Map<string, Verdict> }> {
  const ids = targets.map((t) => t.id);
  for (;;) {
    const states = await eventStates(pool, ids);
    const verdicts = judge(targets, states);
    options.onProgress?.(verdicts);
    const queued = [...verdicts.values()].some((v) => v === 'queued');
    if (!queued || options.signal?.aborted) return { states, verdicts };
    await sleep(options.pollMs ?? 100, options.signal);
  }
}
