/**
 * The end of a backend outage: users whose rounds failed while the backend was down wait for their
 * next round (here ten minutes away), and the relays notice the backend is back by probing on a
 * short fixed cadence, then make every one of them due at once.
 */
import t from 'tap';
import { retry } from '../src/ops/retry.ts';
import { getStatus, type StatusReport } from '../src/ops/status.ts';
import { runCli } from './helpers/cli.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { startReceiver, waitFor } from './helpers/receiver.ts';
import { addUsers, eventStatuses, FAST_RELAY, startTestRelay } from './helpers/relay.ts';
import { testSettings } from './helpers/settings.ts';

/** Rounds of one attempt: the first fails, the next a moment later fails too, the one after is ten minutes away. */
const OUTAGE = {
  maxAttempts: 1,
  retryScheduleMs: [200, 600_000],
  giveUpAfterMs: 86_400_000,
  breakerThreshold: 3,
  probeIntervalMs: 250,
};

/**
 * Users whose first two rounds failed: the next is ten minutes away (a probe may be trying one of
 * them again right now).
 */
async function failedTwice(db: TestDatabase): Promise<number> {
  const { rows } = await db.pool.query<{ n: number }>(
    'select count(*)::int as n from suekk_sync.streams where head_rounds >= 2 and not parked',
  );
  return rows[0]!.n;
}

function perUser(requests: { body: Record<string, unknown>; webhookId: string }[]): Record<string, string[]> {
  const m: Record<string, string[]> = {};
  for (const r of requests) (m[String(r.body.id)] ??= []).push(r.webhookId);
  return m;
}

t.test(
  "after every user's rounds failed, the backlog goes within moments of the backend's return, in order",
  async (t) => {
    const db = await createTestDatabase(t);
    let down = true;
    const receiver = await startReceiver(t, (req) =>
      String(req.body.username).startsWith('bad') ? { status: 400 } : down ? { status: 500 } : { status: 200 },
    );
    const { relay, logs } = await startTestRelay(t, db, receiver.url, { settings: OUTAGE });
    const ids = await addUsers(db, 20);
    for (const id of ids.slice(0, 5)) await db.pool.query("update users set first_name = 'second' where id = $1", [id]);
    const [bad] = await addUsers(db, 1, 'bad');
    await waitFor(
      async () => (await failedTwice(db)) === 20,
      'all 20 users refused twice, their third round ten minutes away',
      20_000,
    );
    t.ok(relay.breakerOpen, 'the relay sees the backend down');
    const status = (await getStatus(db.pool)) as StatusReport;
    t.match(status.backend, { state: 'down', probing: true });
    t.equal(status.healthy, false, 'an outage is unhealthy');
    t.ok(
      status.problems.some((p) =>
        /^The backend looks down to the relays since .* \(last error: HTTP 500[^)]*\); they probe it/.test(p),
      ),
      'a problem names the outage and the last error',
    );
    t.equal((await eventStatuses(db)).failed, 1, 'the user the backend refused (400) is parked, not waiting');

    const back = Date.now();
    down = false;
    await waitFor(
      () => new Set(receiver.delivered.map((r) => r.webhookId)).size === 25,
      'the whole backlog delivered',
      15_000,
    );
    const took = Date.now() - back;
    t.ok(took < 10_000, `delivered ${took} ms after the backend came back, not at the next round ten minutes away`);
    const { rows } = await db.pool.query<{ user_id: string; webhook_id: string }>(
      "select user_id, 'evt_' || webhook_id as webhook_id from suekk_sync.event_log where user_id <> $1 order by id",
      [bad],
    );
    const captured: Record<string, string[]> = {};
    for (const r of rows) (captured[r.user_id] ??= []).push(r.webhook_id);
    const firstArrivals = receiver.delivered.filter(
      (r, i, all) => all.findIndex((x) => x.webhookId === r.webhookId) === i,
    );
    t.same(perUser(firstArrivals), captured, 'each user in capture order, nothing lost');
    await waitFor(() => !relay.breakerOpen, 'the breaker closed');
    t.ok(
      logs.some((l) =>
        /^The backend answers again after \S+; \d+ users waiting for their next round are due now$/.test(String(l.msg)),
      ),
      'the relay says so',
    );
    await waitFor(async () => (await eventStatuses(db)).pending === undefined, 'everything recorded');
    t.same(await eventStatuses(db), { delivered: 25, failed: 1 }, 'the parked user stays parked');
    t.match(await getStatus(db.pool), { backend: { state: 'up', since: null, probing: false } });
  },
);

t.test('two relays: whichever probes first wakes the users the other held too', async (t) => {
  const db = await createTestDatabase(t);
  let down = true;
  const receiver = await startReceiver(t, () => (down ? { status: 503 } : { status: 200 }));
  const a = await startTestRelay(t, db, receiver.url, { settings: { ...OUTAGE, concurrency: 4 } });
  const b = await startTestRelay(t, db, receiver.url, {
    settings: { ...OUTAGE, concurrency: 4, probeIntervalMs: 600_000 },
  });
  await addUsers(db, 16);
  await waitFor(async () => (await failedTwice(db)) === 16, 'every user refused twice', 20_000);
  await waitFor(() => a.relay.breakerOpen && b.relay.breakerOpen, 'both relays see the backend down');
  down = false;
  // Only relay A probes in time (B's cadence is ten minutes); its success wakes every user.
  await waitFor(() => new Set(receiver.delivered.map((r) => r.webhookId)).size === 16, 'all delivered', 15_000);
  t.ok(
    a.logs.some((l) => /^The backend answers again after/.test(String(l.msg))),
    'relay A noticed',
  );
});

t.test('a relay started during an outage probes too, and retry --waiting sends the waiting users now', async (t) => {
  const db = await createTestDatabase(t);
  let down = true;
  const receiver = await startReceiver(t, () => (down ? { status: 502 } : { status: 200 }));
  const first = await startTestRelay(t, db, receiver.url, { settings: OUTAGE });
  await addUsers(db, 6);
  await waitFor(async () => (await failedTwice(db)) === 6, 'every user refused twice', 20_000);
  await first.stop();

  // retry --waiting lists them (dry run), then, with the backend still down, sends each for a round.
  const dry = await runCli(['retry', '--waiting', '--dry-run'], {
    env: { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url },
  });
  t.equal(dry.code, 0, dry.stderr);
  t.match(dry.stdout, /Would retry 6 events of 6 users: .*nothing was changed\./);
  const before = receiver.requests.length;
  const retried = await retry(db.pool, testSettings(db.url, receiver.url, { relay: { ...FAST_RELAY, ...OUTAGE } }), {
    waiting: true,
  });
  t.equal(retried.events.length, 6);
  t.equal(receiver.requests.length - before, 6, 'each had its round now, not in ten minutes');

  // A relay that starts now finds users waiting for the backend and probes at once.
  const second = await startTestRelay(t, db, receiver.url, { settings: OUTAGE });
  await waitFor(() => second.relay.breakerOpen, 'the new relay starts out probing');
  down = false;
  await waitFor(() => receiver.delivered.length === 6, 'all delivered once the backend answers', 15_000);
});
