/** Every row of DESIGN §3's capture table, asserted on the outbox of a real database. */
import t from 'tap';
import { DOORBELL_LOCK } from '../src/capture/generate.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { waitFor } from './helpers/receiver.ts';

interface EventRow {
  user_id: string;
  action: string;
  payload: Record<string, unknown>;
  source: string;
  webhook_id: string;
  application_name: string | null;
}

async function events(db: TestDatabase): Promise<EventRow[]> {
  const { rows } = await db.pool.query<EventRow>(
    'select user_id, action, payload, source, webhook_id::text, application_name from suekk_sync.events order by id',
  );
  return rows;
}

async function addUser(db: TestDatabase, username: string, extra: Record<string, unknown> = {}): Promise<string> {
  const cols = ['email', 'username', 'password', 'first_name', 'last_name', ...Object.keys(extra)];
  const values = [`${username}@example.com`, username, '$2a$10$hash', 'First', 'Last', ...Object.values(extra)];
  const { rows } = await db.pool.query<{ id: string }>(
    `insert into users (${cols.join(', ')}) values (${cols.map((_, i) => `$${i + 1}`).join(', ')}) returning id`,
    values,
  );
  return rows[0]!.id;
}

async function clearEvents(db: TestDatabase): Promise<void> {
  await db.pool.query('delete from suekk_sync.events');
}

t.test('INSERT captures created with the payload snapshot, a fresh webhook id and the writer', async (t) => {
  const db = await createTestDatabase(t);
  const id = await addUser(db, 'alice', { avatar: 'https://example.com/a.png', role: 'admin' });
  const rows = await events(db);
  t.equal(rows.length, 1);
  const e = rows[0]!;
  t.equal(e.action, 'created');
  t.equal(e.user_id, id);
  t.equal(e.source, 'trigger');
  t.equal(e.application_name, 'suekk-sync test');
  t.match(e.webhook_id, /^[0-9a-f-]{36}$/);
  t.same(e.payload, {
    id,
    email: 'alice@example.com',
    username: 'alice',
    displayName: 'First Last',
    avatar: 'https://example.com/a.png',
    role: 'admin',
    isActive: true,
  });
});

t.test('displayName falls back to the username when the names are empty', async (t) => {
  const db = await createTestDatabase(t);
  await db.pool.query(
    "insert into users (email, username, password, first_name, last_name) values ('b@x.io', 'bob', 'h', '', null)",
  );
  const [e] = await events(db);
  t.equal(e!.payload.displayName, 'bob');
  t.equal(e!.payload.avatar, null, 'NULL stays NULL in the snapshot; the body builder sends ""');
});

t.test('INSERT of an already soft-deleted row captures nothing', async (t) => {
  const db = await createTestDatabase(t);
  await addUser(db, 'ghost', { deleted_at: new Date() });
  t.same(await events(db), []);
});

t.test('UPDATE that changes the payload captures updated from NEW', async (t) => {
  const db = await createTestDatabase(t);
  const id = await addUser(db, 'carol');
  await clearEvents(db);
  await db.pool.query("update users set first_name = 'Caroline' where id = $1", [id]);
  const rows = await events(db);
  t.equal(rows.length, 1);
  t.equal(rows[0]!.action, 'updated');
  t.equal(rows[0]!.payload.displayName, 'Caroline Last');
});

t.test('UPDATE that changes nothing in the payload captures nothing', async (t) => {
  const db = await createTestDatabase(t);
  const id = await addUser(db, 'dave');
  await clearEvents(db);
  await db.pool.query('update users set last_login_at = now(), updated_at = now(), password = $2 where id = $1', [
    id,
    'other-hash',
  ]);
  await db.pool.query("update users set first_name = 'First' where id = $1", [id]);
  t.same(await events(db), []);
});

t.test('soft delete captures deleted from NEW, restore captures created, staying deleted captures nothing', async (t) => {
  const db = await createTestDatabase(t);
  const id = await addUser(db, 'erin');
  await clearEvents(db);
  await db.pool.query('update users set deleted_at = now() where id = $1', [id]);
  await db.pool.query("update users set first_name = 'Ghost' where id = $1", [id]);
  await db.pool.query('update users set deleted_at = null where id = $1', [id]);
  const rows = await events(db);
  t.same(
    rows.map((r) => [r.action, r.payload.displayName]),
    [
      ['deleted', 'First Last'],
      ['created', 'Ghost Last'],
    ],
  );
});

