/**
 * The bench's backend, in its own process: a bare Node `http` server answering 200 to every POST,
 * as cheap as a backend can be, so the figures measure the sender and not the receiver.
 *
 * It also hosts the latency writer (see protocol.ts for why): the writer stamps each commit with
 * performance.now() when the UPDATE returns, the server stamps each webhook when its body has
 * arrived, and a marker in first_name (→ displayName) pairs them up.
 *
 * Run by the bench with `fork(…, { execArgv: ['--import', 'tsx'] })`; prints `{"port":…}` on stdout.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import {
  MARKER_NEEDLE,
  MARKER_PREFIX,
  type LatencyReport,
  type ReceiverRequest,
  type ReceiverResponse,
  type ReceiverStats,
  type WriterSpec,
  type WriterStats,
} from './protocol.ts';
import { mean, percentile, sleep } from './stats.ts';

let count = 0;
let tagged = 0;
let refused = 0;
/** While set, every request is answered with this status and counts as refused, not answered. */
let refuseWith: number | null = null;
let lastAt = 0;
let tag: string | undefined;
let trackMarkers = false;
/** marker → first arrival (a resync may carry the same marker again later; the first one counts). */
let arrivals = new Map<number, number>();

const OK_BODY = '{"success":true}';

function markerOf(body: string): number | undefined {
  const at = body.indexOf(MARKER_NEEDLE);
  if (at < 0) return undefined;
  let n = 0;
  let digits = 0;
  for (let i = at + MARKER_NEEDLE.length; i < body.length; i++) {
    const c = body.charCodeAt(i);
    if (c < 48 || c > 57) break;
    n = n * 10 + (c - 48);
    digits++;
  }
  return digits > 0 ? n : undefined;
}

const server = createServer((req, res) => {
  if (refuseWith !== null) {
    const status = refuseWith;
    req.resume();
    req.on('end', () => {
      refused++;
      res.writeHead(status, { 'content-length': '0' });
      res.end();
    });
    return;
  }
  const answer = () => {
    count++;
    lastAt = performance.now();
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(OK_BODY.length) });
    res.end(OK_BODY);
  };
  if (tag === undefined && !trackMarkers) {
    // The common case reads nothing: the body is drained, not decoded.
    req.resume();
    req.on('end', answer);
    return;
  }
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks).toString('utf8');
    if (tag !== undefined && body.includes(tag)) tagged++;
    if (trackMarkers) {
      const marker = markerOf(body);
      if (marker !== undefined && !arrivals.has(marker)) arrivals.set(marker, performance.now());
    }
    answer();
  });
});
server.keepAliveTimeout = 60_000;

// ---- the latency writer ----

interface Commit {
  at: number;
  /** Issued after the warm-up: counts in the figures. */
  measured: boolean;
}

let nextMarker = 1;
let commits = new Map<number, Commit>();
let writer: { stop: () => void; done: Promise<WriterStats> } | undefined;

function startWriter(spec: WriterSpec): void {
  if (writer) throw new Error('a writer is already running');
  let stopRequested = false;
  let wake: (() => void) | undefined;
  const done = (async (): Promise<WriterStats> => {
    const pool = new pg.Pool({
      connectionString: spec.databaseUrl,
      max: spec.connections,
      application_name: 'suekk-bench writer',
    });
    pool.on('error', () => undefined);
    // Open every connection before the clock starts: a connect inside the window is not a commit's cost.
    const clients = await Promise.all(Array.from({ length: spec.connections }, () => pool.connect()));
    for (const c of clients) c.release();
    const first = spec.firstUser ?? 1;
    const inFlight = new Set<Promise<void>>();
    let committed = 0;
    let errors = 0;
    let issued = 0;
    const t0 = performance.now();
    for (;;) {
      const now = performance.now();
      const elapsed = now - t0;
      if (stopRequested || (spec.durationMs !== undefined && elapsed >= spec.durationMs)) break;
      // Paced against the clock: a slow commit does not slow the offered rate.
      const due = Math.floor((elapsed * spec.rate) / 1000) + 1;
      while (issued < due) {
        const user = first + (issued % spec.users);
        issued++;
        const marker = nextMarker++;
        const measured = elapsed >= spec.warmupMs;
        const p = pool
          .query({
            name: 'bench_writer_update',
            text: 'update users set first_name = $1, updated_at = now() where lower(username) = $2',
            values: [`${MARKER_PREFIX}${marker}`, `u${user}`],
          })
          .then(
            () => {
              commits.set(marker, { at: performance.now(), measured });
              committed++;
            },
            () => {
              errors++;
            },
          );
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
      }
      const nextAt = t0 + (issued * 1000) / spec.rate;
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, Math.max(0, nextAt - performance.now()));
      });
    }
    const seconds = (performance.now() - t0) / 1000;
    await Promise.allSettled([...inFlight]);
    await pool.end();
    return { committed, errors, rate: committed / seconds };
  })();
  // Surfaces at writer-stop; until then a failure must not crash the receiver.
  done.catch(() => undefined);
  writer = {
    stop: () => {
      stopRequested = true;
      wake?.();
    },
    done,
  };
}

async function latency(waitMs: number): Promise<LatencyReport> {
  const measured = [...commits.entries()].filter(([, c]) => c.measured);
  const deadline = performance.now() + waitMs;
  while (performance.now() < deadline && measured.some(([m]) => !arrivals.has(m))) await sleep(20);
  const now = performance.now();
  const lags: number[] = [];
  let arrivedCount = 0;
  let beforeCommitAck = 0;
  for (const [marker, commit] of measured) {
    const arrived = arrivals.get(marker);
    // Never arrived: it waited at least until now. Counting it so keeps a stalled relay from
    // looking fast (the percentiles are then lower bounds, and `arrived` < `measured` says so).
    const lag = (arrived ?? now) - commit.at;
    if (arrived !== undefined) arrivedCount++;
    if (lag < 0) beforeCommitAck++;
    lags.push(Math.max(0, lag));
  }
  lags.sort((a, b) => a - b);
  return {
    measured: measured.length,
    arrived: arrivedCount,
    p50: percentile(lags, 50),
    p95: percentile(lags, 95),
    p99: percentile(lags, 99),
    max: lags.at(-1) ?? 0,
    mean: mean(lags),
    beforeCommitAck,
  };
}

async function handle(msg: ReceiverRequest): Promise<unknown> {
  switch (msg.type) {
    case 'stats':
      return { count, tagged, lastAt, refused } satisfies ReceiverStats;
    case 'refuse':
      refuseWith = msg.status;
      return null;
    case 'reset':
      count = 0;
      tagged = 0;
      refused = 0;
      refuseWith = null;
      tag = msg.tag;
      trackMarkers = msg.markers ?? false;
      arrivals = new Map();
      commits = new Map();
      return null;
    case 'writer-start':
      startWriter(msg.spec);
      return null;
    case 'writer-stop': {
      if (!writer) throw new Error('no writer is running');
      writer.stop();
      const result = await writer.done;
      writer = undefined;
      return result;
    }
    case 'latency':
      return latency(msg.waitMs);
  }
}

process.on('message', (msg: ReceiverRequest) => {
  handle(msg).then(
    (result) => process.send?.({ id: msg.id, ok: true, result } satisfies ReceiverResponse),
    (err: unknown) =>
      process.send?.({ id: msg.id, ok: false, error: (err as Error).message } satisfies ReceiverResponse),
  );
});
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});

server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`);
});
