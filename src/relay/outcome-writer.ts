/**
 * Group commit for the ends of turns: the first release is written at once, and whatever arrives
 * while a write is under way goes together in the next one, so a busy relay writes one statement per
 * batch of streams and an idle one adds no delay. A write that fails because the database is gone is
 * retried until it lands: a stream's progress is never dropped by a relay that is still running.
 */
import type { Logger } from '../logger.ts';
import { isConnectionError, type Pool } from '../db/pool.ts';
import { releaseStreams, type ReleaseResult, type StreamRelease } from '../db/relay-queries.ts';
import { sleep } from '../sleep.ts';

interface Pending {
  release: StreamRelease;
  resolve: (result: ReleaseResult) => void;
}

export class OutcomeWriter {
  private queue: Pending[] = [];
  private running: Promise<void> | undefined;
  private abandoned = false;

  constructor(
    private readonly pool: Pool,
    private readonly relayId: string,
    private readonly logger: Logger,
    private readonly options: {
      maxBatch: number;
      leaseMs: number;
      perStream: number;
      /** Whether a failed write means the schema is gone (uninstalled): then nothing can be recorded. */
      schemaGone?: (err: unknown) => Promise<boolean>;
    },
  ) {}

  /** Records the turn; resolves with whether the stream was handed back, goes on, or was not ours. */
  release(release: StreamRelease): Promise<ReleaseResult> {
    return new Promise((resolve) => {
      this.queue.push({ release, resolve });
      this.kick();
    });
  }

  get backlog(): number {
    return this.queue.length;
  }

  /** Stops retrying (a stop whose deadline passed with the database gone); queued turns stay unwritten. */
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
      const batch = this.queue.splice(0, this.options.maxBatch);
      try {
        const results = await releaseStreams(
          this.pool,
          this.relayId,
          batch.map((p) => p.release),
          this.options,
        );
        failures = 0;
        const lost = results.filter((r) => r.outcome === 'lost');
        if (lost.length > 0) {
          this.logger.warn(
            {
              lost: lost.length,
              delivered: lost.reduce(
                (n, r) => n + (batch.find((p) => p.release.userId === r.userId)?.release.delivered.length ?? 0),
                0,
              ),
            },
            'Some turns were not recorded: another relay took those users after this relay lost its lease; what they delivered will be sent again',
          );
        }
        batch.forEach((p, i) => p.resolve(results[i]!));
      } catch (err) {
        if (await this.options.schemaGone?.(err)) {
          // The streams and their leases went with the schema: each turn ends as not ours.
          for (const p of [...batch, ...this.queue.splice(0)])
            p.resolve({ userId: p.release.userId, outcome: 'lost', events: [] });
          continue;
        }
        // Put the batch back in front, in order, and try again: the database may be restarting.
        this.queue.unshift(...batch);
        failures++;
        const level = isConnectionError(err) ? 'warn' : 'error';
        this.logger[level](
          {
            err: { message: (err as Error).message, code: (err as { code?: string }).code },
            retryInMs: backoff(failures),
          },
          'Could not record delivery progress in the database; retrying',
        );
        await sleep(backoff(failures));
      }
    }
  }
}

function backoff(failures: number): number {
  return Math.min(5_000, 100 * 2 ** Math.min(failures, 6));
}
