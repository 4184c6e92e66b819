/** resync against a real database and receiver: batches, races, resume, priority, the CLI. */
import t from 'tap';
import { resync, type ResyncProgress } from '../src/ops/resync.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { runCli } from './helpers/cli.ts';
import { startReceiver, waitFor } from './helpers/receiver.ts';
import { addUsers, eventStatuses, startTestRelay } from './helpers/relay.ts';
import { testSettings } from './helpers/settings.ts';

/** Users that exist before suekk-sync could see them: the drift resync repairs. */
async function preexistingUsers(db: TestDatabase, count: number, prefix = 'old'): Promise<void> {
  await db.pool.query(
    'alter table users disable trigger suekk_sync_capture, disable trigger suekk_sync_capture_update',
  );
  await addUsers(db, count, prefix);
  await db.pool.query('alter table users enable trigger suekk_sync_capture, enable trigger suekk_sync_capture_update');
}

t.test('resync --all with no relay running delivers every user itself, piped output plain', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  await preexistingUsers(db, 120);
  await db.pool.query(
    "alter table users disable trigger suekk_sync_capture, disable trigger suekk_sync_capture_update; update users set deleted_at = now() where username = 'old7'; alter table users enable trigger suekk_sync_capture, enable trigger suekk_sync_capture_update",
  );
  const res = await runCli(['resync', '--all', '--batch-size', '50'], {
    env: { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url },
  });
  t.equal(res.code, 0, res.stderr);
  t.match(res.stdout, /Resync run \d+: 120 of 120 delivered, 0 failed, 0 waiting/);
  t.notMatch(res.stdout, /\u001b\[/, 'no terminal escapes when piped');
  t.equal(receiver.delivered.length, 120);
  t.equal(new Set(receiver.delivered.map((r) => r.body.id)).size, 120);
  const deleted = receiver.delivered.filter((r) => r.body.action === 'deleted');
  t.same(
    deleted.map((r) => r.body.username),
    ['old7'],
    'a soft-deleted user goes as deleted, the rest as created',
  );
  const { rows } = await db.pool.query(
    'select distinct source, run_id is not null as has_run from suekk_sync.event_log',
  );
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
  const order = await db.pool.query<{ user_id: string; webhook_id: string }>(
    'select user_id, webhook_id::text from suekk_sync.event_log order by id',
  );
  const capture = new Map<string, string[]>();
  for (const r of order.rows) capture.set(r.user_id, [...(capture.get(r.user_id) ?? []), `evt_${r.webhook_id}`]);
  const arrival = new Map<string, string[]>();
  for (const r of receiver.delivered)
    arrival.set(String(r.body.id), [...(arrival.get(String(r.body.id)) ?? []), r.webhookId]);
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
  const res = await runCli(['resync', '--resume', '--json'], {
    env: { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url },
  });
  t.equal(res.code, 0, res.stderr);
  t.match(JSON.parse(res.stdout), { runId: first.runId, enqueued: 100, delivered: 100 });
  const { rows } = await db.pool.query(
    'select count(*)::int as n, count(distinct user_id)::int as users from suekk_sync.event_log',
  );
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
  await db.pool.query(`alter table users disable trigger suekk_sync_capture, disable trigger suekk_sync_capture_update;
    update users set updated_at = '2020-01-01' where username in ('old1', 'old2', 'old3', 'old4', 'old5', 'old6', 'old7');
    alter table users enable trigger suekk_sync_capture, enable trigger suekk_sync_capture_update`);
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

/** The run's counts the slow, obvious way: every event of the run, and what is ahead of each. */
async function groundTruth(db: TestDatabase, runId: string) {
  const { rows } = await db.pool.query<Record<string, number>>(
    `select count(*)::int as enqueued,
            count(*) filter (where status in ('delivered', 'skipped'))::int as delivered,
            count(*) filter (where status = 'failed')::int as failed,
            count(*) filter (where status = 'pending' and rounds > 0)::int as waiting,
            count(*) filter (where status = 'pending' and rounds = 0 and exists (
              select 1 from suekk_sync.event_log p where p.user_id = e.user_id and p.id < e.id
                 and (p.status = 'failed' or (p.status = 'pending' and p.rounds > 0))))::int as blocked,
            count(*) filter (where status = 'pending' and rounds = 0 and not exists (
              select 1 from suekk_sync.event_log p where p.user_id = e.user_id and p.id < e.id
                 and (p.status = 'failed' or (p.status = 'pending' and p.rounds > 0))))::int as queued
       from suekk_sync.event_log e where run_id = $1`,
    [runId],
  );
  return rows[0]!;
}

t.test('resync counts are exact: delivered, failed, waiting, and blocked behind held-back events', async (t) => {
  const db = await createTestDatabase(t);
  // Users named f* and g* are refused (400, failed at once), w* and h* answered 503 (waiting an hour).
  const receiver = await startReceiver(t, (req) => {
    const name = String(req.body.username);
    return { status: /^[fg]/.test(name) ? 400 : /^[wh]/.test(name) ? 503 : 200 };
  });
  await preexistingUsers(db, 20, 'ok');
  await preexistingUsers(db, 3, 'g');
  await preexistingUsers(db, 2, 'h');
  await startTestRelay(t, db, receiver.url, {
    settings: { maxAttempts: 1, retryScheduleMs: [3_600_000], giveUpAfterMs: 7_200_000 },
  });
  // f* and w* already have a live change held back when the resync starts: theirs wait behind it.
  await addUsers(db, 4, 'f');
  await addUsers(db, 2, 'w');
  let held: unknown;
  await waitFor(
    async () => {
      const { rows } = await db.pool.query<{ status: string; rounds: number; username: string }>(
        "select status, rounds, payload->>'username' as username from suekk_sync.event_log order by id",
      );
      held = rows;
      return (
        rows.filter((r) => r.status === 'failed').length === 4 &&
        rows.filter((r) => r.status === 'pending' && r.rounds > 0).length === 2
      );
    },
    'the live changes of f* failed and of w* waiting',
    15_000,
    () => held,
  );
  const reports: ResyncProgress[] = [];
  const result = await resync(db.pool, testSettings(db.url, receiver.url), {
    scope: { all: true },
    batchSize: 7,
    progressIntervalMs: 0,
    onProgress: (p) => reports.push(p),
  });
  t.match(result, {
    total: 31,
    enqueued: 31,
    delivered: 20,
    failed: 3,
    waiting: 2,
    blocked: 6,
    queued: 0,
    interrupted: false,
    delivery: 'relay',
  });
  t.same(await groundTruth(db, result.runId), {
    enqueued: 31,
    delivered: 20,
    failed: 3,
    waiting: 2,
    blocked: 6,
    queued: 0,
  });
  t.ok(reports.length > 3, `${reports.length} reports`);
  for (const p of reports) {
    if (p.delivered + p.failed + p.waiting + p.blocked + p.queued !== p.enqueued || p.delivered < 0) {
      t.fail(`a report that does not add up: ${JSON.stringify(p)}`);
    }
  }
  t.same(
    reports.map((p) => p.enqueued),
    [...reports.map((p) => p.enqueued)].sort((a, b) => a - b),
    'the enqueued figure never goes back',
  );
});

t.test('while waiting, enqueueing keeps at most maxQueued events of the run ahead of the relays', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t, () => ({ status: 200, delayMs: 2 }));
  await preexistingUsers(db, 300);
  await startTestRelay(t, db, receiver.url, { settings: { concurrency: 2, batchSize: 5 } });
  let maxOpen = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const { rows } = await db.pool.query<{ n: number }>(
        "select count(*)::int as n from suekk_sync.event_log where status = 'pending'",
      );
      maxOpen = Math.max(maxOpen, rows[0]!.n);
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  const reports: ResyncProgress[] = [];
  const result = await resync(db.pool, testSettings(db.url, receiver.url), {
    scope: { all: true },
    batchSize: 10,
    maxQueued: 40,
    progressIntervalMs: 0,
    onProgress: (p) => reports.push(p),
  });
  sampling = false;
  await sampler;
  t.match(result, { enqueued: 300, delivered: 300, queued: 0 });
  t.ok(maxOpen <= 50, `at most maxQueued + a batch pending at once (${maxOpen})`);
  t.ok(Math.max(...reports.map((p) => p.queued)) <= 50, 'and the reports say so');
  t.equal(receiver.delivered.length, 300);
});

t.test('resync --no-wait --json enqueues and reports exact counts without waiting', async (t) => {
  const db = await createTestDatabase(t);
  await preexistingUsers(db, 45);
  const res = await runCli(['resync', '--all', '--no-wait', '--json', '--batch-size', '10'], {
    env: { DATABASE_URL: db.url },
  });
  t.equal(res.code, 0, res.stderr);
  const summary = JSON.parse(res.stdout) as Record<string, unknown>;
  t.match(summary, {
    total: 45,
    enqueued: 45,
    delivered: 0,
    failed: 0,
    waiting: 0,
    blocked: 0,
    queued: 45,
    interrupted: false,
    delivery: 'none',
  });
  const { rows } = await db.pool.query(
    'select enqueued::int, cursor is not null as has_cursor, finished_at is not null as finished from suekk_sync.resync_runs',
  );
  t.same(rows, [{ enqueued: 45, has_cursor: true, finished: true }]);
});
