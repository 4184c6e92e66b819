/**
 * Waiting for "the first round" of some events. A user's events go in order, so an event can only
 * have its round once those ahead of it were delivered: an event is settled when it was delivered,
 * superseded, failed or skipped, when it had a round, or when an earlier event of its user had a round that did
 * not deliver (it now waits behind that one, which can take until the next round).
 */
import type { Pool } from '../db/pool.ts';
import { eventStates, type EventState } from '../db/outbox-queries.ts';
import { sleep } from '../relay/sleep.ts';

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
