/**
 * The relay's Prometheus metrics, /healthz and /readyz (`relay --metrics-port`).
 *
 * Counters and histograms follow the relay's own events, so they cost nothing per delivery beyond
 * an increment. The queue gauges (backlog, failed, parked, paused) are read from the database when
 * Prometheus scrapes, once per scrape, so they describe the whole outbox — every relay reports the
 * same numbers — rather than what this one process happened to see.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Pool } from '../db/pool.ts';
import { UsageError, errorMessage } from '../errors.ts';
import { queueGauges, type QueueGauges } from '../db/outbox-queries.ts';
import type { AttemptOutcome } from '../webhook/sender.ts';
import type { DeliveryEvent, Relay } from './relay.ts';

/** A scrape or a readiness probe must answer even while the database hangs. */
const DATABASE_CHECK_TIMEOUT_MS = 3_000;

export interface RelayMetrics {
  registry: Registry;
  /** Stops following the relay's events. */
  detach(): void;
}

function statusClass(outcome: AttemptOutcome): string {
  return outcome.status === undefined ? 'no_response' : `${Math.floor(outcome.status / 100)}xx`;
}

function withTimeout<T>(work: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what} took longer than ${DATABASE_CHECK_TIMEOUT_MS} ms`)),
      DATABASE_CHECK_TIMEOUT_MS,
    );
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Shares one database read among everything that asks while it runs: the gauges of one scrape
 * are collected in parallel, and a hanging database must not pile up a query per scrape.
 */
function sharedRead<T>(read: () => Promise<T>): () => Promise<T> {
  let running: Promise<T> | undefined;
  return () => {
    running ??= read().finally(() => {
      running = undefined;
    });
    return running;
  };
}

function createRelayMetrics(relay: Relay, pool: Pool): RelayMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });

  const deliveries = new Counter({
    name: 'suekk_sync_deliveries_total',
    help: 'Rounds finished, by outcome (delivered, rescheduled, failed, returned at shutdown; superseded counts the events a coalesced call carried) and action.',
    labelNames: ['outcome', 'action'] as const,
    registers: [registry],
  });
  const attempts = new Counter({
    name: 'suekk_sync_attempts_total',
    help: 'HTTP attempts, by result (delivered, retryable, rejected) and status class (2xx…5xx, no_response).',
    labelNames: ['result', 'status_class'] as const,
    registers: [registry],
  });
  const rounds = new Counter({
    name: 'suekk_sync_rounds_total',
    help: 'Rounds that made at least one attempt.',
    registers: [registry],
  });
  const redeliveries = new Counter({
    name: 'suekk_sync_redeliveries_total',
    help: 'Rounds for events that had been attempted before (a later round, or a repeat after a crash).',
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'suekk_sync_delivery_duration_seconds',
    help: 'Time one round took, attempts and the waits between them included, by outcome.',
    labelNames: ['outcome'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [registry],
  });
  const lag = new Histogram({
    name: 'suekk_sync_capture_to_delivery_seconds',
    help: "From capture (the event's created_at) to its delivery, by source: resync events wait behind live ones by design.",
    labelNames: ['source'] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21_600, 86_400],
    registers: [registry],
  });

  const onDelivery = ({ event, result, outcome, superseded }: DeliveryEvent) => {
    deliveries.inc({ outcome, action: event.action });
    // Coalescing: the earlier events the call carried settle without a call of their own.
    if (superseded) deliveries.inc({ outcome: 'superseded', action: event.action }, superseded);
    duration.observe({ outcome }, result.durationMs / 1000);
    if (result.attempts > 0) {
      rounds.inc();
      if (event.attempts > 0 || event.rounds > 0) redeliveries.inc();
    }
    // created_at is the database's clock and now is this host's: the lag is as right as their sync (NTP).
    if (outcome === 'delivered')
      lag.observe({ source: event.source }, Math.max(0, Date.now() - event.createdAt.getTime()) / 1000);
  };
  const onAttempt = (outcome: AttemptOutcome) => {
    attempts.inc({ result: outcome.kind, status_class: statusClass(outcome) });
  };
  relay.on('delivery', onDelivery);
  relay.on('attempt', onAttempt);

  const readQueue = sharedRead(() =>
    withTimeout(queueGauges(pool), 'Reading the queue gauges').then(
      (gauges): QueueGauges | undefined => gauges,
      () => undefined,
    ),
  );
  // Without the database the queue is unknown: NaN says so, where a stale number would mislead alerts.
  const fromQueue = (name: string, help: string, pick: (q: QueueGauges) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      async collect() {
        const queue = await readQueue();
        this.set(queue === undefined ? Number.NaN : pick(queue));
      },
    });
  new Gauge({
    name: 'suekk_sync_database_up',
    help: '1 when this scrape could read the queue gauges from the database, else 0.',
    registers: [registry],
    async collect() {
      this.set((await readQueue()) === undefined ? 0 : 1);
    },
  });
  fromQueue(
    'suekk_sync_backlog_events',
    'Events waiting to be delivered (pending), in flight included.',
    (q) => q.backlog,
  );
  fromQueue(
    'suekk_sync_oldest_pending_seconds',
    'Age of the oldest pending event since capture; 0 when none.',
    (q) => q.oldestPendingSeconds ?? 0,
  );
  fromQueue('suekk_sync_failed_events', 'Events that failed and wait for `retry` or `skip`.', (q) => q.failed);
  fromQueue('suekk_sync_parked_users', 'Users held back by a failed event.', (q) => q.parkedUsers);
  fromQueue('suekk_sync_paused', '1 while `suekk-sync pause` is in effect.', (q) => (q.paused ? 1 : 0));

  const fromRelay = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read());
      },
    });
  fromRelay('suekk_sync_in_flight_users', 'Users this relay holds right now.', () => relay.inFlight);
  fromRelay('suekk_sync_breaker_open', '1 while this relay thinks the backend is down and probes with one user.', () =>
    relay.breakerOpen ? 1 : 0,
  );
  fromRelay('suekk_sync_backend_up', '1 while the backend answers as this relay sees it, 0 while it looks down.', () =>
    relay.backendDownSince === undefined ? 1 : 0,
  );
  fromRelay('suekk_sync_listening', '1 while the LISTEN connection is up.', () => (relay.listening ? 1 : 0));

  return {
    registry,
    detach() {
      relay.off('delivery', onDelivery);
      relay.off('attempt', onAttempt);
    },
  };
}

export interface MetricsServer {
  port: number;
  close(): Promise<void>;
}

export interface MetricsServerOptions {
  port: number;
  /** All interfaces when undefined: Prometheus scrapes from another host. */
  host?: string;
  relay: Relay;
  pool: Pool;
}

export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsServer> {
  const { relay, pool } = options;
  const metrics = createRelayMetrics(relay, pool);
  const pingDatabase = sharedRead(() =>
    withTimeout(pool.query('select 1'), 'The database check').then(() => undefined),
  );

  /** Why this relay should not get traffic now, or undefined when it is ready. */
  async function notReady(): Promise<string | undefined> {
    if (relay.paused) return 'delivery is paused; run `suekk-sync resume`';
    if (relay.schemaMissing !== undefined) return relay.schemaMissing;
    if (!relay.listening) return 'the LISTEN connection to the database is down';
    try {
      await pingDatabase();
    } catch (err) {
      return `the database does not answer (${errorMessage(err)})`;
    }
    return undefined;
  }

  const send = (res: ServerResponse, status: number, type: string, body: string) => {
    res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
    res.end(body);
  };
  const sendJson = (res: ServerResponse, status: number, body: unknown) =>
    send(res, status, 'application/json', `${JSON.stringify(body)}\n`);

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      sendJson(res, 405, { error: 'Use GET.' });
      return;
    }
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (path === '/metrics') {
      send(res, 200, metrics.registry.contentType, await metrics.registry.metrics());
    } else if (path === '/healthz') {
      // Only that the process runs: a database blip must not get the relay restarted.
      sendJson(res, 200, { status: 'ok' });
    } else if (path === '/readyz') {
      const reason = await notReady();
      sendJson(
        res,
        reason === undefined ? 200 : 503,
        reason === undefined ? { ready: true } : { ready: false, reason },
      );
    } else {
      sendJson(res, 404, { error: 'Not found; try /metrics, /healthz or /readyz.' });
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) sendJson(res, 500, { error: errorMessage(err) });
      else res.destroy();
    });
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port, options.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    metrics.detach();
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(
      `Cannot serve metrics on port ${options.port} (${code ?? errorMessage(err)}); choose another --metrics-port.`,
    );
  }
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        metrics.detach();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
