/**
 * Sizes and settings of a bench run. `--quick` shrinks the work so the whole run takes a few
 * minutes; the full run uses the sizes of the issue (50k events over 10k users, a 1M-user resync).
 */
import { DEFAULT_RELAY, type RelaySettings } from '../../src/config.ts';

/** The same for the relay, the ceiling and the peer: requests in flight at once. */
export const CONCURRENCY = 64;

/** The relay as the bench runs it: issue settings, defaults for the rest (pollInterval 5 s). */
export const RELAY_SETTINGS: RelaySettings = {
  ...DEFAULT_RELAY,
  concurrency: CONCURRENCY,
  batchSize: 100,
  leaseMs: 30_000,
};

export interface BenchSizes {
  ceiling: { warmupMs: number; windowMs: number; windows: number };
  drain: { users: number; perUser: number; repeats: number; warmupUsers: number };
  peer: {
    users: number;
    perUser: number;
    /** graphile-worker configurations tried for its unordered best: [concurrency, pool size]. */
    unorderedConfigs: [number, number][];
    /** Pool size for the ordered run (graphile-worker's default maxPoolSize). */
    orderedPoolSize: number;
    /** A run still going after this long reports its rate so far (the peer can be very slow). */
    capSeconds: number;
  };
  latency: { rate: number; seconds: number; warmupSeconds: number; users: number };
  hotUser: { hotEvents: number; users: number; perUser: number; pairs: number };
  resync: { users: number; liveRate: number; liveUsers: number; capSeconds: number };
  trigger: { clients: number; users: number; roundSeconds: number; cycles: number };
  /** Waves of one update of every user, delivered while an old snapshot is held. */
  longtx: { users: number; waves: number };
  /** The backend down for `downSeconds` under `rate` changes a second over `users` users. */
  outage: { users: number; rate: number; downSeconds: number };
}

export const FULL: BenchSizes = {
  ceiling: { warmupMs: 2_000, windowMs: 4_000, windows: 3 },
  drain: { users: 10_000, perUser: 5, repeats: 3, warmupUsers: 1_000 },
  peer: {
    users: 10_000,
    perUser: 5,
    unorderedConfigs: [
      [16, 10],
      [32, 10],
      [64, 10],
      [64, 20],
    ],
    orderedPoolSize: 10,
    capSeconds: 120,
  },
  latency: { rate: 500, seconds: 20, warmupSeconds: 3, users: 5_000 },
  hotUser: { hotEvents: 10_000, users: 10_000, perUser: 5, pairs: 2 },
  resync: { users: 1_000_000, liveRate: 100, liveUsers: 5_000, capSeconds: 600 },
  trigger: { clients: 4, users: 10_000, roundSeconds: 5, cycles: 5 },
  longtx: { users: 20_000, waves: 5 },
  outage: { users: 10_000, rate: 200, downSeconds: 90 },
};

export const QUICK: BenchSizes = {
  ceiling: { warmupMs: 1_000, windowMs: 2_000, windows: 3 },
  drain: { users: 2_000, perUser: 5, repeats: 2, warmupUsers: 500 },
  peer: {
    users: 2_000,
    perUser: 5,
    unorderedConfigs: [
      [16, 10],
      [64, 20],
    ],
    orderedPoolSize: 10,
    capSeconds: 20,
  },
  latency: { rate: 500, seconds: 6, warmupSeconds: 1, users: 2_000 },
  hotUser: { hotEvents: 10_000, users: 2_000, perUser: 5, pairs: 2 },
  resync: { users: 100_000, liveRate: 100, liveUsers: 2_000, capSeconds: 60 },
  trigger: { clients: 4, users: 10_000, roundSeconds: 2, cycles: 3 },
  longtx: { users: 5_000, waves: 5 },
  outage: { users: 2_000, rate: 200, downSeconds: 20 },
};
