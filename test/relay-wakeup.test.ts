/**
 * No lost wake-ups. The trigger notifies only when a change wakes an idle stream; a change to a
 * stream that is already due or held by a relay relies on the relay coming back for it (the
 * generation check at release, then its own claim). Every test here runs a relay whose backstop
 * poll is far longer than the test: a wake-up that went missing shows up as an event that does not
 * arrive in time.
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
    'select next_attempt_at is null and locked_by is null as idle from suekk_sync.streams where user_id = $1',
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

t.test('a change committed while the relay holds the stream is delivered right after, without a notification', async (t) => {
  const db = await createTestDatabase(t);
  let slow = true;
  let inFlight: () => void = () => undefined;
  const started = new Promise<void>((resolve) => (inFlight = resolve));
  // The first delivery waits until the test has committed the next change.
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
  await startTestRelay(t, db, receiver.url, { settings: { pollIntervalMs: POLL_MS } });
  const wakes = await countWakes(t, db);
  const [id] = await addUsers(db, 1, 'held');
  await started;
  const wakesBefore = wakes();
  await db.pool.query("update users set first_name = 'During' where id = $1", [id]);
  await db.pool.query("select pg_notify('suekk_sync', 'mark')");
  release();
  await waitFor(() => receiver.delivered.length === 2, 'both events', PROMPTLY_MS);
  t.same(receiver.delivered.map((r) => r.body.displayName), ['First Last', 'During Last']);
  t.equal(wakes() - wakesBefore, 0, 'the change to a held stream sent no notification');
});

t.test('a writer holding a due stream when the relay looks: the relay comes back once it commits', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  const [id] = await addUsers(db, 1, 'locked');
  // The stream is due; a writer now holds its row (and adds an event) in an open transaction.
  const writer = await db.pool.connect();
  t.teardown(() => writer.release());
  await writer.query('begin');
  await writer.query("update users set first_name = 'Late' where id = $1", [id]);
  // The relay starts now: its claim skips the locked stream, and nothing will notify again.
  await startTestRelay(t, db, receiver.url, { settings: { pollIntervalMs: POLL_MS } });
  await new Promise((r) => setTimeout(r, 300));
  t.equal(receiver.delivered.length, 0, 'nothing sent while the writer holds the stream');
  await writer.query('commit');
  await waitFor(() => receiver.delivered.length === 2, 'both events after the commit', PROMPTLY_MS);
  t.same(receiver.delivered.map((r) => r.body.displayName), ['First Last', 'Late Last']);
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
          await client.query('update users set first_name = $2 where id = $1', [ids[(w + i) % ids.length], `w${w}-${i}`]);
          // Gaps of a few milliseconds let streams go idle between changes, and catch releases mid-way.
          if (i % 3 === 0) await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 8)));
        }
      } finally {
        client.release();
      }
    }),
  );
  const total = ids.length + writers * updatesEach;
  await waitFor(async () => (await eventStatuses(db)).delivered === total, `${total} delivered`, PROMPTLY_MS, () => receiver.delivered.length);
  const { rows } = await db.pool.query<{ user_id: string; webhook_id: string }>(
    'select user_id, webhook_id::text from suekk_sync.events order by id',
  );
  const captured = new Map<string, string[]>();
  for (const r of rows) captured.set(r.user_id, [...(captured.get(r.user_id) ?? []), `evt_${r.webhook_id}`]);
  const arrived = new Map<string, string[]>();
  for (const r of receiver.delivered) arrived.set(String(r.body.id), [...(arrived.get(String(r.body.id)) ?? []), r.webhookId]);
  t.same(arrived, captured, 'each user in capture order, each event once');
});

t.test('a writer that stayed silent because the bell was rung is delivered once it commits, without the poll', async (t) => {
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
  t.same(receiver.delivered.map((r) => r.body.username), ['before1', 'ringer', 'quiet']);
  t.equal(wakes(), 1, 'one notification for both writers');
});
