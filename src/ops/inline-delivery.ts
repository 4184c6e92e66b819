/**
 * resync, push and retry wait for the outcome of their events. When no relay is alive they run
 * the relay's engine themselves while they wait, so everything due moves, not only their own.
 */
import type { Settings } from '../config.ts';
import { UsageError } from '../errors.ts';
import { createLogger, type Logger } from '../logger.ts';
import type { Pool } from '../db/pool.ts';
import { RELAY_ALIVE_SECONDS } from '../db/schema.ts';
import { Relay } from '../relay/relay.ts';
import { createWebhookSender, parseBackendUrl } from '../webhook/sender.ts';
import { parseSecrets } from '../webhook/signature.ts';
import { requireDatabaseUrl } from '../config.ts';

export async function aliveRelays(pool: Pool): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(
    'select count(*)::int as n from suekk_sync.relays where heartbeat_at > now() - make_interval(secs => $1)',
    [RELAY_ALIVE_SECONDS],
  );
  return rows[0]?.n ?? 0;
}

export interface DeliveryHandle {
  /** 'relay' when running relays deliver; 'inline' when this process does. */
  mode: 'relay' | 'inline';
  stop(): Promise<void>;
}

/**
 * Makes sure something delivers while a command waits. Without a relay and without a backend URL,
 * the command cannot wait for anything: that is a usage error naming both ways out.
 */
export async function ensureDelivery(
  pool: Pool,
  settings: Settings,
  logger: Logger = createLogger(settings.logLevel === 'info' ? 'warn' : settings.logLevel, process.stderr),
): Promise<DeliveryHandle> {
  if ((await aliveRelays(pool)) > 0) return { mode: 'relay', stop: async () => undefined };
  if (settings.backendSyncUrl === undefined) {
    throw new UsageError(
      'No relay is running and BACKEND_SYNC_URL is not set, so nothing would deliver; start `suekk-sync relay`, set BACKEND_SYNC_URL to deliver from here, or pass --no-wait.',
    );
  }
  const url = parseBackendUrl(settings.backendSyncUrl);
  const sender = createWebhookSender({
    url: url.toString(),
    secrets: parseSecrets(settings.webhookSecrets),
    token: settings.backendSyncToken,
    timeoutMs: settings.relay.timeoutMs,
    connections: settings.relay.concurrency,
    retryAfterCapMs: settings.relay.retryAfterCapMs,
  });
  const relay = new Relay({
    pool,
    sender,
    settings: settings.relay,
    logger,
    listenUrl: settings.databaseListenUrl ?? requireDatabaseUrl(settings),
    // Not a relay to the others: it leaves as soon as its command is done.
    heartbeat: false,
    maintenance: false,
  });
  await relay.start();
  return {
    mode: 'inline',
    stop: async () => {
      await relay.stop();
      await sender.close();
    },
  };
}
