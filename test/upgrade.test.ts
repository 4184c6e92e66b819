/**
 * Upgrading in place: a database of the schema before the immutable outbox (version 4), with
 * events delivered, pending, waiting for a next round, failed and skipped in it, is migrated by
 * `install`; afterwards every undelivered event is delivered, in order, with its webhook-id, and
 * nothing already delivered goes again. An install that changes the schema waits for relays of
 * another version to stop.
 */
import t from 'tap';
import { loadMigrations, BOOTSTRAP_SQL } from '../src/db/migrations.ts';
import { retry } from '../src/ops/retry.ts';
import { runCli } from './helpers/cli.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { startReceiver, waitFor } from './helpers/receiver.ts';
import { eventStatuses, startTestRelay } from './helpers/relay.ts';
import { testSettings } from './helpers/settings.ts';

/** suekk_sync as version 4 left it: its migrations and state (capture is rebuilt by install). */
async function schemaV4(db: TestDatabase): Promise<void> {
  await db.pool.query(BOOTSTRAP_SQL.join(';\n'));
  for (const m of loadMigrations().filter((m) => m.version <= 4)) {
    await db.pool.query(m.sql);
    await db.pool.query('insert into suekk_sync.migrations (version, name) values ($1, $2)', [m.version, m.name]);
  }
  await db.pool.query("update suekk_sync.state set source_table = 'public.users', primary_key = 'id', notify = true");
}

interface V4Event {
  user: string;
  status: 'pending' | 'delivered' | 'failed' | 'skipped';
  rounds?: number;
  attempts?: number;
  nextIn?: string;
  lastStatus?: number;
}

/** Events as a version-4 relay left them, in capture order, with the streams it kept. */
async function eventsV4(db: TestDatabase, events: V4Event[]): Promise<void> {
  for (const [i, e] of events.entries()) {
    await db.pool.query(
      `insert into suekk_sync.events (user_id, action, payload, source, status, attempts, rounds, next_attempt_at, last_status, last_error,
                                      delivered_at)
       values ($1, $2, jsonb_build_object('id', $1::text, 'email', $1 || '@x.io', 'username', $1, 'displayName', 'v' || $3::text,
                                          'avatar', null, 'role', 'user', 'isActive', true),
               'trigger', $4, $5, $6, now() + $7::interval, $8::int, case when $8::int is not null then 'HTTP ' || $8::int end,
               case when $4 = 'delivered' then now() end)`,
      [
        e.user,
        i === 0 ? 'created' : 'updated',
        i,
        e.status,
        e.attempts ?? (e.status === 'pending' ? 0 : 1),
        e.rounds ?? (e.status === 'pending' ? 0 : 1),
        e.nextIn ?? '0 seconds',
        e.lastStatus ?? null,
      ],
    );
  }
  await db.pool.query(
    `insert into suekk_sync.streams (user_id, next_attempt_at, parked)
     select user_id,
            case when bool_or(status = 'failed') then null else min(next_attempt_at) filter (where status = 'pending') end,
            bool_or(status = 'failed')
       from suekk_sync.events where status in ('pending', 'failed') group by user_id`,
  );
}

t.test(
  'install upgrades a version-4 outbox in place: every undelivered event delivered in order, nothing sent twice',
  async (t) => {
    const db = await createTestDatabase(t, 'users');
    await schemaV4(db);
    await eventsV4(db, [
      { user: 'ann', status: 'delivered' },
      { user: 'ann', status: 'pending' },
      { user: 'ann', status: 'pending' },
      { user: 'bob', status: 'pending', rounds: 1, attempts: 3, nextIn: '1 second', lastStatus: 503 },
      { user: 'bob', status: 'pending' },
      { user: 'cat', status: 'failed', lastStatus: 400 },
      { user: 'cat', status: 'pending' },
      { user: 'dan', status: 'skipped', lastStatus: 400 },
      { user: 'dan', status: 'delivered' },
      { user: 'dan', status: 'pending' },
      { user: 'eve', status: 'delivered' },
    ]);
    const { rows: before } = await db.pool.query<{ user_id: string; webhook_id: string; status: string; name: string }>(
      "select user_id, 'evt_' || webhook_id as webhook_id, status, payload->>'displayName' as name from suekk_sync.events order by id",
    );

    // A relay of the earlier version still running: the schema must not change under it.
    await db.pool.query("insert into suekk_sync.relays (id, host, pid, version) values ('old-relay', 'h', 1, '0.1.0')");
    const env = { DATABASE_URL: db.url };
    const refused = await runCli(['install'], { env });
    t.equal(refused.code, 2);
    t.match(
      refused.stderr,
      /^suekk-sync: This install changes the suekk_sync schema while 1 relay of version 0\.1\.0 is still running against it; stop it first .*, or pass --force\.\n$/,
    );
    t.same(
      (await db.pool.query('select max(version)::int as v from suekk_sync.migrations')).rows,
      [{ v: 4 }],
      'nothing changed',
    );
    const upgraded = await runCli(['install', '--force'], { env });
    t.equal(upgraded.code, 0, upgraded.stderr);
    t.match(upgraded.stdout, /schema version 4 → 5/);

    t.same(
      await eventStatuses(db),
      { delivered: 3, pending: 6, failed: 1, skipped: 1 },
      'every event kept, in its state',
    );
    const { rows: waiting } = await db.pool.query(
      'select rounds, attempts, last_status from suekk_sync.event_log where user_id = $1 order by id limit 1',
      ['bob'],
    );
    t.same(waiting, [{ rounds: 1, attempts: 3, last_status: 503 }], "bob's head keeps its rounds and answer");

    const receiver = await startReceiver(t);
    await startTestRelay(t, db, receiver.url);
    await waitFor(() => receiver.delivered.length === 5, 'the pending events of ann, bob and dan', 20_000);
    await new Promise((r) => setTimeout(r, 300));
    t.equal(receiver.delivered.length, 5, "nothing of cat's: parked behind its failed event");
    await retry(db.pool, testSettings(db.url, receiver.url), { allFailed: true });
    await waitFor(() => receiver.delivered.length === 7, "cat's events after retry", 20_000);

    const expected = before.filter((e) => e.status === 'pending' || e.status === 'failed');
    const perUser = (list: { user: string; webhookId: string }[]) => {
      const m = new Map<string, string[]>();
      for (const r of list) m.set(r.user, [...(m.get(r.user) ?? []), r.webhookId]);
      return Object.fromEntries(m);
    };
    t.same(
      perUser(receiver.delivered.map((r) => ({ user: String(r.body.id), webhookId: r.webhookId }))),
      perUser(expected.map((e) => ({ user: e.user_id, webhookId: e.webhook_id }))),
      'each user in capture order, with the webhook-ids captured before the upgrade',
    );
    t.equal(
      new Set(receiver.delivered.map((r) => r.webhookId)).size,
      7,
      'nothing sent twice, nothing delivered before sent again',
    );
    t.same(
      receiver.delivered.find((r) => r.body.id === 'ann')!.rawBody,
      `{"id":"ann","email":"ann@x.io","username":"ann","displayName":"v1","avatar":"","role":"user","isActive":true,"action":"updated"}`,
      "bodies rendered from the stored payloads in the contract's order",
    );
    await waitFor(async () => (await eventStatuses(db)).pending === undefined, 'everything recorded');
    t.same(await eventStatuses(db), { delivered: 10, skipped: 1 });
  },
);
