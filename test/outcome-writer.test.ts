/** The group-committed outcome writer against a real database. */
import t from 'tap';
import { createLogger } from '../src/logger.ts';
import { claimStreams, type EventOutcome } from '../src/db/relay-queries.ts';
import { OutcomeWriter } from '../src/relay/outcome-writer.ts';
import { createTestDatabase } from './helpers/db.ts';
import { addUsers } from './helpers/relay.ts';

const delivered = (eventId: string): EventOutcome => ({
  eventId,
  status: 'delivered',
  attempts: 1,
  httpStatus: 200,
  error: null,
  response: null,
  durationMs: 1,
  nextAttemptAt: null,
});

t.test('a stream\'s release never lands before its outcomes, however the batches split', async (t) => {
  const db = await createTestDatabase(t);
  await addUsers(db, 6);
  await db.pool.query("update users set first_name = 'second'");
  await db.pool.query("update users set first_name = 'third'");
  const claimed = await claimStreams(db.pool, 'relay-a', 10, 30_000, 20);
  t.equal(claimed.length, 6);
  // A batch of 2: outcomes and releases must be cut in arrival order, not separately.
  const writer = new OutcomeWriter(db.pool, 'relay-a', createLogger('silent'), 2);
  const releases: Promise<string>[] = [];
  for (const stream of claimed) for (const event of stream.events) writer.add(delivered(event.id));
  for (const stream of claimed) releases.push(writer.release({ userId: stream.userId, kind: 'idle', gen: stream.gen }));
  t.same(await Promise.all(releases), Array(6).fill('released'));
  await writer.drain();
  const { rows } = await db.pool.query('select status, count(*)::int as n from suekk_sync.events group by status');
  t.same(rows, [{ status: 'delivered', n: 18 }]);
  const streams = await db.pool.query('select count(*)::int as n from suekk_sync.streams where next_attempt_at is null and locked_by is null');
  t.same(streams.rows, [{ n: 6 }], 'all idle, none holding a pending event');
});

t.test('an outcome for a stream this relay no longer holds does not count', async (t) => {
  const db = await createTestDatabase(t);
  await addUsers(db, 1);
  const [stream] = await claimStreams(db.pool, 'relay-a', 1, 30_000, 20);
  await db.pool.query("update suekk_sync.streams set locked_by = 'relay-b'");
  const writer = new OutcomeWriter(db.pool, 'relay-a', createLogger('silent'), 10);
  writer.add(delivered(stream!.events[0]!.id));
  t.equal(await writer.release({ userId: stream!.userId, kind: 'idle', gen: stream!.gen }), 'lost');
  const { rows } = await db.pool.query('select status from suekk_sync.events');
  t.same(rows, [{ status: 'pending' }], 'relay-b will deliver it');
});

t.test('a stream a writer is adding to right now is not marked idle', async (t) => {
  const db = await createTestDatabase(t);
  const [id] = await addUsers(db, 1);
  const [stream] = await claimStreams(db.pool, 'relay-a', 1, 30_000, 20);
  const writerTx = await db.pool.connect();
  await writerTx.query('begin');
  await writerTx.query("update users set first_name = 'mid-flight' where id = $1", [id]);
  const writer = new OutcomeWriter(db.pool, 'relay-a', createLogger('silent'), 10);
  writer.add(delivered(stream!.events[0]!.id));
  t.equal(await writer.release({ userId: stream!.userId, kind: 'idle', gen: stream!.gen }), 'locked');
  await writerTx.query('commit');
  writerTx.release();
  // Once committed, the generation moved on: an idle release keeps the stream due.
  t.equal(await writer.release({ userId: stream!.userId, kind: 'idle', gen: stream!.gen }), 'released');
  const { rows } = await db.pool.query('select next_attempt_at is not null as due, gen from suekk_sync.streams');
  t.same(rows, [{ due: true, gen: '1' }]);
});