t.test('a primary key change captures deleted for the old id and created for the new', async (t) => {
  const db = await createTestDatabase(t);
  const oldId = await addUser(db, 'frank');
  await clearEvents(db);
  const newId = '00000000-0000-4000-8000-000000000001';
  await db.pool.query('update users set id = $2 where id = $1', [oldId, newId]);
  const rows = await events(db);
  t.same(
    rows.map((r) => [r.action, r.user_id, r.payload.id]),
    [
      ['deleted', oldId, oldId],
      ['created', newId, newId],
    ],
  );
});

t.test('DELETE captures deleted from OLD; DELETE of a soft-deleted row captures nothing', async (t) => {
  const db = await createTestDatabase(t);
  const live = await addUser(db, 'gina');
  const gone = await addUser(db, 'hank');
  await db.pool.query('update users set deleted_at = now() where id = $1', [gone]);
  await clearEvents(db);
  await db.pool.query('delete from users');
  const rows = await events(db);
  t.same(
    rows.map((r) => [r.action, r.user_id, r.payload.username]),
    [['deleted', live, 'gina']],
  );
});

t.test('TRUNCATE captures deleted for every live row, from the rows before truncation', async (t) => {
  const db = await createTestDatabase(t);
  const a = await addUser(db, 'ivan');
  const b = await addUser(db, 'judy');
  const c = await addUser(db, 'kim');
  await db.pool.query('update users set deleted_at = now() where id = $1', [c]);
  await clearEvents(db);
  await db.pool.query('truncate users');
  const rows = await events(db);
  t.same(rows.map((r) => r.action), ['deleted', 'deleted']);
  t.same(new Set(rows.map((r) => r.user_id)), new Set([a, b]));
  t.same(new Set(rows.map((r) => r.payload.username)), new Set(['ivan', 'judy']));
});

t.test('a transaction that rolls back leaves no event', async (t) => {
  const db = await createTestDatabase(t);
  const client = await db.pool.connect();
  try {
    await client.query('begin');
    await client.query("insert into users (email, username, password) values ('r@x.io', 'rollo', 'h')");
    await client.query('rollback');
  } finally {
    client.release();
  }
  t.same(await events(db), []);
  const streams = await db.pool.query('select * from suekk_sync.streams');
  t.equal(streams.rowCount, 0, 'no stream either');
});

t.test('each event gets its own webhook id and a stream per user, due at once', async (t) => {
  const db = await createTestDatabase(t);
  const id = await addUser(db, 'lena');
  await db.pool.query("update users set first_name = 'L' where id = $1", [id]);
  await addUser(db, 'mona');
  const rows = await events(db);
  t.equal(new Set(rows.map((r) => r.webhook_id)).size, 3);
  const streams = await db.pool.query<{ user_id: string; gen: string; due: boolean }>(
    'select user_id, gen, next_attempt_at <= clock_timestamp() as due from suekk_sync.streams order by gen desc',
  );
  t.equal(streams.rowCount, 2);
  t.same(streams.rows[0], { user_id: id, gen: '1', due: true });
});

t.test('one constant NOTIFY per transaction, none for a change that captures nothing', async (t) => {
  const db = await createTestDatabase(t);
  const listener = await db.pool.connect();
  const received: string[] = [];
  listener.on('notification', (n) => received.push(`${n.channel}:${n.payload}`));
  await listener.query('listen suekk_sync');
  const writer = await db.pool.connect();
  await writer.query('begin');
  await writer.query("insert into users (email, username, password) values ('n1@x.io', 'n1', 'h'), ('n2@x.io', 'n2', 'h')");
  await writer.query("update users set first_name = 'X'");
  await writer.query('commit');
  await writer.query('update users set last_login_at = now()');
  writer.release();
  await new Promise((r) => setTimeout(r, 200));
  await listener.query('unlisten *');
  listener.release();
  t.same(received, ['suekk_sync:']);
});

/**
 * A listener that tells how many wake-ups each step sent: a marker notification after the step
 * arrives after everything the step's transactions sent (notifications arrive in commit order).
 * Before each step it answers the doorbell, as a relay that looked and found nothing would, so that
 * a step's writer rings whenever it wakes a stream (the doorbell's own test is below).
 */
