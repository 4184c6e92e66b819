/** When an event that failed a round gets its next one, or whether it has failed for good. */
import type { RelaySettings } from '../config.ts';

export type NextRound = { giveUp: false; delayMs: number; at: Date } | { giveUp: true };

/**
 * `roundsDone` counts the round that just failed. The schedule's last entry repeats. An event
 * whose next round would start after `giveUpAfterMs` from capture fails now: waiting cannot help.
 */
export function nextRound(
  settings: Pick<RelaySettings, 'retryScheduleMs' | 'giveUpAfterMs'>,
  roundsDone: number,
  createdAt: Date,
  now: number = Date.now(),
  retryAfterMs = 0,
): NextRound {
  const schedule = settings.retryScheduleMs;
  const base = schedule[Math.min(Math.max(roundsDone, 1), schedule.length) - 1] ?? 30_000;
  const delayMs = Math.max(base, retryAfterMs);
  if (now + delayMs - createdAt.getTime() > settings.giveUpAfterMs) return { giveUp: true };
  return { giveUp: false, delayMs, at: new Date(now + delayMs) };
}
