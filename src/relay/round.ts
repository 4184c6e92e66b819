/**
 * One round: up to `maxAttempts` attempts of one event, `backoffMs` then doubling between them,
 * as the reference's 3-attempt backoff. p-retry runs the attempts; the outcome of the round says
 * what happens to the event next (delivered, rescheduled, failed, or handed back on shutdown).
 */
import pRetry, { AbortError } from 'p-retry';
import type { Logger } from '../logger.ts';
import type { AttemptOutcome, WebhookSender } from '../webhook/sender.ts';
import type { RateLimiter } from './rate-limit.ts';
import { sleep } from '../sleep.ts';

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
  /** Built only when a line is logged: most rounds log nothing below info. */
  logFields: () => Record<string, unknown>;
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

  const attempt = async (attemptNumber: number): Promise<void> => {
    const slot = ctx.limiter.take(ctx.stopSignal);
    if (slot !== true && !(await slot)) throw new AbortError('stopping');
    if (ctx.attemptSignal.aborted) throw new AbortError('lease ending');
    attempts = attemptNumber;
    last = await ctx.sender.send({ webhookId: request.webhookId, body: request.body, signal: ctx.attemptSignal });
    ctx.onAttempt?.(last);
    if (last.kind === 'delivered') return;
    if (last.error === 'aborted') throw new AbortError('aborted');
    logger.warn(
      {
        ...request.logFields(),
        attempt: attemptNumber,
        status: last.status,
        durationMs: last.durationMs,
        error: last.error,
      },
      `Failed to sync user ${request.username} to backend: ${last.error ?? `HTTP ${last.status}`}`,
    );
    if (last.kind === 'rejected') throw new AbortError(new FailedAttempt(last));
    throw new FailedAttempt(last);
  };
  // Says what comes next and waits any Retry-After beyond the backoff the caller waits itself.
  const beforeNext = async (failedAttempt: number, backoff: number): Promise<void> => {
    const retryAfter = last?.retryAfterMs ?? 0;
    const wait = Math.max(backoff, retryAfter);
    logger.info(
      { ...request.logFields(), attempt: failedAttempt + 1, waitMs: wait },
      `Retrying sync in ${formatSeconds(wait)} (attempt ${failedAttempt + 1}/${maxAttempts})`,
    );
    if (retryAfter > backoff) await sleep(retryAfter - backoff, ctx.stopSignal);
  };

  try {
    try {
      // The first attempt runs without p-retry: on a healthy backend nearly every event is
      // delivered at once, and p-retry's set-up per call cost a tenth of the relay's CPU per event.
      await attempt(1);
    } catch (err) {
      if (err instanceof AbortError || maxAttempts <= 1) throw err;
      await beforeNext(1, ctx.backoffMs);
      await sleep(ctx.backoffMs, ctx.stopSignal);
      // Attempts 2.. under p-retry, waiting 2×, 4×… the backoff: the same schedule as one p-retry
      // run over all attempts.
      await pRetry((n) => attempt(n + 1), {
        retries: maxAttempts - 2,
        factor: 2,
        minTimeout: ctx.backoffMs * 2,
        randomize: false,
        signal: ctx.stopSignal,
        onFailedAttempt: async ({ attemptNumber, retriesLeft }) => {
          if (retriesLeft <= 0) return;
          await beforeNext(attemptNumber + 1, ctx.backoffMs * 2 ** attemptNumber);
        },
      });
    }
  } catch {
    // Whatever ended the round early, the last outcome says what happened.
  }
  if (last?.kind === 'delivered') return result('delivered');
  if (
    last === undefined ||
    last.error === 'aborted' ||
    (ctx.stopSignal.aborted && attempts < maxAttempts && last.kind === 'retryable')
  ) {
    return result('aborted');
  }
  return result(last.kind === 'rejected' ? 'rejected' : 'retryable');
}

function formatSeconds(ms: number): string {
  const s = ms / 1000;
  return `${Number.isInteger(s) ? s : s.toFixed(s < 1 ? 2 : 1)}s`;
}
