/**
 * No lost wake-ups. A writer notifies only when nobody rang since a relay last looked (the
 * doorbell); one that stays silent relies on the relay coming back for it: its claim sees the
 * writer's event id handed out but not committed (a gap) and looks again shortly, and a stream the
 * relay holds goes on when a claim has seen more of it. Every test here runs a relay whose
 * backstop poll is far longer than the test: a wake-up that went missing shows up as an event
 * that does not arrive in time.
 */
import t from 'tap';
import type { TestDatabase } from './helpers/db.ts';
import { createTestDatabase } from './helpers/db.ts';
import { startReceiver, waitFor } from './helpers/receiver.ts';
import { addUsers, eventStatuses, startTestRelay } from './helpers/relay.ts';

/** Longer than any test here: the poll never rescues a missed wake-up. */
const POLL_MS = 300_000;
/** Plenty for a loaded machine, far below the poll. */
const PROMPTLY_MS = 20_000;

async function streamIdle(db: TestDatabase, userId: string): Promise<boolean> {
  const { rows } = await db.pool.query<{ idle: boolean }>(
    `select locked_by is null and due_at is null and delivered_through >= last_event_id as idle
       from suekk_sync.streams where user_id = $1`,
    [userId],
  );
  return rows[0]?.idle ?? false;
}

/** Counts the wake-up notifications (empty payload) the database sends. */
async function countWakes(t: { teardown(fn: () => unknown): void }, db: TestDatabase): Promise<() => number> {
  const listener = await db.pool.connect();
  let wakes = 0;
  listener.on('notification', (n) => {
    if (n.payload === '') wakes++;
  });
  await listener.query('listen suekk_sync');
  t.teardown(async () => {
    await listener.query('unlisten *');
    listener.release();
  });
  return () => wakes;
}

t.test('an idle relay delivers a new user, and each change after its stream went idle, at once', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  await startTestRelay(t, db, receiver.url, { settings: { pollIntervalMs: POLL_MS } });
  const [id] = await addUsers(db, 1, 'idle');
  await waitFor(() => receiver.delivered.length === 1, 'the created event', PROMPTLY_MS);
  for (let round = 1; round <= 5; round++) {
    await waitFor(() => streamIdle(db, id!), `the stream idle before change ${round}`, PROMPTLY_MS);
    await db.pool.query('update users set first_name = $2 where id = $1', [id, `Round${round}`]);
    await waitFor(() => receiver.delivered.length === 1 + round, `change ${round} delivered`, PROMPTLY_MS);
  }
  t.same(
    receiver.delivered.map((r) => r.body.displayName),
    ['First Last', 'Round1 Last', 'Round2 Last', 'Round3 Last', 'Round4 Last', 'Round5 Last'],
  );
});

t.test('a change committed while the relay holds the stream is delivered right after, in the same turn', async (t) => {
  const db = await createTestDatabase(t);
  let slow = true;
  let inFlight: () => void = () => undefined;
  const started = new Promise<void>((resolve) => (inFlight = resolve));
  // The first delivery waits until a claim has seen the next change.
  let release: () => void = () => undefined;
  const held = new Promise<void>((resolve) => (release = resolve));
  const receiver = await startReceiver(t, async () => {
    if (slow) {
      slow = false;
      inFlight();
      await held;
    }
    return { status: 200 };
  });
  const { logs } = await startTestRelay(t, db, receiver.url, { settings: { pollIntervalMs: POLL_MS } });
  const [id] = await addUsers(db, 1, 'held');
  await started;
  await db.pool.query("update users set first_name = 'During' where id = $1", [id]);
  await waitFor(
    async () => {
      const { rows } = await db.pool.query(
        'select last_event_id > delivered_through + 1 as seen from suekk_sync.streams',
      );
      return rows[0]?.seen === true;
    },
    'a claim to see the change to the held stream',
    PROMPTLY_MS,
  );
  release();
  await waitFor(() => receiver.delivered.length === 2, 'both events', PROMPTLY_MS);
  t.same(
    receiver.delivered.map((r) => r.body.displayName),
    ['First Last', 'During Last'],
  );
  const claimedAgain = logs.filter((l) => l.msg === 'Claimed' && JSON.stringify(l.streams).includes(id!)).length;
  t.equal(claimedAgain, 1, 'the user was claimed once: its turn went on with the new event');
});

