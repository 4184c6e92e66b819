/**
 * How pausing is told to people: the sentence pause and resume end with, and the notice of a
 * command that waits for deliveries while delivery is paused.
 */
import type { PauseResult } from '../ops/pause.ts';
import { formatDuration } from '../duration.ts';

function waiting(n: number): string {
  return `${n} event${n === 1 ? '' : 's'}`;
}

export function describePause(r: PauseResult): string {
  if (r.paused) {
    return r.changed
      ? `Paused: relays finish the users in flight and claim no more until \`suekk-sync resume\`; changes are still captured (${waiting(r.backlog)} waiting).`
      : 'Already paused; run `suekk-sync resume` to deliver again.';
  }
  if (!r.changed) return 'Not paused; relays are delivering as usual.';
  return r.relaysAlive > 0
    ? `Resumed: relays deliver the ${waiting(r.backlog)} waiting now.`
    : `Resumed, but no relay is alive: start \`suekk-sync relay\` to deliver the ${waiting(r.backlog)} waiting.`;
}

/** The one line a command that waits prints when delivery is paused. */
export function pausedNotice(waitMs?: number): (paused: boolean) => void {
  return (paused) => {
    if (!paused) return;
    const bound = waitMs === undefined ? '' : `; waiting at most ${formatDuration(waitMs)}`;
    process.stderr.write(`Delivery is paused, so nothing is sent until someone runs \`suekk-sync resume\`${bound}.\n`);
  };
}
