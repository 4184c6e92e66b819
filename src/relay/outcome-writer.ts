/**
 * Group commit for outcomes: the first outcome is written at once, and whatever arrives while a
 * write is under way goes together in the next one, so a busy relay writes one transaction per
 * batch and an idle one adds no delay. A write that fails because the database is gone is retried
 * until it lands: an outcome is never dropped by a relay that is still running.
 */
import type { Logger } from '../logger.ts';
import { isConnectionError, type Pool } from '../db/pool.ts';
import { recordOutcomes, stillHeld, type EventOutcome, type StreamRelease } from '../db/relay-queries.ts';
import { sleep } from './sleep.ts';

/** released: done; locked: a writer holds the row right now; lost: the lease is no longer ours. */
export type ReleaseResult = 'released' | 'locked' | 'lost';

interface PendingRelease {
  release: StreamRelease;
  resolve: (result: ReleaseResult) => void;
}

type Entry = { outcome: EventOutcome } | { release: PendingRelease };

export class OutcomeWriter {
  /**
   * One queue in arrival order: a batch may end anywhere, but a stream's release never lands in
   * an earlier transaction than its outcomes (it would drop the lease they are checked against).
   */
  private queue: Entry[] = [];
  private running: Promise<void> | undefined;
  /** Called with the event ids whose outcome counted (the lease was still ours). */
  onRecorded: ((ids: Set<string>, outcomes: EventOutcome[]) => void) | undefined;

  constructor(
    private readonly pool: Pool,
    private readonly relayId: string,
    private readonly logger: Logger,
    private readonly maxBatch: number,
  ) {}

  add(outcome: EventOutcome): void {
    this.queue.push({ outcome });
    this.kick();
  }

  /** With an outcome, both land in the same transaction (a failed event and its parked user). */
  release(release: StreamRelease, outcome?: EventOutcome): Promise<ReleaseResult> {
    return new Promise((resolve) => {
      if (outcome) this.queue.push({ outcome });
      this.queue.push({ release: { release, resolve } });
      this.kick();
    });
  }

  get backlog(): number {
    return this.queue.length;
  }

  private abandoned = false;

  /** Stops retrying (a stop whose deadline passed with the database gone); queued entries stay unwritten. */
  abandon(): void {
    this.abandoned = true;
  }

  /** Resolves once everything queued so far is written. */
  async drain(): Promise<void> {
    while (this.running) await this.running;
  }

  private kick(): void {
    this.running ??= this.run().finally(() => {
      this.running = undefined;
      if (this.backlog > 0 && !this.abandoned) this.kick();
    });
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (this.backlog > 0 && !this.abandoned) {
      const entries = this.queue.splice(0, this.maxBatch);
      const outcomes = entries.flatMap((e) => ('outcome' in e ? [e.outcome] : []));
      const releases = entries.flatMap((e) => ('release' in e ? [e.release] : []));
      try {
        const result = await recordOutcomes(
          this.pool,
          this.relayId,
          outcomes,
          releases.map((r) => r.release),
        );
        const held = result.releasePending.length > 0 ? await stillHeld(this.pool, this.relayId, result.releasePending) : new Set<string>();
        failures = 0;
        const recorded = new Set(result.recorded);
        if (recorded.size < outcomes.length) {
          this.logger.warn(
            { lost: outcomes.length - recorded.size },
            'Some outcomes were not recorded: another relay took those users after this relay lost its lease; they will be delivered again',
          );
        }
        this.onRecorded?.(recorded, outcomes);
        const pending = new Set(result.releasePending);
        for (const r of releases) {
          const id = r.release.userId;
          r.resolve(!pending.has(id) ? 'released' : held.has(id) ? 'locked' : 'lost');
        }
      } catch (err) {
        // Put the batch back in front, in order, and try again: the database may be restarting.
        this.queue.unshift(...entries);
        failures++;
        const level = isConnectionError(err) ? 'warn' : 'error';
        this.logger[level](
          { err: { message: (err as Error).message, code: (err as { code?: string }).code }, retryInMs: backoff(failures) },
          'Could not record delivery outcomes in the database; retrying',
        );
        await sleep(backoff(failures));
      }
    }
  }
}

function backoff(failures: number): number {
  return Math.min(5_000, 100 * 2 ** Math.min(failures, 6));
}
