/**
 * retry, skip and resync as a first-time operator meets them: dry runs that count what the run
 * does, ids that do not exist, users nobody delivers, a pause, an interrupted wait. The real
 * executable against a real database.
 */
import t from 'tap';
import { createTestDatabase } from './helpers/db.ts';
import { collect, runCli, startCli } from './helpers/cli.ts';
import { startReceiver, waitFor } from './helpers/receiver.ts';
import { addUsers, eventStatuses, startTestRelay } from './helpers/relay.ts';
import { pendingReason, type DeliveryConditions, type EventState } from '../src/ops/settle.ts';

const ids = (out: string) => [...out.matchAll(/evt_[0-9a-f-]{36}/g)].map((m) => m[0]);

t.test('retry --all-failed: the dry run and the run select and count the same events', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t, (req) =>
    req.body.username === 'rex1' ? { status: 422, body: '{"error":"no"}' } : { status: 200 },
  );
  await startTestRelay(t, db, receiver.url);
  const [rex] = await addUsers(db, 1, 'rex');
  await waitFor(async () => (await eventStatuses(db)).failed === 1, 'rex parked');
  await db.pool.query("update users set first_name = 'Later' where id = $1", [rex]);
  const env = { DATABASE_URL: db.url };

  const dry = await runCli(['retry', '--all-failed', '--dry-run'], { env });
  t.equal(dry.code, 0, dry.stderr);
  t.match(dry.stdout, /^failed\s+created rex1 \S+ HTTP 422 .*— HTTP 422/m);
  t.match(dry.stdout, /^blocked\s+updated rex1 \S+ — waits behind an earlier event of this user$/m);
  t.match(
    dry.stdout,
    /^Would retry 2 events of 1 user: each user's first event again, with its webhook-id, then the rest in order; nothing was changed\.$/m,
  );

  const run = await runCli(['retry', '--all-failed'], { env });
  t.equal(run.code, 1, 'rejected again: exit 1');
  t.equal(ids(dry.stdout).length, 2, 'the dry run lists both events');
  t.same(ids(run.stdout), ids(dry.stdout), 'the same events, in the same order');
  t.match(run.stdout, /^0 of 2 events delivered: 1 failed, 1 waits behind an earlier event of its user\.$/m);
});

t.test('skip names the next event, which the backend may reject too; push then refuses', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t, (req) => (req.body.username === 'bob1' ? { status: 422 } : { status: 200 }));
  await startTestRelay(t, db, receiver.url);
  const [bob] = await addUsers(db, 1, 'bob');
  await waitFor(async () => (await eventStatuses(db)).failed === 1, 'bob parked');
  await db.pool.query("update users set first_name = 'Later' where id = $1", [bob]);
  const env = { DATABASE_URL: db.url };
  const { rows } = await db.pool.query<{ webhook_id: string }>(
    "select webhook_id::text from suekk_sync.event_log where action = 'updated'",
  );

  const skipped = await runCli(['skip', '--user', 'bob1'], { env });
  t.equal(skipped.code, 0, skipped.stderr);
  t.match(skipped.stdout, /^skipped\s+created bob1 evt_/m);
  t.match(
    skipped.stdout,
    `Un-parked bob1: their next pending event, evt_${rows[0]!.webhook_id} (updated), is now first in line and is sent now; if the backend rejects it too, bob1 is parked again (\`suekk-sync tail-log --user ${bob}\` shows it).`,
  );
  await waitFor(async () => (await eventStatuses(db)).failed === 1, 'bob parked again by the next event');
  const refused = await runCli(['push', 'bob1'], { env });
  t.equal(refused.code, 1);
  t.match(refused.stderr, /parked by a failed event/);

  const last = await runCli(['skip', '--user', 'bob1'], { env });
  t.equal(last.code, 0, last.stderr);
  t.match(
    last.stdout,
    `Un-parked bob1; nothing else of theirs is pending. To send their current state, run \`suekk-sync push ${bob}\`.`,
  );
  const none = await runCli(['skip', '--user', 'bob1'], { env });
  t.equal(none.code, 0);
  t.equal(none.stdout, 'Nothing to skip: bob1 has no failed event.\n');
});

t.test('retry and skip of an event that does not exist say so, with exit 2', async (t) => {
  const db = await createTestDatabase(t);
  await addUsers(db, 1);
  const env = { DATABASE_URL: db.url };
  const before = await eventStatuses(db);
  for (const command of ['retry', 'skip']) {
    const res = await runCli([command, '99999'], { env });
    t.equal(res.code, 2, command);
    t.equal(
      res.stderr,
      'suekk-sync: There is no event 99999; find event ids with `suekk-sync tail-log` (add --user <ref> or --status failed to narrow it down).\n',
    );
    t.equal(res.stdout, '');
  }
  const mixed = await runCli(['retry', '1', '99999', '--dry-run'], { env });
  t.equal(mixed.code, 2);
  t.match(mixed.stderr, /There is no event 99999;/);
  t.same(await eventStatuses(db), before);
});

