/** The relay as operators run it: a process that is started, killed, stopped and started again. */
import t from 'tap';
import { createTestDatabase } from './helpers/db.ts';
import { collect, runCli, settled, startCli } from './helpers/cli.ts';
import { startReceiver, waitFor, type ReceivedRequest } from './helpers/receiver.ts';
import { addUsers, eventStatuses } from './helpers/relay.ts';

const FAST_FLAGS = ['--backoff-ms', '20', '--retry-schedule', '200ms', '--poll-interval-ms', '300'];

function relayProcess(t: { teardown(fn: () => unknown): void }, env: Record<string, string>, flags: string[] = []) {
  const child = startCli(['relay', ...FAST_FLAGS, ...flags], { env });
  const done = collect(child, 120_000);
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await settled(done);
  });
  return { child, done };
}

function firstArrivalsInOrder(requests: ReceivedRequest[]): Map<string, string[]> {
  const seen = new Set<string>();
  const order = new Map<string, string[]>();
  for (const r of requests) {
    if (seen.has(r.webhookId)) continue;
    seen.add(r.webhookId);
    order.set(String(r.body.id), [...(order.get(String(r.body.id)) ?? []), r.webhookId]);
  }
  return order;
}

t.test('start-up refuses bad configuration with exit 2 and one sentence', async (t) => {
  const db = await createTestDatabase(t);
  const noUrl = await runCli(['relay'], { env: { DATABASE_URL: db.url } });
  t.equal(noUrl.code, 2);
  t.match(noUrl.stderr, /BACKEND_SYNC_URL/);
  t.equal(noUrl.stderr.trim().split('\n').length, 1, 'one line');
  const ftp = await runCli(['relay'], { env: { DATABASE_URL: db.url, BACKEND_SYNC_URL: 'ftp://example.com/x' } });
  t.equal(ftp.code, 2);
  t.match(ftp.stderr, /http/);
  const badSecret = await runCli(['relay'], {
    env: { DATABASE_URL: db.url, BACKEND_SYNC_URL: 'http://127.0.0.1:9/x', WEBHOOK_SECRET: 'hunter2hunter2' },
  });
  t.equal(badSecret.code, 2);
  t.match(badSecret.stderr, /WEBHOOK_SECRET/);
  t.notMatch(badSecret.stderr, /hunter2/, 'the bad secret is not echoed');
  const noDb = await runCli(['relay'], {
    env: { DATABASE_URL: 'postgres://postgres:pw@127.0.0.1:1/x', BACKEND_SYNC_URL: 'http://127.0.0.1:9/x' },
  });
  t.equal(noDb.code, 2);
  t.match(noDb.stderr, /Cannot reach the database/);
  const notInstalled = await createTestDatabase(t, 'users');
  const noSchema = await runCli(['relay'], {
    env: { DATABASE_URL: notInstalled.url, BACKEND_SYNC_URL: 'http://127.0.0.1:9/x' },
  });
  t.equal(noSchema.code, 2);
  t.match(noSchema.stderr, /not installed.*suekk-sync install/);
  const badFlag = await runCli(['relay', '--concurrency', 'many'], { env: { DATABASE_URL: db.url } });
  t.equal(badFlag.code, 2);
  t.match(badFlag.stderr, /--concurrency/);
});

t.test(
  'SIGKILL mid-stream, started again: everything delivered, only what the killed turns had not recorded repeated',
  async (t) => {
    const db = await createTestDatabase(t);
    const receiver = await startReceiver(t, () => ({ status: 200, delayMs: 15 }));
    const env = { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url };
    const ids = await addUsers(db, 30);
    for (let round = 0; round < 4; round++) {
      await db.pool.query("update users set first_name = 'r' || $1::text", [round]);
    }
    const total = 30 * 5;
    const first = relayProcess(t, env, ['--concurrency', '4', '--lease-ms', '1500']);
    await waitFor(() => receiver.requests.length >= 40, '40 deliveries before the kill', 30_000);
    first.child.kill('SIGKILL');
    const killed = await first.done;
    t.equal(killed.signal, 'SIGKILL');
    const beforeRestart = receiver.requests.length;
    // A relay records a user's progress once per turn (a turn ends after at most 5 events when
    // others wait): what the killed relay sent in turns it had not recorded yet may go again.
    const { rows: unrecorded } = await db.pool.query<{ w: string }>(
      `select 'evt_' || e.webhook_id as w from suekk_sync.events e join suekk_sync.streams s using (user_id)
      where e.id > s.delivered_through`,
    );
    const mayRepeat = new Set(
      receiver.requests.map((r) => r.webhookId).filter((w) => unrecorded.some((u) => u.w === w)),
    );

    const second = relayProcess(t, env, ['--concurrency', '4', '--lease-ms', '1500']);
    await waitFor(
      async () => (await eventStatuses(db)).delivered === total,
      'every event delivered',
      60_000,
      () => receiver.requests.length,
    );
    second.child.kill('SIGTERM');
    t.equal((await second.done).code, 0);

    const unique = new Set(receiver.requests.map((r) => r.webhookId));
    t.equal(unique.size, total, 'every event arrived');
    const counts = new Map<string, number>();
    for (const r of receiver.requests) counts.set(r.webhookId, (counts.get(r.webhookId) ?? 0) + 1);
    const repeated = [...counts].filter(([, n]) => n > 1).map(([w]) => w);
    t.same(
      repeated.filter((w) => !mayRepeat.has(w)),
      [],
      `repeats only of events sent in unrecorded turns (${repeated.length} repeated, ${beforeRestart} sent before the kill)`,
    );
    // Four places, a turn of at most five events each, and the request each had in flight.
    t.ok(mayRepeat.size <= 4 * 6, `at most a turn per place unrecorded at the kill (${mayRepeat.size})`);
    const { rows } = await db.pool.query<{ user_id: string; webhook_id: string }>(
      'select user_id, webhook_id::text from suekk_sync.event_log order by id',
    );
    const capture = new Map<string, string[]>();
    for (const r of rows) capture.set(r.user_id, [...(capture.get(r.user_id) ?? []), `evt_${r.webhook_id}`]);
    t.same(firstArrivalsInOrder(receiver.requests), capture, 'each user in capture order');
    t.equal(ids.length, 30);
  },
);

