/** Order per user, parallel users, several relays: what the backend sees, event by event. */
import t from 'tap';
import { claimStreams, READ_HELD_STREAM_SQL } from '../src/db/relay-queries.ts';
import { resync } from '../src/ops/resync.ts';
import { testSettings } from './helpers/settings.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { startReceiver, waitFor, type ReceivedRequest } from './helpers/receiver.ts';
import { addUsers, eventStatuses, startTestRelay } from './helpers/relay.ts';

/** Each user's events in capture order, as `evt_<uuid>`. */
async function captureOrder(db: TestDatabase): Promise<Map<string, string[]>> {
  const { rows } = await db.pool.query<{ user_id: string; webhook_id: string }>(
    'select user_id, webhook_id::text from suekk_sync.event_log order by id',
  );
  const order = new Map<string, string[]>();
  for (const r of rows) order.set(r.user_id, [...(order.get(r.user_id) ?? []), `evt_${r.webhook_id}`]);
  return order;
}

function arrivalOrder(requests: ReceivedRequest[]): Map<string, string[]> {
  const order = new Map<string, string[]>();
  for (const r of requests) order.set(String(r.body.id), [...(order.get(String(r.body.id)) ?? []), r.webhookId]);
  return order;
}

/** Concurrent writers, each updating random users in its own transactions. */
async function concurrentWriters(db: TestDatabase, ids: string[], writers: number, updatesEach: number): Promise<void> {
  await Promise.all(
    Array.from({ length: writers }, async (_, w) => {
      const client = await db.pool.connect();
      try {
        for (let i = 0; i < updatesEach; i++) {
          const id = ids[(i * 7 + w * 13) % ids.length]!;
          await client.query('update users set first_name = $2 where id = $1', [id, `w${w}-${i}`]);
        }
      } finally {
        client.release();
      }
    }),
  );
}

t.test("concurrent writers: every user's events arrive in capture order, each exactly once", async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t, () => ({ status: 200, delayMs: 2 }));
  await startTestRelay(t, db, receiver.url, { settings: { concurrency: 6 } });
  const ids = await addUsers(db, 12);
  await concurrentWriters(db, ids, 4, 40);
  const total = 12 + 160;
  await waitFor(
    async () => (await eventStatuses(db)).delivered === total,
    `${total} delivered`,
    30_000,
    () => receiver.delivered.length,
  );
  t.equal(receiver.requests.length, total, 'no duplicates');
  t.same(arrivalOrder(receiver.requests), await captureOrder(db));
  // The last state each user's backend copy received is the current one.
  const { rows } = await db.pool.query<{ id: string; first_name: string }>('select id, first_name from users');
  const last = new Map(receiver.requests.map((r) => [String(r.body.id), String(r.body.displayName)]));
  for (const row of rows) t.equal(last.get(row.id), `${row.first_name} Last`);
});

t.test('a rescheduled head event holds back the rest of its user, never overtaken', async (t) => {
  const db = await createTestDatabase(t);
  let failFirstOfCarol = true;
  const receiver = await startReceiver(t, (req) => {
    if (failFirstOfCarol && req.body.username === 'carol1') {
      failFirstOfCarol = false;
      return { status: 503 };
    }
    return { status: 200 };
  });
  await startTestRelay(t, db, receiver.url, { settings: { maxAttempts: 1, retryScheduleMs: [400] } });
  const [carol] = await addUsers(db, 1, 'carol');
  for (let i = 0; i < 5; i++) await db.pool.query('update users set first_name = $2 where id = $1', [carol, `v${i}`]);
  await addUsers(db, 3, 'other');
  await waitFor(() => receiver.delivered.filter((r) => r.body.username !== 'carol1').length === 3, 'others');
  t.equal(
    receiver.delivered.filter((r) => r.body.username === 'carol1').length,
    0,
    'carol waits behind her failed head',
  );
  await waitFor(async () => (await eventStatuses(db)).delivered === 9, 'all delivered');
  const carols = receiver.requests.filter((r) => r.body.username === 'carol1');
  t.same(
    carols.map((r) => r.body.action),
    ['created', 'created', 'updated', 'updated', 'updated', 'updated', 'updated'],
  );
  t.equal(carols[0]!.webhookId, carols[1]!.webhookId, 'the retried event keeps its webhook-id');
  t.same(arrivalOrder(receiver.delivered).get(carol!), (await captureOrder(db)).get(carol!));
});

