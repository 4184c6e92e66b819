/**
 * ceiling: the most any sender could deliver on this machine to this receiver. Raw undici POSTs
 * (undici's dispatch, one Pool, the relay's connection count and concurrency, the same body bytes and headers,
 * no database, no signing, no bookkeeping), so relay ÷ ceiling is the share of the possible that
 * the relay achieves. Measured in several windows after a warm-up; the median window counts.
 */
import { randomUUID } from 'node:crypto';
import { Pool } from 'undici';
import { USER_AGENT } from '../../../src/version.ts';
import { buildWebhookBody } from '../../../src/webhook/body.ts';
import { CONCURRENCY } from '../config.ts';
import type { BenchContext } from '../context.ts';
import { cpuMicrosPer } from '../cpu.ts';
import { median, round, sleep } from '../stats.ts';

export interface CeilingResult {
  rps: number;
  windows: number[];
  /** CPU µs per request of the sending process (undici alone) and of the receiver. */
  sender_cpu_us_per_request?: number;
  receiver_cpu_us_per_request?: number;
}

/** Bodies shaped like the drain's: different users, the same fields. */
export function sampleBodies(n: number): string[] {
  return Array.from({ length: n }, (_, i) =>
    buildWebhookBody(
      {
        id: randomUUID(),
        email: `u${i + 1}@bench.test`,
        username: `u${i + 1}`,
        displayName: `v${i % 5} l`,
        avatar: null,
        role: 'user',
        isActive: true,
      },
      i % 5 === 0 ? 'created' : 'updated',
    ),
  );
}

/**
 * One POST through undici's lowest-level API (dispatch with a bare handler), as the relay's sender
 * does: pool.request's response stream costs more CPU than the request itself here, and a ceiling
 * must be the cheapest way undici offers.
 */
function post(pool: Pool, url: URL, headers: Record<string, string>, body: string): Promise<void> {
  return new Promise((resolve, reject) => {
    pool.dispatch(
      { origin: url.origin, path: url.pathname, method: 'POST', headers, body },
      {
        // Its presence marks the handler as undici 7's API; without it undici wraps it as a legacy one.
        onRequestStart: () => undefined,
        onResponseEnd: () => resolve(),
        onResponseError: (_c, err) => reject(err),
      },
    );
  });
}

export async function runCeiling(ctx: BenchContext): Promise<CeilingResult> {
  const { warmupMs, windowMs, windows } = ctx.sizes.ceiling;
  const bodies = sampleBodies(1000);
  const ids = bodies.map(() => `evt_${randomUUID()}`);
  const url = new URL(ctx.receiver.url);
  const pool = new Pool(url.origin, { connections: CONCURRENCY, pipelining: 1 });
  let completed = 0;
  let stop = false;
  let failures = 0;

  const worker = async (w: number) => {
    for (let i = w; !stop; i += CONCURRENCY) {
      const k = i % bodies.length;
      try {
        await post(
          pool,
          url,
          {
            'content-type': 'application/json',
            'user-agent': USER_AGENT,
            'webhook-id': ids[k]!,
            'webhook-timestamp': String(Math.floor(Date.now() / 1000)),
          },
          bodies[k]!,
        );
        completed++;
      } catch {
        failures++;
      }
    }
  };

  // Warm-up outside the CPU window: connections opened, code optimised.
  const running = Array.from({ length: CONCURRENCY }, (_, w) => worker(w));
  await sleep(warmupMs);
  const startCount = completed;
  const { value: rates, cpu } = await ctx.measureCpu('ceiling', async () => {
    // Profiled too with --profile: the baseline the relay's profile is read against.
    await ctx.profiler?.start();
    const rates: number[] = [];
    for (let i = 0; i < windows; i++) {
      const c0 = completed;
      const t0 = performance.now();
      await sleep(windowMs);
      rates.push(((completed - c0) * 1000) / (performance.now() - t0));
    }
    await ctx.profiler?.stop('ceiling');
    return rates;
  });
  const measuredRequests = completed - startCount;
  stop = true;
  await Promise.all(running);
  await pool.close();
  if (failures > 0) ctx.log(`    ceiling: ${failures} requests failed`);
  const rps = round(median(rates));
  ctx.log(`  ceiling ${rps} rps (windows ${rates.map((r) => round(r)).join(', ')})`);
  const perRequest = cpuMicrosPer(cpu, measuredRequests);
  return {
    rps,
    windows: rates.map((r) => round(r)),
    ...(perRequest
      ? { sender_cpu_us_per_request: perRequest.bench ?? 0, receiver_cpu_us_per_request: perRequest.receiver ?? 0 }
      : {}),
  };
}
