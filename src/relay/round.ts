/**
 * One round: up to `maxAttempts` attempts of one event, `backoffMs` then doubling between them,
 * as the reference's 3-attempt backoff. p-retry runs the attempts; the outcome of the round says
 * what happens to the event next (delivered, rescheduled, failed, or handed back on shutdown).
 */
import pRetry, { AbortError } from 'p-retry';
import type { Logger } from '../logger.ts';
import type { AttemptOutcome, WebhookSender } from '../webhook/sender.ts';
import type { RateLimiter } from './rate-limit.ts';
import { sleep } from './sleep.ts';

export type RoundKind = 'delivered' | 'retryable' | 'rejected' | 'aborted';

export interface RoundResult {
  kind: RoundKind;
  attempts: number;
  last: AttemptOutcome | undefined;
  durationMs: number;
}

export interface RoundRequest {
  webhookId: string;
  body: string;
  /** For log lines: the reference logs by username. */
  username: string;
  logFields: Record<string, unknown>;
}

export interface RoundContext {
  sender: WebhookSender;
  logger: Logger;
  limiter: RateLimiter;
  maxAttempts: number;
  backoffMs: number;
  /** Cuts the waits between attempts (shutdown); an attempt in flight still finishes. */
  stopSignal: AbortSignal;
  /** Aborts the attempt in flight (the lease is about to run out). */
  attemptSignal: AbortSignal;
  onAttempt?: (outcome: AttemptOutcome) => void;
}

class FailedAttempt extends Error {
  constructor(readonly outcome: AttemptOutcome) {
    super(outcome.error ?? `HTTP ${outcome.status}`);
  }
}

export async function deliverRound(request: RoundRequest, ctx: RoundContext): Promise<RoundResult> {
  let last: AttemptOutcome | undefined;
  let attempts = 0;
  const started = performance.now();
  const result = (kind: RoundKind): RoundResult => ({
    kind,
    attempts,
    last,
    durationMs: Math.round(performance.now() - started),
  });
  const { logger, maxAttempts } = ctx;

  try {
    await pRetry(
      async (attemptNumber) => {
        if (!(await ctx.limiter.take(ctx.stopSignal))) throw new AbortError('stopping');
        if (ctx.attemptSignal.aborted) throw new AbortError('lease ending');
        attempts = attemptNumber;
        last = await ctx.sender.send({ webhookId: request.webhookId, body: request.body, signal: ctx.attemptSignal });
        ctx.onAttempt?.(last);
        const fields = {
          ...request.logFields,
          attempt: attemptNumber,
          status: last.status,
          durationMs: last.durationMs,
        };
        if (last.kind === 'delivered') return;
        if (last.error === 'aborted') throw new AbortError('aborted');
        logger.warn(
          { ...fields, error: last.error },
          `Failed to sync user ${request.username} to backend: ${last.error ?? `HTTP ${last.status}`}`,
        );
        if (last.kind === 'rejected') throw new AbortError(new FailedAttempt(last));
        throw new FailedAttempt(last);
      },
      {
        retries: maxAttempts - 1,
        factor: 2,
        minTimeout: ctx.backoffMs,
        randomize: false,
        signal: ctx.stopSignal,
        onFailedAttempt: async ({ attemptNumber, retriesLeft }) => {
          if (retriesLeft <= 0) return;
          const backoff = ctx.backoffMs * 2 ** (attemptNumber - 1);
          const retryAfter = last?.retryAfterMs ?? 0;
          const wait = Math.max(backoff, retryAfter);
          logger.info(
            { ...request.logFields, attempt: attemptNumber + 1, waitMs: wait },
            `Retrying sync in ${formatSeconds(wait)} (attempt ${attemptNumber + 1}/${maxAttempts})`,
          );
          // p-retry waits `backoff` itself; a longer Retry-After adds the difference.
          if (retryAfter > backoff) await sleep(retryAfter - backoff, ctx.stopSignal);
        },
      },
    );
  } catch {
    // Whatever ended the round early, the last outcome says what happened.
  }
  if (last?.kind === 'delivered') return result('delivered');
  if (last === undefined || last.error === 'aborted' || (ctx.stopSignal.aborted && attempts < maxAttempts && last.kind === 'retryable')) {
    return result('aborted');
  }
  return result(last.kind === 'rejected' ? 'rejected' : 'retryable');
}

function formatSeconds(ms: number): string {
  const s = ms / 1000;
  return `${Number.isInteger(s) ? s : s.toFixed(s < 1 ? 2 : 1)}s`;
}