async function wakeCounter(t: { teardown(fn: () => unknown): void }, db: TestDatabase, answer = true) {
  const listener = await db.pool.connect();
  let wakes = 0;
  let marks = 0;
  listener.on('notification', (n) => {
    if (n.payload === '') wakes++;
    else marks++;
  });
  await listener.query('listen suekk_sync');
  t.teardown(async () => {
    await listener.query('unlisten *');
    listener.release();
  });
  return async (step: () => Promise<unknown>): Promise<number> => {
    if (answer) await db.pool.query('select suekk_sync.answer_doorbell()');
    const before = wakes;
    const marksBefore = marks;
    await step();
    await db.pool.query("select pg_notify('suekk_sync', 'mark')");
    const deadline = Date.now() + 10_000;
    while (marks === marksBefore) {
      if (Date.now() > deadline) throw new Error('the marker notification never arrived');
      await new Promise((r) => setTimeout(r, 5));
    }
    return wakes - before;
  };
}

t.test('NOTIFY only when a change wakes an idle stream (or one whose lease ran out)', async (t) => {
  const db = await createTestDatabase(t);
  const wakesOf = await wakeCounter(t, db);
  const stream = (id: string, set: string) => db.pool.query(`update suekk_sync.streams set ${set} where user_id = $1`, [id]);
  let id = '';
  t.equal(await wakesOf(async () => (id = await addUser(db, 'nina'))), 1, 'a new user: its stream wakes');
  t.equal(await wakesOf(() => db.pool.query("update users set first_name = 'N2' where id = $1", [id])), 0, 'stream already due: nothing to wake');
  await stream(id, 'next_attempt_at = null');
  t.equal(await wakesOf(() => db.pool.query("update users set first_name = 'N3' where id = $1", [id])), 1, 'stream idle: woken');
  await stream(id, "locked_by = 'relay-a', locked_until = now() + interval '1 minute'");
  t.equal(await wakesOf(() => db.pool.query("update users set first_name = 'N4' where id = $1", [id])), 0, 'held by a relay: it sees the new generation');
  await stream(id, "locked_until = now() - interval '1 second'");
  t.equal(await wakesOf(() => db.pool.query("update users set first_name = 'N5' where id = $1", [id])), 1, 'held under a lease that ran out: woken');
  await stream(id, 'locked_by = null, locked_until = null, parked = true');
  t.equal(await wakesOf(() => db.pool.query("update users set first_name = 'N6' where id = $1", [id])), 0, 'parked: waits for an operator');
  await stream(id, 'parked = false, next_attempt_at = null');
  t.equal(await wakesOf(() => db.pool.query('update users set last_login_at = now() where id = $1', [id])), 0, 'nothing captured');
  const rolledBack = await wakesOf(async () => {
    const client = await db.pool.connect();
    try {
      await client.query('begin');
      await client.query("update users set first_name = 'N7' where id = $1", [id]);
      await client.query('rollback');
    } finally {
      client.release();
    }
  });
  t.equal(rolledBack, 0, 'rolled back');
  let other = '';
  const both = await wakesOf(async () => {
    const client = await db.pool.connect();
    try {
      await client.query('begin');
      await client.query("update users set first_name = 'N8' where id = $1", [id]);
      other = (await client.query<{ id: string }>(
        "insert into users (email, username, password) values ('o@x.io', 'olga', 'h') returning id",
      )).rows[0]!.id;
      await client.query('commit');
    } finally {
      client.release();
    }
  });
  t.equal(both, 1, 'two streams woken in one transaction: one notification');
  await db.pool.query('update suekk_sync.streams set next_attempt_at = null');
  t.equal(await wakesOf(() => db.pool.query('truncate users')), 1, 'TRUNCATE wakes');
  const rows = await events(db);
  t.same(rows.slice(-2).map((r) => [r.action, r.user_id]).sort(), [['deleted', id], ['deleted', other]].sort());
  const { rows: streams } = await db.pool.query<{ due: boolean }>('select next_attempt_at is not null as due from suekk_sync.streams');
  t.same(streams, [{ due: true }, { due: true }]);
});

