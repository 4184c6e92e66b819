/** An in-process relay with small delays, stopped at the test's teardown. */
import { Writable } from 'node:stream';
import { DEFAULT_RELAY, type RelaySettings } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import { Relay } from '../../src/relay/relay.ts';
import { createWebhookSender } from '../../src/webhook/sender.ts';
import { parseSecrets } from '../../src/webhook/signature.ts';
import type { TestDatabase } from './db.ts';

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
  stop(): Promise<void>;
}

export async function startTestRelay(
  t: { teardown(fn: () => unknown): void },
  db: TestDatabase,
  url: string,
  options: { settings?: Partial<RelaySettings>; secrets?: string[]; token?: string; listen?: boolean; maintenance?: boolean } = {},
): Promise<TestRelay> {
  const settings = { ...FAST_RELAY, ...options.settings };
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
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
  return { relay, logs, stop };
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
    'select status, count(*)::int as n from suekk_sync.events group by status',
  );
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}
