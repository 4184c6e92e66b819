/** The group-committed ends of turns against a real database. */
import t from 'tap';
import { createLogger } from '../src/logger.ts';
import { claimStreams, type ClaimedStream, type StreamRelease } from '../src/db/relay-queries.ts';
import { OutcomeWriter } from '../src/relay/outcome-writer.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { addUsers, eventStatuses } from './helpers/relay.ts';

const CLAIM = { leaseMs: 30_000, perStream: 20, readLimit: 1000, answerBell: false };

function writerFor(db: TestDatabase, relayId: string, maxBatch = 10): OutcomeWriter {
  return new OutcomeWriter(db.pool, relayId, createLogger('silent'), { maxBatch, leaseMs: 30_000, perStream: 20 });
}

/** The release a relay writes after delivering every event it read of the stream. */
function deliveredAll(stream: ClaimedStream): StreamRelease {
  const last = stream.events.at(-1)!;
  return {
    userId: stream.userId,
    kind: 'idle',
    cursor: last.id,
    head: null,
    delivered: stream.events.map((e) => ({
      eventId: e.id,
      outcome: 'delivered' as const,
      supersededBy: null,
      attempts: 1,
      rounds: 1,
      httpStatus: 200,
      durationMs: 1,
      response: null,
      runId: e.runId,
    })),
  };
}

t.test("each release records its stream's cursor and delivery log together, however the batches split", async (t) => {
  const db = await createTestDatabase(t);
  await addUsers(db, 6);
  await db.pool.query("update users set first_name = 'second'");
  await db.pool.query("update users set first_name = 'third'");
  const { streams } = await claimStreams(db.pool, 'relay-a', { ...CLAIM, limit: 10 });
  t.equal(streams.length, 6);
  t.same(
    streams.map((s) => s.events.length),
    Array(6).fill(3),
  );
  // A batch of 2: six releases go in three statements.
  const writer = writerFor(db, 'relay-a', 2);
  const results = await Promise.all(streams.map((s) => writer.release(deliveredAll(s))));
  t.same(
    results.map((r) => r.outcome),
    Array(6).fill('released'),
  );
  t.same(await eventStatuses(db), { delivered: 18 });
  const { rows: log } = await db.pool.query<{ n: number }>(
    "select count(*)::int as n from suekk_sync.deliveries where outcome = 'delivered'",
  );
  t.same(log, [{ n: 18 }], 'one log row per delivered event, written once');
  const idle = await db.pool.query(
    'select count(*)::int as n from suekk_sync.streams where locked_by is null and last_event_id = delivered_through',
  );
  t.same(idle.rows, [{ n: 6 }], 'all idle, cursors at their last event');
});

t.test('a release for a stream this relay no longer holds records nothing', async (t) => {
  const db = await createTestDatabase(t);
  await addUsers(db, 1);
  const { streams } = await claimStreams(db.pool, 'relay-a', { ...CLAIM, limit: 1 });
  await db.pool.query("update suekk_sync.streams set locked_by = 'relay-b'");
  const result = await writerFor(db, 'relay-a').release(deliveredAll(streams[0]!));
  t.equal(result.outcome, 'lost');
  t.same(await eventStatuses(db), { pending: 1 }, 'relay-b will deliver it');
  const { rows } = await db.pool.query('select count(*)::int as n from suekk_sync.deliveries');
  t.same(rows, [{ n: 0 }], 'no delivery logged for it');
});

t.test("an idle release goes on with what a ticker saw since, and the stream stays this relay's", async (t) => {
  const db = await createTestDatabase(t);
  const [id] = await addUsers(db, 1);
  const { streams } = await claimStreams(db.pool, 'relay-a', { ...CLAIM, limit: 1 });
  // A change captured while relay-a delivers; another relay's claim ticks it in (the user is
  // relay-a's, so it only learns that more is there).
  await db.pool.query("update users set first_name = 'meanwhile' where id = $1", [id]);
  const other = await claimStreams(db.pool, 'relay-b', { ...CLAIM, limit: 5 });
  t.same(other.streams, [], 'relay-b leaves the user to relay-a');
  const result = await writerFor(db, 'relay-a').release(deliveredAll(streams[0]!));
  t.equal(result.outcome, 'continued');
  t.same(
    result.events.map((e) => e.action),
    ['updated'],
    'with the next event read',
  );
  const { rows } = await db.pool.query('select locked_by, delivered_through::int as cursor from suekk_sync.streams');
  t.same(rows, [{ locked_by: 'relay-a', cursor: Number(streams[0]!.events[0]!.id) }]);
});

t.test('a round that failed records its head on the stream, not on the event', async (t) => {
  const db = await createTestDatabase(t);
  await addUsers(db, 1);
  const version = async () =>
    (await db.pool.query<{ v: string }>('select xmin::text as v, ctid::text from suekk_sync.events')).rows;
  const captured = await version();
  const { streams } = await claimStreams(db.pool, 'relay-a', { ...CLAIM, limit: 1 });
  const event = streams[0]!.events[0]!;
  const dueAt = new Date(Date.now() + 60_000);
  const result = await writerFor(db, 'relay-a').release({
    userId: streams[0]!.userId,
    kind: 'reschedule',
    cursor: streams[0]!.cursor,
    dueAt,
    head: {
      eventId: event.id,
      attempts: 3,
      rounds: 1,
      httpStatus: 503,
      error: 'HTTP 503',
      response: 'busy',
      durationMs: 12,
    },
    delivered: [],
  });
  t.equal(result.outcome, 'released');
  const { rows } = await db.pool.query(
    'select status, attempts, rounds, last_status, last_error, last_response, next_attempt_at from suekk_sync.event_log',
  );
  t.same(rows, [
    {
      status: 'pending',
      attempts: 3,
      rounds: 1,
      last_status: 503,
      last_error: 'HTTP 503',
      last_response: 'busy',
      next_attempt_at: dueAt,
    },
  ]);
  t.same(await version(), captured, 'the event row is the version capture wrote');
});