t.test('a writer still open when the relay looks: its event follows once it commits, without the poll', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  const [id] = await addUsers(db, 1, 'locked');
  // A writer adds an event in an open transaction; the relay starts now and claims.
  const writer = await db.pool.connect();
  t.teardown(() => writer.release());
  await writer.query('begin');
  await writer.query("update users set first_name = 'Late' where id = $1", [id]);
  await startTestRelay(t, db, receiver.url, { settings: { pollIntervalMs: POLL_MS } });
  await waitFor(() => receiver.delivered.length === 1, 'the committed event', PROMPTLY_MS);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(receiver.delivered.length, 1, 'nothing more while the writer is open');
  await writer.query('commit');
  await waitFor(() => receiver.delivered.length === 2, 'the late event after the commit', PROMPTLY_MS);
  t.same(
    receiver.delivered.map((r) => r.body.displayName),
    ['First Last', 'Late Last'],
  );
});

t.test('writers racing the relay over a few users: everything arrives, in order, without the poll', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t, () => ({ status: 200, delayMs: Math.floor(Math.random() * 4) }));
  await startTestRelay(t, db, receiver.url, { settings: { pollIntervalMs: POLL_MS, concurrency: 4 } });
  const ids = await addUsers(db, 5, 'race');
  const writers = 4;
  const updatesEach = 40;
  await Promise.all(
    Array.from({ length: writers }, async (_, w) => {
      const client = await db.pool.connect();
      try {
        for (let i = 0; i < updatesEach; i++) {
          await client.query('update users set first_name = $2 where id = $1', [
            ids[(w + i) % ids.length],
            `w${w}-${i}`,
          ]);
          // Gaps of a few milliseconds let streams go idle between changes, and catch releases mid-way.
          if (i % 3 === 0) await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 8)));
        }
      } finally {
        client.release();
      }
    }),
  );
  const total = ids.length + writers * updatesEach;
  await waitFor(
    async () => (await eventStatuses(db)).delivered === total,
    `${total} delivered`,
    PROMPTLY_MS,
    () => receiver.delivered.length,
  );
  const { rows } = await db.pool.query<{ user_id: string; webhook_id: string }>(
    'select user_id, webhook_id::text from suekk_sync.event_log order by id',
  );
  const captured = new Map<string, string[]>();
  for (const r of rows) captured.set(r.user_id, [...(captured.get(r.user_id) ?? []), `evt_${r.webhook_id}`]);
  const arrived = new Map<string, string[]>();
  for (const r of receiver.delivered)
    arrived.set(String(r.body.id), [...(arrived.get(String(r.body.id)) ?? []), r.webhookId]);
  t.same(arrived, captured, 'each user in capture order, each event once');
});

t.test(
  'a writer that stayed silent because the bell was rung is delivered once it commits, without the poll',
  async (t) => {
    const db = await createTestDatabase(t);
    const receiver = await startReceiver(t);
    await startTestRelay(t, db, receiver.url, { settings: { pollIntervalMs: POLL_MS } });
    const [first] = await addUsers(db, 1, 'before');
    await waitFor(() => receiver.delivered.length === 1, 'the first user', PROMPTLY_MS);
    await waitFor(() => streamIdle(db, first!), 'its stream idle', PROMPTLY_MS);
    const wakes = await countWakes(t, db);

    // The ringer wakes a stream and rings, still open; the second writer finds the bell rung and
    // stays silent, also still open.
    const ringer = await db.pool.connect();
    const silent = await db.pool.connect();
    t.teardown(() => {
      ringer.release();
      silent.release();
    });
    await ringer.query('begin');
    await ringer.query("insert into users (email, username, password) values ('ring@x.io', 'ringer', 'h')");
    await silent.query('begin');
    await silent.query("insert into users (email, username, password) values ('quiet@x.io', 'quiet', 'h')");
    // The ringer's notification makes the relay look; the silent writer is still open, so the
    // relay's answer cannot wait it out and it must come back later on its own.
    await ringer.query('commit');
    await waitFor(() => receiver.delivered.length === 2, "the ringer's user", PROMPTLY_MS);
    await new Promise((r) => setTimeout(r, 300));
    await silent.query('commit');
    await waitFor(() => receiver.delivered.length === 3, "the silent writer's user", PROMPTLY_MS);
    t.same(
      receiver.delivered.map((r) => r.body.username),
      ['before1', 'ringer', 'quiet'],
    );
    t.equal(wakes(), 1, 'one notification for both writers');
  },
);