t.test('retry --user with no relay running: says why it waits, never a past "next round"', async (t) => {
  const db = await createTestDatabase(t);
  let healthy = false;
  const receiver = await startReceiver(t, () => (healthy ? { status: 200 } : { status: 503 }));
  const relay = await startTestRelay(t, db, receiver.url, { settings: { maxAttempts: 1, retryScheduleMs: [200] } });
  await addUsers(db, 1, 'zed');
  await waitFor(async () => {
    const { rows } = await db.pool.query('select rounds from suekk_sync.event_log');
    return rows[0]?.rounds >= 1;
  }, 'a failed round');
  await relay.stop();
  await new Promise((r) => setTimeout(r, 400)); // its next round is now in the past
  const env = { DATABASE_URL: db.url };

  const dry = await runCli(['retry', '--user', 'zed1', '--dry-run'], { env });
  t.equal(dry.code, 0, dry.stderr);
  t.match(
    dry.stdout,
    /^waiting\s+created zed1 \S+ HTTP 503 .*— HTTP 503[^;]*; no relay is running; start `suekk-sync relay`$/m,
  );
  t.notMatch(dry.stdout, /next round/);

  const refused = await runCli(['retry', '--user', 'zed1'], { env });
  t.equal(refused.code, 2);
  t.match(refused.stderr, /nothing would deliver;.*pass --no-wait to only enqueue\.\n$/);

  const queued = await runCli(['retry', '--user', 'zed1', '--no-wait', '--json'], { env });
  t.equal(queued.code, 0, queued.stderr);
  t.match(JSON.parse(queued.stdout), {
    outcome: 'queued',
    nextAttemptAt: null,
    reason: 'no relay is running; start `suekk-sync relay`',
  });

  // With a backend URL it delivers by itself, only zed's stream.
  await addUsers(db, 1, 'other');
  healthy = true;
  const ok = await runCli(['retry', '--user', 'zed1', '--wait', '30s'], {
    env: { ...env, BACKEND_SYNC_URL: receiver.url },
  });
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout, /^delivered created zed1 /m);
  t.match(ok.stdout, /^1 of 1 event delivered\.$/m);
  t.same(
    receiver.delivered.map((r) => r.body.username),
    ['zed1'],
    "the other user's event stays for the relays",
  );

  const unknown = await runCli(['retry', '--user', 'nobody'], { env });
  t.equal(unknown.code, 2);
  t.equal(unknown.stderr, 'suekk-sync: No user matches "nobody" by id, email or username; check the reference.\n');
});

t.test('retry while paused says so once and names what is still pending when --wait runs out', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t, (req) => (req.body.username === 'kim1' ? { status: 422 } : { status: 200 }));
  await startTestRelay(t, db, receiver.url);
  await addUsers(db, 1, 'kim');
  await waitFor(async () => (await eventStatuses(db)).failed === 1, 'kim parked');
  const env = { DATABASE_URL: db.url };
  await runCli(['pause'], { env });
  const res = await runCli(['retry', '--user', 'kim1', '--wait', '1s'], { env });
  t.equal(res.code, 1);
  t.match(res.stdout, /^queued\s+created kim1 \S+ HTTP 422 .*— delivery is paused; run `suekk-sync resume`$/m);
  t.match(res.stdout, /^0 of 1 event delivered: 1 not sent yet\.$/m);
  t.same(res.stderr.trim().split('\n'), [
    'Delivery is paused, so nothing is sent until someone runs `suekk-sync resume`; waiting at most 1s.',
    'suekk-sync: Gave up waiting after 1s with 1 event still pending (delivery is paused; run `suekk-sync resume`); it stays queued and goes once that clears.',
  ]);
});

