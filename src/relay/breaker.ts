/**
 * Tells a backend that is down from one that rejects a few events: after `threshold` consecutive
 * attempts that got no answer or a backend-down status (408, 425, 429, 5xx) the relay claims one
 * user at a time and probes on a fixed cadence, so an outage does not burn every user's rounds.
 * Any other answer (a 2xx, or a 4xx refusing that one event) says the backend is up and closes it.
 */
import { BACKEND_DOWN_STATUSES } from '../db/schema.ts';
import type { AttemptOutcome } from '../webhook/sender.ts';

function backendLooksDown(outcome: AttemptOutcome): boolean {
  if (outcome.status === undefined) return outcome.kind === 'retryable';
  return outcome.status >= 500 || (BACKEND_DOWN_STATUSES as readonly number[]).includes(outcome.status);
}

export class Breaker {
  private consecutive = 0;
  constructor(private readonly threshold: number) {}

  get open(): boolean {
    return this.consecutive >= this.threshold;
  }

  get failures(): number {
    return this.consecutive;
  }

  /** Opens it without failures of this relay's own: another relay, or the outbox, says the backend is down. */
  trip(): void {
    this.consecutive = Math.max(this.consecutive, this.threshold);
  }

  /** Returns 'opened' or 'closed' when this outcome changed the state. */
  record(outcome: AttemptOutcome): 'opened' | 'closed' | undefined {
    if (outcome.error === 'aborted') return undefined;
    const wasOpen = this.open;
    const down = backendLooksDown(outcome);
    this.consecutive = down ? this.consecutive + 1 : 0;
    if (!wasOpen && this.open) return 'opened';
    if (wasOpen && !this.open) return 'closed';
    return undefined;
  }
}