t.test('SIGTERM: exit 0, and another relay takes the released users at once, not after the lease', async (t) => {
  const db = await createTestDatabase(t);
  // Slow until the second relay is up (which can take long on a loaded machine), so the first
  // still has most of the work when it is stopped.
  let delayMs = 3_000;
  const receiver = await startReceiver(t, () => ({ status: 200, delayMs }));
  const env = { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url };
  await addUsers(db, 12);
  for (let round = 0; round < 15; round++)
    await db.pool.query("update users set first_name = 'r' || $1::text", [round]);
  const total = 12 * 16;
  // A lease far longer than the test: only a released stream can move to the other relay in time.
  const stopping = relayProcess(t, env, ['--concurrency', '12', '--lease-ms', '60000']);
  await waitFor(() => receiver.requests.length >= 12, 'the first relay busy with every user', 30_000);
  const other = relayProcess(t, env, ['--concurrency', '12', '--lease-ms', '60000']);
  await waitFor(
    async () => {
      const { rows } = await db.pool.query('select count(*)::int as n from suekk_sync.relays');
      return rows[0].n === 2;
    },
    'the second relay up (and idle: the first holds every user)',
    60_000,
  );
  delayMs = 400;
  t.ok((await eventStatuses(db)).pending! > 24, 'the first relay still has work when it is stopped');
  stopping.child.kill('SIGTERM');
  const stopped = await stopping.done;
  t.equal(stopped.code, 0, stopped.stderr);
  t.match(stopped.stdout, /SIGTERM: stopping/);
  t.match(stopped.stdout, /Relay stopped/);
  // Well inside the 60 s lease: the users were handed back, not left to expire.
  await waitFor(
    async () => (await eventStatuses(db)).delivered === total,
    'the other relay finished the users',
    20_000,
  );
  t.equal(new Set(receiver.requests.map((r) => r.webhookId)).size, total);
  t.equal(receiver.requests.length, total, 'a graceful stop repeats nothing');
  const relays = await db.pool.query('select count(*)::int as n from suekk_sync.relays');
  t.same(relays.rows, [{ n: 1 }], 'the stopped relay removed its heartbeat row');
  other.child.kill('SIGTERM');
  const otherDone = await other.done;
  t.equal(otherDone.code, 0);
});

t.test('a relay notices a killed LISTEN connection and still delivers promptly', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  const env = { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url };
  // A poll far longer than the test: only LISTEN (re-established) can explain prompt delivery.
  const relay = relayProcess(t, env, ['--poll-interval-ms', '60000']);
  await addUsers(db, 1, 'before');
  await waitFor(() => receiver.delivered.length === 1, 'first delivery', 20_000);
  const { rows: killed } = await db.pool.query<{ pid: number }>(
    "select pid, pg_terminate_backend(pid) from pg_stat_activity where application_name = 'suekk-sync relay listen' and datname = current_database()",
  );
  // pg_terminate_backend returns once the signal is sent: the killed backend can stay listed for a
  // moment, and must not pass for the new connection.
  await waitFor(
    async () => {
      const { rows } = await db.pool.query(
        "select count(*)::int as n from pg_stat_activity where application_name = 'suekk-sync relay listen' and datname = current_database() and pid <> all($1::int[])",
        [killed.map((r) => r.pid)],
      );
      return rows[0].n === 1;
    },
    'LISTEN reconnected',
    20_000,
  );
  await addUsers(db, 1, 'after');
  await waitFor(() => receiver.delivered.length === 2, 'delivered after the reconnect', 10_000);
  relay.child.kill('SIGTERM');
  const out = await relay.done;
  t.equal(out.code, 0);
  t.match(out.stdout, /LISTEN connection is back/);
});

t.test('the pool self-check refuses a connection where LISTEN cannot work', async (t) => {
  // Stand-in for a transaction-pooling PgBouncer: a listen URL pointing at another database, so
  // notifications sent in the relay's database never reach the LISTEN connection.
  const db = await createTestDatabase(t);
  const elsewhere = await createTestDatabase(t, 'users');
  const res = await runCli(['relay'], {
    env: { DATABASE_URL: db.url, DATABASE_LISTEN_URL: elsewhere.url, BACKEND_SYNC_URL: 'http://127.0.0.1:9/x' },
    timeoutMs: 30_000,
  });
  t.equal(res.code, 2);
  t.match(res.stderr, /LISTEN does not work.*DATABASE_LISTEN_URL/);
});
