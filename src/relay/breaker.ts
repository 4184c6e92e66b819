/**
 * Tells a backend that is down from one that rejects a few events: after `threshold` consecutive
 * connection errors or 5xx the relay stops claiming and probes with one stream at a time, so an
 * outage does not burn every user's rounds. Any answer that is not a 5xx closes it again.
 */
import type { AttemptOutcome } from '../webhook/sender.ts';

export class Breaker {
  private consecutive = 0;
  constructor(private readonly threshold: number) {}

  get open(): boolean {
    return this.consecutive >= this.threshold;
  }

  get failures(): number {
    return this.consecutive;
  }

  /** Returns 'opened' or 'closed' when this outcome changed the state. */
  record(outcome: AttemptOutcome): 'opened' | 'closed' | undefined {
    if (outcome.error === 'aborted') return undefined;
    const wasOpen = this.open;
    const down = outcome.status === undefined ? outcome.kind === 'retryable' : outcome.status >= 500;
    this.consecutive = down ? this.consecutive + 1 : 0;
    if (!wasOpen && this.open) return 'opened';
    if (wasOpen && !this.open) return 'closed';
    return undefined;
  }
}
