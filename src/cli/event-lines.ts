/**
 * How push, retry and resync tell people what became of events: a line (or a JSON object) per
 * event, the summary of a batch of outcomes, and the sentence of a wait that ended early.
 */
import { formatDuration } from '../duration.ts';
import { WorkFailed } from '../errors.ts';
import { wentOut, type EventState, type Verdict } from '../ops/settle.ts';

/** "1 event", "2 events". */
export const count = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;

export function describeState(s: EventState, verdict: Verdict, reason?: string): string {
  const http = s.httpStatus === null ? '' : ` HTTP ${s.httpStatus}`;
  const took = s.durationMs === null ? '' : ` in ${s.durationMs} ms`;
  const detail =
    verdict === 'delivered' || verdict === 'skipped'
      ? ''
      : verdict === 'superseded'
        ? ` — carried by ${s.supersededBy} with a later state`
        : verdict === 'failed'
          ? ` — ${s.error ?? 'failed'}`
          : verdict === 'waiting'
            ? ` — ${s.error ?? 'not delivered'}${reason === undefined ? '' : `; ${reason}`}`
            : ` — ${reason ?? 'not sent yet'}`;
  const body = s.response && verdict !== 'delivered' ? `\n    response: ${s.response.slice(0, 200)}` : '';
  return `${verdict.padEnd(9)} ${s.action.padEnd(7)} ${s.username || s.userId} ${s.webhookId}${http}${took}${detail}${body}`;
}

export function stateJson(s: EventState, verdict: Verdict, reason?: string) {
  return {
    eventId: s.id,
    webhookId: s.webhookId,
    userId: s.userId,
    username: s.username,
    action: s.action,
    outcome: verdict,
    status: s.status,
    attempts: s.attempts,
    rounds: s.rounds,
    httpStatus: s.httpStatus,
    durationMs: s.durationMs,
    error: s.error,
    response: s.response,
    supersededBy: s.supersededBy,
    // Only a round still to come: a time already past is no "next round".
    nextAttemptAt:
      verdict === 'waiting' && s.nextAttemptAt.getTime() > Date.now() ? s.nextAttemptAt.toISOString() : null,
    reason: reason ?? null,
  };
}

/** "0 of 2 events delivered: 1 failed, 1 waits behind an earlier event of its user." */
export function outcomeSummary(verdicts: Verdict[]): string {
  const n = (v: Verdict) => verdicts.filter((x) => x === v).length;
  const through = verdicts.filter(wentOut).length;
  const parts = [
    n('failed') > 0 ? `${n('failed')} failed` : '',
    n('waiting') > 0 ? `${n('waiting')} ${n('waiting') === 1 ? 'waits' : 'wait'} for a next round` : '',
    n('blocked') > 0
      ? `${n('blocked')} ${n('blocked') === 1 ? 'waits behind an earlier event of its user' : 'wait behind an earlier event of their users'}`
      : '',
    n('queued') > 0 ? `${n('queued')} not sent yet` : '',
    n('skipped') > 0 ? `${n('skipped')} skipped meanwhile` : '',
  ].filter((p) => p !== '');
  return `${through} of ${count(verdicts.length, 'event')} delivered${parts.length > 0 ? `: ${parts.join(', ')}` : ''}.`;
}

/** Why a wait ended early, for the one sentence printed when it did: the reasons of the events first in line. */
export function stillPending(
  events: { state: EventState; verdict: Verdict }[],
  reasons: Map<string, string>,
  how: { interrupted: boolean; waitedMs: number },
): WorkFailed {
  const pending = events.filter((e) => e.verdict === 'queued' || e.verdict === 'blocked');
  const why = [
    ...new Set(events.filter((e) => e.verdict === 'queued').map((e) => reasons.get(e.state.id) ?? 'not sent yet')),
  ];
  const start = how.interrupted ? 'Stopped waiting' : `Gave up waiting after ${formatDuration(how.waitedMs)}`;
  return new WorkFailed(
    `${start} with ${count(pending.length, 'event')} still pending (${why.join('; ')}); ${pending.length === 1 ? 'it stays' : 'they stay'} queued and ${pending.length === 1 ? 'goes' : 'go'} once that clears.`,
  );
}
