/** An in-process relay with small delays, stopped at the test's teardown. */
import { Writable } from 'node:stream';
import { DEFAULT_RELAY, type RelaySettings } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import { Relay } from '../../src/relay/relay.ts';
import { createWebhookSender } from '../../src/webhook/sender.ts';
import { parseSecrets } from '../../src/webhook/signature.ts';
import type { TestDatabase } from './db.ts';
import { findLeaks, SecretLeakError, type KnownSecret, type Leak } from './secrets.ts';

/** Small delays so rounds, schedules and leases play out in a test's time. */
export const FAST_RELAY: RelaySettings = {
  ...DEFAULT_RELAY,
  timeoutMs: 1_000,
  backoffMs: 20,
  retryScheduleMs: [150],
  giveUpAfterMs: 60_000,
  concurrency: 8,
  batchSize: 50,
  pollIntervalMs: 250,
  leaseMs: 3_000,
  breakerThreshold: 1_000,
};

export interface TestRelay {
  relay: Relay;
  logs: Record<string, unknown>[];
  /** Secrets found in `logs`; only filled with `expectLeaks`, otherwise a leak fails the test. */
  leaks: Leak[];
  stop(): Promise<void>;
}

export async function startTestRelay(
  t: { teardown(fn: () => unknown): void },
  db: TestDatabase,
  url: string,
  options: {
    settings?: Partial<RelaySettings>;
    secrets?: string[];
    token?: string;
    listen?: boolean;
    maintenance?: boolean;
    /** Record leaks in `leaks` instead of failing: for the test that shows the sweep works. */
    expectLeaks?: boolean;
  } = {},
): Promise<TestRelay> {
  const settings = { ...FAST_RELAY, ...options.settings };
  const logs: Record<string, unknown>[] = [];
  const leaks: Leak[] = [];
  const given: KnownSecret[] = [
    ...(options.secrets ?? []).map((value, i) => ({ label: `webhook secret ${i + 1} given to the relay`, value })),
    ...(options.token ? [{ label: 'bearer token given to the relay', value: options.token }] : []),
  ];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (!line) continue;
        logs.push(JSON.parse(line) as Record<string, unknown>);
        const found = findLeaks(line, `relay log line ${logs.length}`, { secrets: given });
        leaks.push(...found);
        // Thrown outside the logger, so tap fails the running test instead of pino swallowing it.
        if (found.length > 0 && !options.expectLeaks) {
          setImmediate(() => {
            throw new SecretLeakError(found, 'The in-process relay');
          });
        }
      }
      done();
    },
  });
  const logger = createLogger('debug', sink);
  const sender = createWebhookSender({
    url,
    secrets: parseSecrets(options.secrets ?? []),
    token: options.token,
    timeoutMs: settings.timeoutMs,
    connections: settings.concurrency,
  });
  const relay = new Relay({
    pool: db.pool,
    sender,
    settings,
    logger,
    listenUrl: options.listen === false ? undefined : db.url,
    heartbeat: true,
    maintenance: options.maintenance ?? false,
  });
  await relay.start();
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await relay.stop();
    await sender.close();
  };
  t.teardown(stop);
  return { relay, logs, leaks, stop };
}

export async function addUsers(db: TestDatabase, count: number, prefix = 'user'): Promise<string[]> {
  const { rows } = await db.pool.query<{ id: string }>(
    `insert into users (email, username, password, first_name, last_name)
     select $1 || g || '@example.com', $1 || g, 'x', 'First', 'Last' from generate_series(1, $2) g
     returning id`,
    [prefix, count],
  );
  return rows.map((r) => r.id);
}

export async function eventStatuses(db: TestDatabase): Promise<Record<string, number>> {
  const { rows } = await db.pool.query<{ status: string; n: number }>(
    'select status, count(*)::int as n from suekk_sync.event_log group by status',
  );
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}