t.test('two relays: order held, zero duplicates, both working', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t, () => ({ status: 200, delayMs: 3 }));
  const a = await startTestRelay(t, db, receiver.url, { settings: { concurrency: 4 } });
  const b = await startTestRelay(t, db, receiver.url, { settings: { concurrency: 4 } });
  const ids = await addUsers(db, 40);
  await concurrentWriters(db, ids, 3, 40);
  const total = 40 + 120;
  await waitFor(async () => (await eventStatuses(db)).delivered === total, `${total} delivered`, 30_000);
  t.equal(receiver.requests.length, total, 'zero duplicates');
  t.same(arrivalOrder(receiver.requests), await captureOrder(db));
  const logsA = a.logs.filter((l) => String(l.msg).includes('synced to backend')).length;
  const logsB = b.logs.filter((l) => String(l.msg).includes('synced to backend')).length;
  t.equal(logsA + logsB, total);
  t.ok(logsA > 0 && logsB > 0, `both relays delivered (${logsA} + ${logsB})`);
});

t.test('a hot user with thousands of pending events does not hold up other users', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  const [hot] = await addUsers(db, 1, 'hot');
  await db.pool.query(
    `do $$ begin for i in 1..3000 loop update users set first_name = 'v' || i where username = 'hot1'; end loop; end $$`,
  );
  const { relay } = await startTestRelay(t, db, receiver.url, { settings: { concurrency: 4 } });
  const others = await addUsers(db, 40, 'cold');
  await waitFor(
    () => others.every((id) => receiver.delivered.some((r) => r.body.id === id)),
    'every other user delivered',
    30_000,
  );
  const hotDelivered = receiver.delivered.filter((r) => r.body.id === hot).length;
  t.ok(
    hotDelivered < 3001,
    `the others did not wait for the hot user's ${3001} events (${hotDelivered} of them sent so far)`,
  );
  await waitFor(async () => (await eventStatuses(db)).delivered === 3041, 'the hot user drained too', 60_000);
  const hotNames = receiver.delivered.filter((r) => r.body.id === hot).map((r) => r.body.displayName);
  t.same(hotNames.slice(-2), ['v2999 Last', 'v3000 Last'], 'in order to the end');
  await waitFor(() => relay.inFlight === 0, 'the relay idle again');
});