t.test('resync while paused says so once; stopping its wait does not point at --resume', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  await startTestRelay(t, db, receiver.url);
  await addUsers(db, 3, 'amy');
  await waitFor(() => receiver.delivered.length === 3, 'the users created');
  const env = { DATABASE_URL: db.url };
  await runCli(['pause'], { env });

  const child = startCli(['resync', '--all'], { env, detached: true });
  const done = collect(child);
  let stderr = '';
  child.stderr!.on('data', (d: string) => (stderr += d));
  await waitFor(() => stderr.includes('Delivery is paused'), 'the paused notice', 10_000);
  // Long enough for several progress lines (every 2 s) had they been printed.
  await new Promise((r) => setTimeout(r, 4_500));
  process.kill(-child.pid!, 'SIGINT');
  const res = await done;
  t.equal(res.code, 1);
  t.equal(res.stderr.match(/Delivery is paused/g)?.length, 1, 'said once');
  t.ok(
    res.stdout.split('\n').filter((l) => l.startsWith('resync run')).length <= 1,
    `no repeated progress lines:\n${res.stdout}`,
  );
  t.notMatch(res.stdout, /--resume/);
  t.match(
    res.stdout,
    /^Stopped waiting: run \d+ enqueued all 3 users and 0 are delivered; the other 3 stay in the outbox for the relays, and `suekk-sync status` shows the backlog\.$/m,
  );
  const resume = await runCli(['resync', '--resume'], { env });
  t.equal(resume.code, 2);
  t.match(resume.stderr, /There is no interrupted resync to resume/);
  await runCli(['resume'], { env });
  await waitFor(() => receiver.delivered.length === 6, 'delivered after resume');
});

t.test('a resync that nothing would deliver records no run to resume', async (t) => {
  const db = await createTestDatabase(t);
  await addUsers(db, 2);
  const env = { DATABASE_URL: db.url };
  const refused = await runCli(['resync', '--all'], { env });
  t.equal(refused.code, 2);
  t.match(refused.stderr, /nothing would deliver/);
  const { rows } = await db.pool.query('select count(*)::int as n from suekk_sync.resync_runs');
  t.same(rows, [{ n: 0 }]);
  const resume = await runCli(['resync', '--resume'], { env });
  t.equal(resume.code, 2);
  t.match(resume.stderr, /There is no interrupted resync to resume/);
});

t.test('the reason an event waits: never a round already past, the pause and a missing relay first', async (t) => {
  const now = new Date('2026-01-01T12:00:00Z');
  const event = (over: Partial<EventState> = {}): EventState => ({
    id: '1',
    webhookId: 'evt_x',
    userId: 'u1',
    username: 'u',
    action: 'created',
    status: 'pending',
    attempts: 3,
    rounds: 1,
    httpStatus: 503,
    error: 'HTTP 503',
    response: null,
    durationMs: 5,
    nextAttemptAt: new Date(now.getTime() + 30_000),
    runId: null,
    supersededBy: null,
    ...over,
  });
  const conditions = (over: Partial<DeliveryConditions> = {}): DeliveryConditions => ({
    paused: false,
    relaysAlive: 1,
    backendDownSince: null,
    streams: new Map(),
    now,
    ...over,
  });
  t.equal(
    pendingReason(event(), 'waiting', conditions()),
    'waits for its next round at 2026-01-01T12:00:30.000Z (in 30s)',
  );
  t.equal(
    pendingReason(event(), 'waiting', conditions({ backendDownSince: new Date('2026-01-01T11:00:00Z') })),
    'waits for its next round at 2026-01-01T12:00:30.000Z (in 30s), and the backend looks down to the relays since 2026-01-01T11:00:00.000Z',
  );
  const past = event({ nextAttemptAt: new Date(now.getTime() - 60_000) });
  t.equal(
    pendingReason(past, 'waiting', conditions({ relaysAlive: 0 })),
    'no relay is running; start `suekk-sync relay`',
  );
  t.equal(pendingReason(past, 'waiting', conditions({ paused: true })), 'delivery is paused; run `suekk-sync resume`');
  t.equal(pendingReason(past, 'waiting', conditions()), 'due again now, not sent yet');
  const fresh = event({ rounds: 0, attempts: 0, httpStatus: null, error: null });
  t.equal(
    pendingReason(fresh, 'queued', conditions({ backendDownSince: new Date('2026-01-01T11:00:00Z') })),
    'the backend looks down to the relays since 2026-01-01T11:00:00.000Z; they send it once a probe gets through',
  );
  t.equal(
    pendingReason(fresh, 'queued', conditions({ streams: new Map([['u1', { dueAt: null, leased: true }]]) })),
    'being sent right now',
  );
  t.equal(
    pendingReason(
      fresh,
      'queued',
      conditions({ streams: new Map([['u1', { dueAt: new Date(now.getTime() + 5_000), leased: false }]]) }),
    ),
    'waits for its next round at 2026-01-01T12:00:05.000Z (in 5s)',
  );
  t.equal(pendingReason(fresh, 'blocked', conditions({ paused: true })), 'waits behind an earlier event of this user');
  t.equal(pendingReason(fresh, 'delivered', conditions({ paused: true })), undefined);
});
