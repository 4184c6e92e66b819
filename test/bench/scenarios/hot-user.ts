/**
 * hot_user: one user with 10k pending events alongside the normal backlog. Per-user order means
 * the hot user's events go one at a time, so they should cost the others one slot of 64 and the
 * database work of reading that user's queue, not more. Measured as the others' throughput (time
 * until all of their events are delivered and marked) with and without the hot user, in
 * alternating pairs on fresh databases.
 *
 * Each side keeps its best run, not its median: other processes on the machine can only slow a
 * run down, and with two or three runs a side a single disturbed run would otherwise decide the
 * ratio (seen: one run with the others' CPU at 67 % instead of 12 % turned 15 % into 26 %).
 */
import type { BenchContext } from '../context.ts';
import { median, round } from '../stats.ts';
import { runOutboxDrain, type DrainRun } from './drain.ts';

export interface HotUserResult {
  events: number;
  others_eps: number;
  others_eps_without: number;
  /** 1 - with/without: the share of the others' throughput the hot user costs. */
  cost: number;
  /** The hot user's own delivery rate while the others drained (serial, one request at a time). */
  hot_eps: number;
  /**
   * The relay's CPU µs per delivered event (medians), with and without the hot user: far less
   * sensitive to other processes than throughput, so a cross-check when the machine is noisy.
   */
  relay_cpu_us_per_event: { with: number; without: number };
  /** The same with `--coalesce`: the hot user's runs go as one call each. */
  coalesced: { others_eps: number; hot_eps: number; hot_calls_per_event: number };
  runs: { with: DrainRun[]; without: DrainRun[]; coalesced: DrainRun[] };
}

export async function runHotUser(ctx: BenchContext): Promise<HotUserResult> {
  const { hotEvents, users, perUser, pairs } = ctx.sizes.hotUser;
  const withHot: DrainRun[] = [];
  const without: DrainRun[] = [];
  for (let i = 0; i < pairs; i++) {
    // Alternate which goes first, so a drift in machine load does not favour one side.
    const order = i % 2 === 0 ? ['without', 'with'] : ['with', 'without'];
    for (const side of order) {
      if (side === 'with')
        withHot.push(await runOutboxDrain(ctx, { label: `hot_with_${i + 1}`, users, perUser, hotEvents }));
      else without.push(await runOutboxDrain(ctx, { label: `hot_without_${i + 1}`, users, perUser }));
    }
  }
  const coalesced: DrainRun[] = [];
  for (let i = 0; i < Math.max(1, pairs - 1); i++) {
    coalesced.push(
      await runOutboxDrain(ctx, {
        label: `hot_coalesced_${i + 1}`,
        users,
        perUser,
        hotEvents,
        relay: { coalesce: true },
      }),
    );
  }
  const best = coalesced.reduce((a, b) => (b.eps > a.eps ? b : a));
  const othersEps = Math.max(...withHot.map((r) => r.eps));
  const othersEpsWithout = Math.max(...without.map((r) => r.eps));
  const hotEps = median(withHot.map((r) => (r.hotDelivered ?? 0) / r.seconds));
  return {
    events: hotEvents,
    others_eps: round(othersEps),
    others_eps_without: round(othersEpsWithout),
    cost: round(1 - othersEps / othersEpsWithout, 3),
    hot_eps: round(hotEps),
    relay_cpu_us_per_event: {
      with: median(withHot.map((r) => r.cpu_us_per_event?.bench ?? 0)),
      without: median(without.map((r) => r.cpu_us_per_event?.bench ?? 0)),
    },
    coalesced: {
      others_eps: round(best.eps),
      hot_eps: round((best.hotSettled ?? 0) / best.seconds),
      hot_calls_per_event: round((best.hotDelivered ?? 0) / Math.max(1, best.hotSettled ?? 0), 3),
    },
    runs: { with: withHot, without, coalesced },
  };
}
