/**
 * A relay as the daemon builds it (src/relay/start.ts), from the public pieces: createPool with
 * the daemon's pool size, createWebhookSender with one connection per concurrent user, Relay with
 * LISTEN and heartbeat. Maintenance sweeps are off: a sweep at start would scan the whole
 * pre-filled outbox inside the measured window, which is start-up cost, not throughput.
 */
import type { RelaySettings } from '../../src/config.ts';
import { createPool, type Pool } from '../../src/db/pool.ts';
import { createLogger, logDestination, type Logger } from '../../src/logger.ts';
import { Relay } from '../../src/relay/relay.ts';
import { createWebhookSender } from '../../src/webhook/sender.ts';
import { RELAY_SETTINGS } from './config.ts';
import type { BenchContext } from './context.ts';

export interface BenchRelay {
  relay: Relay;
  pool: Pool;
  /** Statements the relay sent, by prepared-statement name (or the text's start), with total ms. */
  queries: Map<string, { n: number; ms: number }>;
  stop(): Promise<void>;
}

type QueryFn = (...args: unknown[]) => Promise<unknown>;

/**
 * Counts the relay's database round trips (pool.query and the queries of checked-out clients,
 * which the outcome writer uses) and their latency as the relay sees it. Wrapping, not editing:
 * the relay's code is untouched, and one Map update per query is noise next to a round trip.
 */
function countQueries(pool: Pool): Map<string, { n: number; ms: number }> {
  const stats = new Map<string, { n: number; ms: number }>();
  const wrap = (target: { query: QueryFn }) => {
    const original = target.query.bind(target);
    target.query = (...args: unknown[]) => {
      const first = args[0] as string | { name?: string; text?: string };
      const key = typeof first === 'string' ? first : (first.name ?? first.text ?? '?');
      const label = key.replace(/\s+/g, ' ').trim().slice(0, 48);
      const started = performance.now();
      const done = () => {
        const s = stats.get(label) ?? { n: 0, ms: 0 };
        s.n++;
        s.ms += performance.now() - started;
        stats.set(label, s);
      };
      const result = original(...args);
      // Callback-style calls (none in the relay) are passed through uncounted.
      if (result && typeof result.then === 'function') void result.then(done, done);
      return result;
    };
  };
  wrap(pool);
  const wrapped = new WeakSet<object>();
  pool.on('acquire', (client) => {
    if (wrapped.has(client)) return;
    wrapped.add(client);
    wrap(client);
  });
  return stats;
}

/** warn: only problems (to the run's relay log); info-file: every delivery, as the daemon logs by default. */
export type RelayLogging = 'warn' | 'info-file';

function benchLogger(ctx: BenchContext, logging: RelayLogging): Logger {
  // Warnings go to the run's relay log (its path is printed at the end), not into the table.
  if (logging === 'warn') return createLogger('warn', ctx.relayLog);
  // Every delivery logged at info, to a file through the daemon's own destination: the formatting
  // and the writes are the cost.
  return createLogger('info', logDestination(ctx.infoLogFile));
}

/**
 * `--relay-db-options '<libpq options>'` (e.g. `-c synchronous_commit=off`): server settings for
 * the relay's own connections only, through the connection string, so a database-side idea can
 * be measured before anyone changes the code. Empty by default: the relay as shipped.
 */
export function withDbOptions(databaseUrl: string, options: string | undefined): string {
  if (!options) return databaseUrl;
  const u = new URL(databaseUrl);
  u.searchParams.set('options', options);
  return u.toString();
}

export async function startBenchRelay(
  ctx: BenchContext,
  databaseUrl: string,
  logging: RelayLogging = 'warn',
  overrides: Partial<RelaySettings> = {},
): Promise<BenchRelay> {
  const settings = { ...RELAY_SETTINGS, ...overrides };
  const receiverUrl = ctx.receiver.url;
  databaseUrl = withDbOptions(databaseUrl, ctx.relayDbOptions);
  const pool = createPool(databaseUrl, {
    // The daemon's formula (src/relay/start.ts).
    max: Math.min(10, 3 + Math.ceil(settings.concurrency / 16)),
    applicationName: 'suekk-sync relay',
    relaySession: true,
  });
  const sender = createWebhookSender({
    url: receiverUrl,
    secrets: [],
    timeoutMs: settings.timeoutMs,
    connections: Math.max(1, settings.concurrency),
    retryAfterCapMs: settings.retryAfterCapMs,
  });
  const queries = countQueries(pool);
  const relay = new Relay({
    pool,
    sender,
    settings,
    logger: benchLogger(ctx, logging),
    listenUrl: databaseUrl,
    heartbeat: true,
    maintenance: false,
  });
  await relay.start();
  return {
    relay,
    pool,
    queries,
    async stop() {
      await relay.stop();
      await sender.close();
      await pool.end();
    },
  };
}

/**
 * Whether every event (but `exceptUser`'s) has been delivered and recorded: both tickers have read
 * past the newest event, and no stream (but that user's) has work left or is held. Cheap enough to
 * poll: the streams table holds the users in hand, not the outbox.
 */
export async function outboxSettled(db: Pick<Pool, 'query'>, exceptUser: string | null = null): Promise<boolean> {
  const { rows } = await db.query<{ settled: boolean }>(
    `select suekk_sync.ticked_horizon() > coalesce((select max(id) from suekk_sync.events), 0)
        and not exists (select 1 from suekk_sync.streams
                         where (last_event_id > delivered_through or locked_by is not null or due_at is not null or parked)
                           and user_id is distinct from $1) as settled`,
    [exceptUser],
  );
  return rows[0]!.settled;
}