t.test('the doorbell: one ring until a relay answers; a silent writer holds the answer back until it commits', async (t) => {
  const db = await createTestDatabase(t);
  const wakesOf = await wakeCounter(t, db, false);
  const answer = () => db.pool.query('select suekk_sync.answer_doorbell()');
  await answer();
  t.equal(await wakesOf(() => addUser(db, 'ring1')), 1, 'the first woken stream rings');
  t.equal(await wakesOf(() => addUser(db, 'ring2')), 0, 'rung and not answered: silent');
  await answer();
  t.equal(await wakesOf(() => addUser(db, 'ring3')), 1, 'answered: the next one rings again');

  // A silent writer still open: the relay's answer waits for it (here: times out, so the relay
  // looks again later) instead of claiming before its stream is visible.
  const silent = await db.pool.connect();
  try {
    await silent.query('begin');
    await silent.query("insert into users (email, username, password) values ('s@x.io', 'silent', 'h')");
    const { rows } = await answer();
    t.same(rows, [{ answer_doorbell: false }], 'not answered while a silent writer is open');
    // Meanwhile a writer that finds a relay looking (the lock wanted exclusively) rings, even with
    // the bell rung by a committed writer: the relay's claim may come before this writer commits.
    const looking = db.pool.query(`select pg_advisory_xact_lock(${DOORBELL_LOCK})`); // waits for the silent writer
    await waitFor(
      async () => (await db.pool.query("select 1 from pg_locks where locktype = 'advisory' and not granted")).rowCount === 1,
      'the relay waiting for the doorbell lock',
    );
    const { rows: committed } = await db.pool.query<{ xid: string }>('select txid_current()::text as xid');
    await db.pool.query("select setval('suekk_sync.wake_pending', $1)", [committed[0]!.xid]);
    t.equal(await wakesOf(() => addUser(db, 'ring4')), 1, 'a relay is looking: ring');
    await silent.query('commit');
    await looking;
  } finally {
    silent.release();
  }
  const { rows } = await answer();
  t.same(rows, [{ answer_doorbell: true }], 'answered once the silent writer committed');

  // A ringer that rolls back never sent its notification: the next writer rings instead of trusting it.
  await answer();
  const ringer = await db.pool.connect();
  try {
    await ringer.query('begin');
    await ringer.query("insert into users (email, username, password) values ('r@x.io', 'rolled', 'h')");
    t.equal(await wakesOf(() => addUser(db, 'meanwhile')), 0, 'the ringer is still open: silent');
    await ringer.query('rollback');
  } finally {
    ringer.release();
  }
  t.equal(await wakesOf(() => addUser(db, 'after')), 1, 'the ringer rolled back: ring');

  // A bell restored from another cluster (a transaction id this one has not reached) must not make
  // writes fail: the writer rings and resets it.
  await db.pool.query("select setval('suekk_sync.wake_pending', 9000000000000)");
  t.equal(await wakesOf(() => addUser(db, 'restored')), 1, 'a bell from the future: ring');
  t.equal(await wakesOf(() => addUser(db, 'restored2')), 0, 'and the bell is sane again');
});

t.test('a primary key change wakes both streams with one notification', async (t) => {
  const db = await createTestDatabase(t);
  const wakesOf = await wakeCounter(t, db);
  const oldId = await addUser(db, 'piet');
  await db.pool.query('update suekk_sync.streams set next_attempt_at = null');
  const newId = '00000000-0000-4000-8000-000000000002';
  t.equal(await wakesOf(() => db.pool.query('update users set id = $2 where id = $1', [oldId, newId])), 1);
  const { rows } = await db.pool.query<{ user_id: string; gen: string; due: boolean }>(
    'select user_id, gen::text, next_attempt_at is not null as due from suekk_sync.streams order by user_id',
  );
  t.same(rows, [
    { user_id: newId, gen: '0', due: true },
    { user_id: oldId, gen: '1', due: true },
  ].sort((a, b) => (a.user_id < b.user_id ? -1 : 1)));
});

t.test('the payload function is inlined into its callers: not planned again in every transaction', async (t) => {
  const db = await createTestDatabase(t);
  const { rows } = await db.pool.query<{ 'QUERY PLAN': string }>(
    'explain (verbose, costs off) select suekk_sync.user_payload(u), suekk_sync.user_key(u), suekk_sync.user_is_live(u) from users u',
  );
  const output = rows.map((r) => r['QUERY PLAN']).join('\n');
  t.match(output, /jsonb_build_object\('id'/, 'the mapping expressions appear in the plan');
  t.notMatch(output, /user_payload|user_key|user_is_live/, 'no function call left');
});
