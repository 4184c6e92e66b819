/** push, retry and skip: an operator repairing the stream without writing SQL. */
import t from 'tap';
import { createTestDatabase } from './helpers/db.ts';
import { runCli } from './helpers/cli.ts';
import { startReceiver, waitFor } from './helpers/receiver.ts';
import { addUsers, eventStatuses, startTestRelay } from './helpers/relay.ts';

t.test('push sends the current state and prints the outcome; delivers itself with no relay', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t, () => ({ status: 200, body: '{"success":true,"note":"upserted"}' }));
  await db.pool.query(
    'alter table users disable trigger suekk_sync_capture, disable trigger suekk_sync_capture_update',
  );
  await addUsers(db, 1, 'pia');
  await db.pool.query('alter table users enable trigger suekk_sync_capture, enable trigger suekk_sync_capture_update');
  const env = { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url };
  const res = await runCli(['push', 'pia1@example.com'], { env });
  t.equal(res.code, 0, res.stderr);
  t.match(res.stdout, /^delivered created pia1 evt_[0-9a-f-]{36} HTTP 200 in \d+ ms/m);
  t.match(res.stdout, /response: \{"success":true,"note":"upserted"\}/);
  t.equal(receiver.delivered.length, 1);
  t.equal(receiver.delivered[0]!.body.action, 'created');
  const json = await runCli(['push', 'pia1', '--action', 'updated', '--json'], { env });
  t.equal(json.code, 0, json.stderr);
  t.match(JSON.parse(json.stdout), {
    username: 'pia1',
    action: 'updated',
    outcome: 'delivered',
    httpStatus: 200,
    ahead: [],
  });
  const unknown = await runCli(['push', 'nobody'], { env });
  t.equal(unknown.code, 2);
  t.match(unknown.stderr, /No user matches "nobody"/);
  const badAction = await runCli(['push', 'pia1', '--action', 'exploded'], { env });
  t.equal(badAction.code, 2);
});

t.test("push sends the user's waiting events first, now, keeping their webhook-id", async (t) => {
  const db = await createTestDatabase(t);
  let healthy = false;
  const receiver = await startReceiver(t, () => (healthy ? { status: 200 } : { status: 503 }));
  // A long schedule: without push the waiting event would sit for an hour.
  const relay = await startTestRelay(t, db, receiver.url, {
    settings: { maxAttempts: 1, retryScheduleMs: [3_600_000], giveUpAfterMs: 86_400_000 },
  });
  await addUsers(db, 1, 'quin');
  await waitFor(() => receiver.requests.length === 1, 'a first failed round');
  await waitFor(async () => {
    const { rows } = await db.pool.query('select rounds from suekk_sync.event_log');
    return rows[0]?.rounds === 1;
  }, 'the round recorded');
  healthy = true;
  const res = await runCli(['push', 'quin1'], { env: { DATABASE_URL: db.url } });
  t.equal(res.code, 0, res.stderr);
  t.equal(receiver.delivered.length, 2);
  t.same(
    receiver.delivered.map((r) => r.body.action),
    ['created', 'created'],
  );
  t.equal(receiver.delivered[0]!.webhookId, receiver.requests[0]!.webhookId, 'the waiting event kept its webhook-id');
  t.match(res.stdout, /delivered created quin1 .*\ndelivered created quin1/);
  await relay.stop();
});

t.test('a parked user: push refuses, retry --user delivers, skip un-parks', async (t) => {
  const db = await createTestDatabase(t);
  let reject = true;
  const receiver = await startReceiver(t, (req) =>
    reject && req.body.username === 'rex1' ? { status: 422, body: '{"error":"bad avatar"}' } : { status: 200 },
  );
  const env = { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url };
  const relay = await startTestRelay(t, db, receiver.url);
  const [rex] = await addUsers(db, 1, 'rex');
  await waitFor(async () => (await eventStatuses(db)).failed === 1, 'the event failed');
  await db.pool.query("update users set first_name = 'Later' where id = $1", [rex]);

  const refused = await runCli(['push', 'rex1'], { env });
  t.equal(refused.code, 1);
  t.match(refused.stderr, /parked by a failed event.*retry --user.*skip --user/);

  const dry = await runCli(['retry', '--all-failed', '--dry-run'], { env });
  t.equal(dry.code, 0, dry.stderr);
  t.match(dry.stdout, /failed\s+created rex1/);
  t.match(dry.stdout, /Would retry 2 events of 1 user/);
  t.equal((await eventStatuses(db)).failed, 1, 'dry run changed nothing');

  const stillFailing = await runCli(['retry', '--user', 'rex1'], { env });
  t.equal(stillFailing.code, 1, 'still rejected: exit 1');
  t.match(stillFailing.stdout, /failed\s+created rex1 .*HTTP 422/);

  reject = false;
  const ok = await runCli(['retry', '--user', 'rex1', '--json'], { env });
  t.equal(ok.code, 0, ok.stderr);
  const lines = ok.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { action: string; outcome: string });
  t.same(
    lines.map((l) => [l.action, l.outcome]),
    [
      ['created', 'delivered'],
      ['updated', 'delivered'],
    ],
  );
  const rexRequests = receiver.requests.filter((r) => r.body.username === 'rex1');
  t.equal(
    new Set(rexRequests.filter((r) => r.body.action === 'created').map((r) => r.webhookId)).size,
    1,
    'same webhook-id on retry',
  );

  const nothing = await runCli(['retry', '--all-failed'], { env });
  t.equal(nothing.code, 0);
  t.match(nothing.stdout, /Nothing to retry/);

  // skip: a failed event the backend will never accept.
  reject = true;
  await db.pool.query("update users set first_name = 'Bad' where id = $1", [rex]);
  await waitFor(async () => (await eventStatuses(db)).failed === 1, 'failed again');
  await db.pool.query("update users set first_name = 'After' where id = $1", [rex]);
  reject = false;
  const skipped = await runCli(['skip', '--user', 'rex1'], { env });
  t.equal(skipped.code, 0, skipped.stderr);
  t.match(skipped.stdout, /skipped\s+updated rex1 evt_/);
  t.match(skipped.stdout, /Un-parked rex1/);
  await waitFor(() => receiver.delivered.some((r) => r.body.displayName === 'After Last'), 'the later event flows');
  const { rows } = await db.pool.query('select status from suekk_sync.event_log where user_id = $1 order by id', [rex]);
  t.same(
    rows.map((r) => r.status),
    ['delivered', 'delivered', 'skipped', 'delivered'],
  );
  const skipDelivered = await runCli(['skip', '1'], { env });
  t.equal(skipDelivered.code, 2);
  t.match(skipDelivered.stderr, /Only failed events can be skipped/);
  await relay.stop();
});
