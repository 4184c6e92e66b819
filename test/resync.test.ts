/** resync against a real database and receiver: batches, races, resume, priority, the CLI. */
import t from 'tap';
import { resync } from '../src/ops/resync.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { runCli } from './helpers/cli.ts';
import { startReceiver, waitFor } from './helpers/receiver.ts';
import { addUsers, eventStatuses, startTestRelay } from './helpers/relay.ts';
import { testSettings } from './helpers/settings.ts';

/** Users that exist before suekk-sync could see them: the drift resync repairs. */
async function preexistingUsers(db: TestDatabase, count: number): Promise<void> {
  await db.pool.query('alter table users disable trigger suekk_sync_capture');
  await addUsers(db, count, 'old');
  await db.pool.query('alter table users enable trigger suekk_sync_capture');
}

t.test('resync --all with no relay running delivers every user itself, piped output plain', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  await preexistingUsers(db, 120);
  await db.pool.query("alter table users disable trigger suekk_sync_capture; update users set deleted_at = now() where username = 'old7'; alter table users enable trigger suekk_sync_capture");
  const res = await runCli(['resync', '--all', '--batch-size', '50'], { env: { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url } });
  t.equal(res.code, 0, res.stderr);
  t.match(res.stdout, /Resync run \d+: 120 of 120 delivered, 0 failed, 0 waiting/);
  t.notMatch(res.stdout, /\u001b\[/, 'no terminal escapes when piped');
  t.equal(receiver.delivered.length, 120);
  t.equal(new Set(receiver.delivered.map((r) => r.body.id)).size, 120);
  const deleted = receiver.delivered.filter((r) => r.body.action === 'deleted');
  t.same(deleted.map((r) => r.body.username), ['old7'], 'a soft-deleted user goes as deleted, the rest as created');
  const { rows } = await db.pool.query("select distinct source, run_id is not null as has_run from suekk_sync.events");
  t.same(rows, [{ source: 'resync', has_run: true }]);
});

t.test('resync --dry-run sends nothing; --json prints one summary; bad usage exits 2', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  await preexistingUsers(db, 7);
  const env = { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url };
  const dry = await runCli(['resync', '--all', '--dry-run'], { env });
  t.equal(dry.code, 0, dry.stderr);
  t.match(dry.stdout, /Would resync 7 users; nothing was sent/);
  t.match(dry.stdout, /old\d/);
  t.same(await eventStatuses(db), {});
  const json = await runCli(['resync', '--user', 'old1', 'old2@example.com', '--json'], { env });
  t.equal(json.code, 0, json.stderr);
  const summary = JSON.parse(json.stdout) as Record<string, unknown>;
  t.match(summary, { total: 2, enqueued: 2, delivered: 2, failed: 0, interrupted: false, delivery: 'inline' });
  t.equal(json.stdout.trim().split('\n').length, 1);
  const none = await runCli(['resync'], { env });
  t.equal(none.code, 2);
  t.match(none.stderr, /--all, --user/);
  const unknown = await runCli(['resync', '--user', 'nobody'], { env });
  t.equal(unknown.code, 2);
  t.match(unknown.stderr, /No user matches "nobody"/);
  const noBackend = await runCli(['resync', '--all'], { env: { DATABASE_URL: db.url } });
  t.equal(noBackend.code, 2);
  t.match(noBackend.stderr, /No relay is running and BACKEND_SYNC_URL is not set/);
});

