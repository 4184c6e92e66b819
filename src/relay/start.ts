/**
 * Everything `suekk-sync relay` checks before it delivers anything, each failure one sentence:
 * the backend URL, the secrets, the database, the schema, LISTEN.
 */
import { requireBackendUrl, requireDatabaseUrl, type Settings } from '../config.ts';
import { UsageError } from '../errors.ts';
import { createLogger, logDestination, type Logger } from '../logger.ts';
import { checkConnection, closePool, createPool, type Pool } from '../db/pool.ts';
import { requireSchema } from '../db/migrations.ts';
import { createSenderFromSettings } from '../webhook/sender.ts';
import { startMetricsServer, type MetricsServer } from './metrics.ts';
import { Relay } from './relay.ts';

export interface StartedRelay {
  relay: Relay;
  pool: Pool;
  logger: Logger;
  close(): Promise<void>;
}

/** Builds, checks and starts a relay from settings; the caller owns stopping it. */
export async function startRelay(
  settings: Settings,
  logger = createLogger(settings.logLevel, logDestination()),
): Promise<StartedRelay> {
  const url = requireBackendUrl(settings);
  const databaseUrl = requireDatabaseUrl(settings);
  const pool = createPool(databaseUrl, {
    max: Math.min(10, 3 + Math.ceil(settings.relay.concurrency / 16)),
    applicationName: 'suekk-sync relay',
    // Every claim, renewal and outcome is a commit; waiting for its WAL flush was the largest part
    // of commit-to-delivery latency. What a crash can lose: outcomes (the events are sent again,
    // same webhook-id) and leases of the last moments, which the relay covers by stopping its
    // requests the moment it sees a connection drop (Relay.connectionLost).
    relaySession: true,
    onIdleError: (err) =>
      logger.warn({ err: { message: err.message } }, 'A database connection dropped; the pool replaces it'),
  });
  const sender = createSenderFromSettings(settings);
  let metrics: MetricsServer | undefined;
  const close = async () => {
    await metrics?.close();
    await sender.close().catch(() => undefined);
    await closePool(pool).catch(() => undefined);
  };
  try {
    try {
      await checkConnection(pool, databaseUrl);
    } catch (err) {
      // At start-up an unreachable database is a configuration problem: nothing has run yet.
      throw new UsageError((err as Error).message);
    }
    await requireSchema(pool);
    if (settings.webhookSecrets.length === 0) {
      logger.warn(
        'WEBHOOK_SECRET is not set: webhooks go out unsigned, and the backend cannot tell them from forgeries',
      );
    }
    const relay = new Relay({
      pool,
      sender,
      settings: settings.relay,
      logger,
      listenUrl: settings.databaseListenUrl ?? databaseUrl,
      heartbeat: true,
      maintenance: true,
      listenSelfCheck: true,
    });
    logger.info(
      {
        backend: `${url.origin}${url.pathname}`,
        concurrency: settings.relay.concurrency,
        signingKeys: settings.webhookSecrets.length,
      },
      `Relay ${relay.id} starting, delivering to ${url.origin}${url.pathname}`,
    );
    if (settings.relay.metricsPort !== undefined) {
      // Before the relay starts, so a port that is taken fails start-up before anything is claimed.
      metrics = await startMetricsServer({ port: settings.relay.metricsPort, relay, pool });
      logger.info({ metricsPort: metrics.port }, `Serving /metrics, /healthz and /readyz on port ${metrics.port}`);
    }
    await relay.start();
    return { relay, pool, logger, close };
  } catch (err) {
    await close();
    throw err;
  }
}
