/**
 * resync, push and retry wait for the outcome of their events. When no relay is alive they run
 * the relay's engine themselves while they wait. push, retry and resync --user deliver only the
 * users they were asked about: another user's events are none of the command's business and stay
 * for the relays. resync --all covers every user, and --since more users than a command should
 * list, so those deliver whatever is due, as a relay would.
 */
import type { Settings } from '../config.ts';
import { UsageError } from '../errors.ts';
import { createLogger, type Logger } from '../logger.ts';
import type { Pool } from '../db/pool.ts';
import { RELAY_ALIVE_SECONDS } from '../db/schema.ts';
import { Relay } from '../relay/relay.ts';
import { createSenderFromSettings, type WebhookSender } from '../webhook/sender.ts';
import { requireDatabaseUrl } from '../config.ts';

async function aliveRelays(pool: Pool): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(
    'select count(*)::int as n from suekk_sync.relays where heartbeat_at > now() - make_interval(secs => $1)',
    [RELAY_ALIVE_SECONDS],
  );
  return rows[0]?.n ?? 0;
}

export interface DeliveryHandle {
  /** 'relay' when running relays deliver; 'inline' when this process does. */
  mode: 'relay' | 'inline';
  /** Starts delivering (inline), once the command has written what it asked for. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Decides what delivers while a command waits, before the command writes anything: without a
 * relay and without a backend URL nothing would, which is a usage error naming the ways out, and
 * the command has then changed nothing. Inline delivery starts only once the command's writes are
 * done, so what the command reads back as its events is what it then waits for.
 */
export async function ensureDelivery(
  pool: Pool,
  settings: Settings,
  options: { onlyUsers?: readonly string[] } = {},
  logger: Logger = createLogger(settings.logLevel === 'info' ? 'warn' : settings.logLevel, process.stderr),
): Promise<DeliveryHandle> {
  const nothingToDo = () => Promise.resolve();
  if ((await aliveRelays(pool)) > 0) return { mode: 'relay', start: nothingToDo, stop: nothingToDo };
  if (settings.backendSyncUrl === undefined) {
    throw new UsageError(
      'No relay is running and BACKEND_SYNC_URL is not set, so nothing would deliver; start `suekk-sync relay`, set BACKEND_SYNC_URL to deliver from here, or pass --no-wait to only enqueue.',
    );
  }
  const listenUrl = settings.databaseListenUrl ?? requireDatabaseUrl(settings);
  let running: { relay: Relay; sender: WebhookSender } | undefined;
  return {
    mode: 'inline',
    start: async () => {
      const sender = createSenderFromSettings(settings);
      const relay = new Relay({
        pool,
        sender,
        settings: settings.relay,
        logger,
        listenUrl,
        // Not a relay to the others: it leaves as soon as its command is done.
        heartbeat: false,
        maintenance: false,
        onlyUsers: options.onlyUsers,
      });
      running = { relay, sender };
      await relay.start();
    },
    stop: async () => {
      if (running === undefined) return;
      await running.relay.stop();
      await running.sender.close();
    },
  };
}