t.test('resync racing a writer never delivers a state older than one already captured', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  await preexistingUsers(db, 200);
  await startTestRelay(t, db, receiver.url, { settings: { concurrency: 8 } });
  const ids = (await db.pool.query<{ id: string }>('select id from users order by id')).rows.map((r) => r.id);
  let writing = true;
  const writer = (async () => {
    let n = 0;
    while (writing) {
      const id = ids[(n * 37) % ids.length]!;
      await db.pool.query('update users set first_name = $2 where id = $1', [id, `w${n}`]);
      n++;
    }
    return n;
  })();
  const result = await resync(db.pool, testSettings(db.url, receiver.url), { scope: { all: true }, batchSize: 20 });
  writing = false;
  const writes = await writer;
  t.equal(result.enqueued, 200);
  t.ok(writes > 20, `${writes} writes raced the resync`);
  await waitFor(async () => (await eventStatuses(db)).pending === undefined, 'everything delivered', 30_000);
  // Per user, the backend's last state is the database's, and arrivals follow capture order.
  const { rows } = await db.pool.query<{ id: string; first_name: string }>('select id, first_name from users');
  const last = new Map<string, string>();
  for (const r of receiver.delivered) last.set(String(r.body.id), String(r.body.displayName));
  for (const row of rows) t.equal(last.get(row.id), `${row.first_name} Last`, `user ${row.id}`);
  const order = await db.pool.query<{ user_id: string; webhook_id: string }>('select user_id, webhook_id::text from suekk_sync.events order by id');
  const capture = new Map<string, string[]>();
  for (const r of order.rows) capture.set(r.user_id, [...(capture.get(r.user_id) ?? []), `evt_${r.webhook_id}`]);
  const arrival = new Map<string, string[]>();
  for (const r of receiver.delivered) arrival.set(String(r.body.id), [...(arrival.get(String(r.body.id)) ?? []), r.webhookId]);
  t.same(arrival, capture);
});

t.test('an interrupted resync resumes from its cursor, enqueueing each user once', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  await preexistingUsers(db, 100);
  const settings = testSettings(db.url, receiver.url);
  const controller = new AbortController();
  const first = await resync(db.pool, settings, {
    scope: { all: true },
    batchSize: 30,
    wait: false,
    signal: controller.signal,
    onProgress: (p) => {
      if (p.enqueued >= 30) controller.abort();
    },
    progressIntervalMs: 0,
  });
  t.equal(first.interrupted, true);
  t.ok(first.enqueued >= 30 && first.enqueued < 100, `stopped after a batch (${first.enqueued})`);
  const res = await runCli(['resync', '--resume', '--json'], { env: { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url } });
  t.equal(res.code, 0, res.stderr);
  t.match(JSON.parse(res.stdout), { runId: first.runId, enqueued: 100, delivered: 100 });
  const { rows } = await db.pool.query('select count(*)::int as n, count(distinct user_id)::int as users from suekk_sync.events');
  t.same(rows, [{ n: 100, users: 100 }]);
  const again = await runCli(['resync', '--resume'], { env: { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url } });
  t.equal(again.code, 2);
  t.match(again.stderr, /no interrupted resync/);
});

t.test('live changes overtake a running resync', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t, () => ({ status: 200, delayMs: 5 }));
  await preexistingUsers(db, 300);
  await resync(db.pool, testSettings(db.url, receiver.url), { scope: { all: true }, wait: false, batchSize: 300 });
  await startTestRelay(t, db, receiver.url, { settings: { concurrency: 2, batchSize: 2 } });
  await waitFor(() => receiver.delivered.length >= 10, 'the resync under way');
  const [live] = await addUsers(db, 1, 'live');
  await waitFor(() => receiver.delivered.some((r) => r.body.id === live), 'the live user delivered', 20_000);
  const position = receiver.delivered.findIndex((r) => r.body.id === live);
  t.ok(position < 100, `the live change went at position ${position} of 301, not behind the resync`);
  await waitFor(() => receiver.delivered.length === 301, 'all delivered', 30_000);
});

t.test('resync --since sends only users updated at or after the instant', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  await preexistingUsers(db, 10);
  await db.pool.query(`alter table users disable trigger suekk_sync_capture;
    update users set updated_at = '2020-01-01' where username in ('old1', 'old2', 'old3', 'old4', 'old5', 'old6', 'old7');
    alter table users enable trigger suekk_sync_capture`);
  const res = await runCli(['resync', '--since', '2024-06-01T00:00:00Z', '--json'], {
    env: { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url },
  });
  t.equal(res.code, 0, res.stderr);
  t.match(JSON.parse(res.stdout), { total: 3, enqueued: 3, delivered: 3 });
  t.same(receiver.delivered.map((r) => r.body.username).sort(), ['old10', 'old8', 'old9']);
  const bad = await runCli(['resync', '--since', 'yesterday-ish'], { env: { DATABASE_URL: db.url } });
  t.equal(bad.code, 2);
  t.match(bad.stderr, /is not a date/);
});