t.test("reading a hot user's next events reads a bounded amount, however long the stream", async (t) => {
  const db = await createTestDatabase(t);
  await addUsers(db, 1, 'hot');
  await db.pool.query(
    `do $$ begin for i in 1..3000 loop update users set first_name = 'v' || i where username = 'hot1'; end loop; end $$`,
  );
  await addUsers(db, 500, 'cold');
  await db.pool.query('analyze suekk_sync.events');
  await claimStreams(db.pool, 'relay-x', {
    limit: 1000,
    leaseMs: 60_000,
    perStream: 1,
    readLimit: 10_000,
    answerBell: false,
  });
  const ids = await db.pool.query<{ username: string; id: string }>(
    "select username, id::text from users where username in ('hot1', 'cold1')",
  );
  const idOf = (name: string) => ids.rows.find((r) => r.username === name)!.id;
  /** Buffers the read of the user's events touches, under the statement's generic plan. */
  const buffersFor = async (userId: string): Promise<number> => {
    const client = await db.pool.connect();
    try {
      await client.query('set plan_cache_mode = force_generic_plan');
      const explain = {
        text: `explain (analyze, buffers, format text) ${READ_HELD_STREAM_SQL}`,
        values: ['relay-x', userId, 20],
      };
      await client.query(explain);
      const { rows } = await client.query<{ 'QUERY PLAN': string }>(explain);
      // Only the node that reads events (the function scan): the stream row's lookup depends on
      // how far vacuum has got with old versions of that row.
      const lines = rows.map((r) => r['QUERY PLAN']);
      const node = lines.findIndex((l) => /Function Scan on next_events/.test(l));
      const buffers = lines.slice(node + 1).find((l) => /Buffers: shared/.test(l)) ?? '';
      return [...buffers.matchAll(/(?:hit|read)=(\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
    } finally {
      client.release(true);
    }
  };
  const hot = await buffersFor(idOf('hot1'));
  const cold = await buffersFor(idOf('cold1'));
  t.ok(hot > 0 && cold > 0, `measured (hot ${hot}, cold ${cold} buffers)`);
  t.ok(
    hot <= cold + 20,
    `a user with 3001 pending events costs about what a user with one does (${hot} vs ${cold} buffers)`,
  );
  // 20 rows: a few index pages per partition and a page or two of heap. Reading the user's whole
  // backlog (a bitmap scan and a sort) or the table (a sequential scan) would touch 80 pages or more.
  t.ok(hot <= 30, `the hot user's read touched ${hot} buffers`);
  const { rows } = await db.pool.query({ text: READ_HELD_STREAM_SQL, values: ['relay-x', idOf('hot1'), 20] });
  t.equal(rows.length, 20, 'and it returns the first 20, in order');
  t.same(
    rows.map((r: { id: string }) => Number(r.id)),
    [...rows.map((r: { id: string }) => Number(r.id))].sort((a, b) => a - b),
  );
});

t.test('a user with a backlog takes turns with the users waiting for a place', async (t) => {
  const db = await createTestDatabase(t);
  // 10 ms a request: a turn (5 events) outlasts the claim that brings the next waiting user in,
  // even on a loaded machine, where an instant backend let the backlog finish before any claim.
  const receiver = await startReceiver(t, () => ({ status: 200, delayMs: 10 }));
  const [hot] = await addUsers(db, 1, 'backlog');
  for (let i = 0; i < 40; i++) await db.pool.query('update users set first_name = $2 where id = $1', [hot, `v${i}`]);
  // Due after the hot user's stream: without turns they would wait for all of its 41 events.
  const others = await addUsers(db, 3, 'waiting');
  await startTestRelay(t, db, receiver.url, { settings: { concurrency: 1 } });
  await waitFor(() => receiver.delivered.length === 44, 'every event delivered', 20_000);
  const order = receiver.delivered.map((r) => String(r.body.id));
  const lastOther = Math.max(...others.map((id) => order.indexOf(id)));
  // Without turns they come at 42-44; with them, about one per turn (6, 12, 18).
  t.ok(lastOther < 30, `the three waiting users were served by delivery ${lastOther + 1} of 44, not after the backlog`);
  const hotNames = receiver.delivered
    .filter((r) => r.body.id === hot)
    .map((r) => String(r.body.displayName).split(' ')[0]);
  t.same(
    hotNames.slice(1),
    Array.from({ length: 40 }, (_, i) => `v${i}`),
    'the backlog still in capture order',
  );
});

t.test('a user with new events in both lanes is claimed once, each event read once', async (t) => {
  const db = await createTestDatabase(t);
  const ids = await addUsers(db, 5);
  // A resync event (lane 1) behind each user's live one (lane 0): both tickers lease the user in the same claim.
  const result = await resync(db.pool, testSettings(db.url), { scope: { all: true }, wait: false });
  t.ok(result.enqueued >= 5);
  const claim = await claimStreams(db.pool, 'relay-a', {
    limit: 50,
    leaseMs: 30_000,
    perStream: 20,
    readLimit: 1000,
    answerBell: false,
  });
  const users = claim.streams.map((s) => s.userId);
  t.equal(new Set(users).size, users.length, 'each user once');
  for (const id of ids) {
    const stream = claim.streams.find((s) => s.userId === id);
    t.same(
      stream?.events.map((e) => e.source),
      ['trigger', 'resync'],
      `user ${id}: its live event, then its resync event, once each`,
    );
  }
});
