/** Retention by partition against a real database: what rotation does, and what it never blocks. */
import t from 'tap';
import { rotatePartitions } from '../src/db/retention.ts';
import { createTestDatabase } from './helpers/db.ts';
import { markDelivered } from './helpers/outbox.ts';
import { addUsers } from './helpers/relay.ts';

async function partitions(db: Awaited<ReturnType<typeof createTestDatabase>>) {
  const { rows } = await db.pool.query<{ part: number; n: number }>(
    'select part, count(*)::int as n from suekk_sync.events group by part order by part',
  );
  return rows;
}

t.test('writes go to the partition rotation makes current, at once', async (t) => {
  const db = await createTestDatabase(t);
  await addUsers(db, 2, 'before');
  const report = await rotatePartitions(db.pool, 1_000);
  t.equal(report.rotatedTo, 1, 'partition 0 served its period (install time was long ago)');
  await addUsers(db, 3, 'after');
  t.same(await partitions(db), [
    { part: 0, n: 2 },
    { part: 1, n: 3 },
  ]);
  const again = await rotatePartitions(db.pool, 60_000);
  t.same([again.rotatedTo, again.truncated], [null, []], 'nothing more before a quarter of the retention');
});

t.test('a partition a long query is reading is emptied later, and writers are never held up meanwhile', async (t) => {
  const db = await createTestDatabase(t);
  await addUsers(db, 4, 'old');
  await markDelivered(db);
  await rotatePartitions(db.pool, 200);
  // A report reading the retired partition (as pg_dump would), open for the whole test.
  const reader = await db.pool.connect();
  t.teardown(() => reader.release());
  await reader.query('begin');
  await reader.query('select count(*) from suekk_sync.events_p0');
  await new Promise((r) => setTimeout(r, 250));
  // A writer during the truncate's wait: with a lock timeout, so that being queued behind it fails.
  const writer = await db.pool.connect();
  t.teardown(() => writer.release());
  await writer.query("set lock_timeout = '5s'");
  const rotation = rotatePartitions(db.pool, 200);
  await new Promise((r) => setTimeout(r, 200));
  await writer.query("insert into users (email, username, password) values ('w@x.io', 'meanwhile', 'h')");
  t.pass('a writer is not queued behind the waiting truncate');
  t.same((await rotation).deferred, [0], 'the truncate gave up waiting for the reader, to try again later');
  await reader.query('commit');
  const later = await rotatePartitions(db.pool, 200);
  t.ok(later.truncated.includes(0), 'emptied once the reader is gone');
  t.notOk(
    (await partitions(db)).some((p) => p.part === 0),
    'partition 0 is empty',
  );
  // Settled events the tickers' horizon has not passed (a transaction open elsewhere in the cluster
  // holds it back) move rather than go: only the new write is undelivered, and it is kept.
  const { rows } = await db.pool.query<{ username: string; status: string }>(
    "select payload->>'username' as username, status from suekk_sync.event_log where status <> 'delivered'",
  );
  t.same(rows, [{ username: 'meanwhile', status: 'pending' }], 'only the new write is left to deliver, and it is kept');
});
