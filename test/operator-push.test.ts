/**
 * push as a first-time operator meets it: while delivery is paused, with nothing to deliver, with
 * other users' events waiting, and its error paths. The real executable against a real database.
 */
import t from 'tap';
import { createTestDatabase } from './helpers/db.ts';
import { collect, runCli, startCli } from './helpers/cli.ts';
import { startReceiver, waitFor } from './helpers/receiver.ts';
import { addUsers, eventStatuses, startTestRelay } from './helpers/relay.ts';

t.test('push while paused says so at once, waits at most --wait, and names what is pending', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  await startTestRelay(t, db, receiver.url);
  await addUsers(db, 1, 'dave');
  await waitFor(() => receiver.delivered.length === 1, 'dave created');
  const env = { DATABASE_URL: db.url };
  t.equal((await runCli(['pause'], { env })).code, 0);

  const started = performance.now();
  const res = await runCli(['push', 'dave1', '--wait', '2s'], { env });
  const tookMs = performance.now() - started;
  t.equal(res.code, 1, 'the wait ran out: exit 1');
  t.ok(tookMs < 15_000, `bounded by --wait (${Math.round(tookMs)} ms)`);
  t.match(res.stdout, /^queued\s+created dave1 evt_\S+ — delivery is paused; run `suekk-sync resume`$/m);
  const lines = res.stderr.trim().split('\n');
  t.same(lines, [
    'Delivery is paused, so nothing is sent until someone runs `suekk-sync resume`; waiting at most 2s.',
    'suekk-sync: Gave up waiting after 2s with 1 event still pending (delivery is paused; run `suekk-sync resume`); it stays queued and goes once that clears.',
  ]);
  t.same(await eventStatuses(db), { delivered: 1, pending: 1 }, 'the push stays queued for the relays');
  t.equal(receiver.requests.length, 1, 'nothing sent while paused');

  // The notice comes at once, not when the wait ends; resume lets the push finish.
  const child = startCli(['push', 'dave1'], { env });
  const done = collect(child);
  let stderr = '';
  child.stderr!.on('data', (d: string) => (stderr += d));
  await waitFor(() => stderr.includes('Delivery is paused'), 'the paused notice', 10_000);
  t.match(stderr, /waiting at most 1m\.$/m, 'the default wait is bounded');
  t.equal((await runCli(['resume'], { env })).code, 0);
  const after = await done;
  t.equal(after.code, 0, after.stderr);
  t.match(after.stdout, /^delivered created dave1 /m);
  t.equal(after.stderr.match(/Delivery is paused/g)?.length, 1, 'said once');
});

t.test('push --no-wait only enqueues; --wait takes durations; bad values are usage errors', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  await startTestRelay(t, db, receiver.url);
  await addUsers(db, 1, 'nia');
  await waitFor(() => receiver.delivered.length === 1, 'nia created');
  const env = { DATABASE_URL: db.url };
  await runCli(['pause'], { env });
  const queued = await runCli(['push', 'nia1', '--no-wait'], { env });
  t.equal(queued.code, 0, queued.stderr);
  t.equal(queued.stderr, '', 'nothing waits, so no notice');
  t.match(queued.stdout, /^queued\s+created nia1 evt_\S+ — delivery is paused; run `suekk-sync resume`$/m);
  t.match(
    queued.stdout,
    /Queued nia1's current state; not waiting for the outcome \(`suekk-sync tail-log --user [0-9a-f-]{36}` shows it\)\./,
  );
  const json = await runCli(['push', 'nia1', '--no-wait', '--json'], { env });
  t.equal(json.code, 0, json.stderr);
  t.match(JSON.parse(json.stdout), {
    outcome: 'blocked',
    reason: 'waits behind an earlier event of this user',
    nextAttemptAt: null,
    ahead: [{ outcome: 'queued', reason: 'delivery is paused; run `suekk-sync resume`' }],
  });
  await runCli(['resume'], { env });
  await waitFor(
    async () => (await eventStatuses(db)).pending === undefined,
    'the queued pushes delivered after resume',
  );
  const ok = await runCli(['push', 'nia1', '--wait', '30s'], { env });
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout, /^delivered created nia1 /);
  for (const bad of ['soon', '0']) {
    const res = await runCli(['push', 'nia1', '--wait', bad], { env });
    t.equal(res.code, 2, `--wait ${bad}`);
    t.equal(res.stderr.trim().split('\n').length, 1, 'one sentence');
    t.match(res.stderr, /--wait must be/);
  }
});

t.test('a push that nothing would deliver is refused before it writes anything', async (t) => {
  const db = await createTestDatabase(t);
  await addUsers(db, 1, 'erin');
  const before = await eventStatuses(db);
  const env = { DATABASE_URL: db.url };
  const refused = await runCli(['push', 'erin1'], { env });
  t.equal(refused.code, 2);
  t.equal(
    refused.stderr,
    'suekk-sync: No relay is running and BACKEND_SYNC_URL is not set, so nothing would deliver; start `suekk-sync relay`, set BACKEND_SYNC_URL to deliver from here, or pass --no-wait to only enqueue.\n',
  );
  t.same(await eventStatuses(db), before, 'no event was left behind');

  const queued = await runCli(['push', 'erin1', '--no-wait'], { env });
  t.equal(queued.code, 0, queued.stderr);
  t.match(queued.stdout, /^queued\s+created erin1 \S+ — no relay is running; start `suekk-sync relay`$/m);
  t.match(queued.stdout, /^blocked\s+created erin1 \S+ — waits behind an earlier event of this user$/m);
  t.same(await eventStatuses(db), { pending: 2 });

  const unknown = await runCli(['push', 'nobody', '--no-wait'], { env });
  t.equal(unknown.code, 2);
  t.equal(unknown.stderr, 'suekk-sync: No user matches "nobody" by id, email or username; check the reference.\n');
});

t.test("a push delivering by itself sends only that user's events", async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  // Captured while no relay runs: both users' creations wait in the outbox.
  await addUsers(db, 1, 'bob');
  await addUsers(db, 1, 'erin');
  const res = await runCli(['push', 'erin1'], { env: { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url } });
  t.equal(res.code, 0, res.stderr);
  t.same(
    receiver.delivered.map((r) => r.body.username),
    ['erin1', 'erin1'],
    "erin's creation, then the push",
  );
  const { rows } = await db.pool.query<{ username: string; status: string }>(
    "select payload->>'username' as username, status from suekk_sync.event_log order by id",
  );
  t.same(
    rows,
    [
      { username: 'bob1', status: 'pending' },
      { username: 'erin1', status: 'delivered' },
      { username: 'erin1', status: 'delivered' },
    ],
    "bob's event stays for the relays",
  );

  // A relay that starts afterwards delivers bob's event, and nothing of erin's again.
  await startTestRelay(t, db, receiver.url);
  await waitFor(() => receiver.delivered.length === 3, 'bob delivered by the relay');
  t.equal(receiver.delivered[2]!.body.username, 'bob1');
  await new Promise((r) => setTimeout(r, 300));
  t.equal(receiver.requests.length, 3, "erin's events are not sent twice");
  t.same(await eventStatuses(db), { delivered: 3 });
});
