/**
 * The messages between the bench process and the receiver process (test/bench/receiver-process.ts).
 *
 * The receiver lives in its own process so that the backend's CPU is not the sender's CPU: on a
 * 2-core machine a receiver sharing the relay's event loop would halve what both can do. The
 * latency writer lives in the receiver's process too, so that a commit and the arrival of its
 * webhook are timed by the same `performance.now()` (one monotonic clock, no cross-process skew).
 */

export interface WriterSpec {
  databaseUrl: string;
  /** Updates per second, paced against the clock (not back-to-back). */
  rate: number;
  /** Stop by itself after this long; without it the writer runs until `writer-stop`. */
  durationMs?: number;
  /** Commits in the first `warmupMs` are written but left out of the figures. */
  warmupMs: number;
  /** Users `u1`…`u<users>` are updated round-robin, so one user is rarely updated twice in a row. */
  users: number;
  /** Offset into the users, so two writers (or runs) touch different users. */
  firstUser?: number;
  /** Connections the writer may use at once (pacing is per update, not per connection). */
  connections: number;
}

export type ReceiverRequest =
  | { id: number; type: 'stats' }
  /**
   * Clears the counters. `tag` is a substring of the body: requests that contain it are counted
   * apart (the hot user, or resync events). `markers` turns on latency matching.
   */
  | { id: number; type: 'reset'; tag?: string; markers?: boolean }
  | { id: number; type: 'writer-start'; spec: WriterSpec }
  /** Answer every request with this status (a backend that is down: 503), or 200 again with null. */
  | { id: number; type: 'refuse'; status: number | null }
  /** Resolves once the writer stopped and its in-flight commits returned. */
  | { id: number; type: 'writer-stop' }
  /** Waits up to `waitMs` for every measured marker to arrive, then reports. */
  | { id: number; type: 'latency'; waitMs: number };

export interface ReceiverStats {
  /** Requests answered since the last reset. */
  count: number;
  /** Of those, requests whose body contained the tag. */
  tagged: number;
  /** performance.now() of the latest request, in the receiver's clock. */
  lastAt: number;
  /** Requests refused (answered with the `refuse` status) since the last reset. */
  refused: number;
}

export interface WriterStats {
  /** Updates committed (warm-up included). */
  committed: number;
  /** Updates that failed (a deadlock, a dropped connection): reported, never hidden. */
  errors: number;
  /** Achieved commit rate over the run. */
  rate: number;
}

export interface LatencyReport {
  /** Commits inside the measured window. */
  measured: number;
  /** Of those, how many arrived at the receiver (the others count with their wait so far). */
  arrived: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
  /** Arrivals that came before the writer saw its commit return (possible: same machine). */
  beforeCommitAck: number;
}

export type ReceiverResponse = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string };

/** Markers are carried in first_name, which the default mapping turns into displayName. */
export const MARKER_PREFIX = 'L';
export const MARKER_NEEDLE = `"displayName":"${MARKER_PREFIX}`;
