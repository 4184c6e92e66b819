/** Every row of the capture table (docs/design.md, "What is captured"), asserted on the outbox of a real database. */
import t, { type Test } from 'tap';
import { claimStreams } from '../src/db/relay-queries.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';

interface EventRow {
  user_id: string;
  action: string;
  body: string;
  payload: Record<string, unknown>;
  source: string;
  webhook_id: string;
  application_name: string | null;
}

async function events(db: TestDatabase): Promise<EventRow[]> {
  const { rows } = await db.pool.query<EventRow>(
    'select user_id, action, body, body::json as payload, source, webhook_id::text, application_name from suekk_sync.events order by id',
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

t.test(
  "INSERT captures created with the body rendered in the contract's order, a fresh webhook id and the writer",
  async (t) => {
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
    t.equal(
      e.body,
      `{"id":"${id}","email":"alice@example.com","username":"alice","displayName":"First Last","avatar":"https://example.com/a.png","role":"admin","isActive":true,"action":"created"}`,
      'the exact bytes the relay sends',
    );
  },
);

t.test('displayName falls back to the username when the names are empty', async (t) => {
  const db = await createTestDatabase(t);
  await db.pool.query(
    "insert into users (email, username, password, first_name, last_name) values ('b@x.io', 'bob', 'h', '', null)",
  );
  const [e] = await events(db);
  t.equal(e!.payload.displayName, 'bob');
  t.equal(e!.payload.avatar, '', 'NULL is sent as "", what the backend\'s structs decode anyway');
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

t.test(
  'soft delete captures deleted from NEW, restore captures created, staying deleted captures nothing',
  async (t) => {
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
  },
);

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
  t.same(
    rows.map((r) => r.action),
    ['deleted', 'deleted'],
  );
  t.same(new Set(rows.map((r) => r.user_id)), new Set([a, b]));
  t.same(new Set(rows.map((r) => r.payload.username)), new Set(['ivan', 'judy']));
});

/** Claims until no gap is open: once every transaction open at a gap's finding has ended. */
async function closesEventually(
  tt: Test,
  db: TestDatabase,
  options: Parameters<typeof claimStreams>[2],
  what: string,
): Promise<void> {
  const deadline = Date.now() + 20_000;
  let claim = await claimStreams(db.pool, 'relay-a', options);
  while (claim.openGaps && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    claim = await claimStreams(db.pool, 'relay-a', options);
  }
  tt.notOk(claim.openGaps, what);
  tt.same(claim.streams, [], 'and nothing more to lease');
}

t.test('a transaction that rolls back leaves no event, and its unused id holds nothing up', async (t) => {
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
  const later = await addUser(db, 'later');
  const options = { limit: 10, leaseMs: 30_000, perStream: 20, readLimit: 1000, answerBell: false };
  const claim = await claimStreams(db.pool, 'relay-a', options);
  t.same(
    claim.streams.map((s) => s.userId),
    [later],
    'the event behind the unused id goes at once',
  );
  // The id counts as open while any transaction of the cluster that was open when it was found
  // (other databases' too: a snapshot does not say which database a transaction writes) is.
  await closesEventually(t, db, options, 'the id it took is known never to commit');
});

t.test("a writer writes the event and nothing else: the relay's claim turns events into streams", async (t) => {
  const db = await createTestDatabase(t);
  const id = await addUser(db, 'lena');
  await db.pool.query("update users set first_name = 'L' where id = $1", [id]);
  const other = await addUser(db, 'mona');
  const rows = await events(db);
  t.equal(new Set(rows.map((r) => r.webhook_id)).size, 3, 'each event its own webhook id');
  t.equal(
    (await db.pool.query('select * from suekk_sync.streams')).rowCount,
    0,
    "no stream row in the writers' transactions",
  );
  const claim = await claimStreams(db.pool, 'relay-a', {
    limit: 10,
    leaseMs: 30_000,
    perStream: 20,
    readLimit: 1000,
    answerBell: false,
  });
  const byUser = new Map(claim.streams.map((c) => [c.userId, c.events.map((e) => e.action)]));
  t.same(
    Object.fromEntries(byUser),
    { [id]: ['created', 'updated'], [other]: ['created'] },
    'each user leased with its events in order',
  );
});

t.test('an update of columns capture does not read never calls the capture function', async (t) => {
  const db = await createTestDatabase(t);
  const id = await addUser(db, 'nora');
  const client = await db.pool.connect();
  t.teardown(() => client.release());
  // Calls counted before and after the statement, in one transaction: the difference is its own.
  const count = async () =>
    (
      await client.query<{ n: number }>(
        "select coalesce(sum(calls), 0)::int as n from pg_stat_xact_user_functions where schemaname = 'suekk_sync' and funcname = 'capture_row'",
      )
    ).rows[0]!.n;
  const calls = async (sql: string) => {
    await client.query('begin');
    await client.query("set local track_functions = 'pl'");
    const before = await count();
    await client.query(sql, [id]);
    const after = await count();
    await client.query('commit');
    return after - before;
  };
  t.equal(await calls('update users set last_login_at = now() where id = $1'), 0, 'a login');
  t.equal(
    await calls("update users set password = 'new-hash', updated_at = now() where id = $1"),
    0,
    'a password change',
  );
  t.equal(await calls('update users set first_name = first_name where id = $1'), 0, 'a column set to itself');
  t.equal(await calls("update users set first_name = 'Nora' where id = $1"), 1, 'a mapped column changed');
  t.equal(await calls('update users set deleted_at = now() where id = $1'), 1, 'the soft-delete column changed');
  t.same(
    (await events(db)).map((e) => e.action),
    ['created', 'updated', 'deleted'],
  );
});

/**
 * A listener that tells how many wake-ups each step sent: a marker notification after the step
 * arrives after everything the step's transactions sent (notifications arrive in commit order).
 * Before each step it answers the doorbell, as a relay's claim does, unless told not to.
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
    if (answer) await answerBell(db);
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

/** A claim that answers the doorbell and leases no one, as a relay with no room left would. */
async function answerBell(db: TestDatabase): Promise<void> {
  await claimStreams(db.pool, 'bell-answerer', {
    limit: 0,
    leaseMs: 30_000,
    perStream: 1,
    readLimit: 1,
    answerBell: true,
  });
}

t.test('the doorbell: one ring until a relay answers, none for a change that captures nothing', async (t) => {
  const db = await createTestDatabase(t);
  const wakesOf = await wakeCounter(t, db, false);
  await answerBell(db);
  let id = '';
  t.equal(await wakesOf(async () => (id = await addUser(db, 'ring1'))), 1, 'the first captured write rings');
  t.equal(await wakesOf(() => addUser(db, 'ring2')), 0, 'rung and not answered: silent');
  t.equal(
    await wakesOf(() => db.pool.query("update users set first_name = 'R' where id = $1", [id])),
    0,
    'still silent',
  );
  await answerBell(db);
  t.equal(
    await wakesOf(() => db.pool.query('update users set last_login_at = now() where id = $1', [id])),
    0,
    'nothing captured: no ring',
  );
  t.equal(await wakesOf(() => addUser(db, 'ring3')), 1, 'answered: the next captured write rings again');
  await answerBell(db);
  const both = await wakesOf(async () => {
    const client = await db.pool.connect();
    try {
      await client.query('begin');
      await client.query("update users set first_name = 'N8' where id = $1", [id]);
      await client.query("insert into users (email, username, password) values ('o@x.io', 'olga', 'h')");
      await client.query('commit');
    } finally {
      client.release();
    }
  });
  t.equal(both, 1, 'two events in one transaction: one notification');
  await answerBell(db);
  t.equal(await wakesOf(() => db.pool.query('truncate users')), 1, 'TRUNCATE rings');
  const rows = await events(db);
  t.same(
    rows.slice(-4).map((r) => r.action),
    ['deleted', 'deleted', 'deleted', 'deleted'],
    'every live row deleted',
  );

  // A ringer that rolls back never sent its notification: the next writer rings instead of trusting it.
  await answerBell(db);
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

t.test('a writer still open when a relay looks: its id is a gap, and its user is leased once it commits', async (t) => {
  const db = await createTestDatabase(t);
  const options = { limit: 10, leaseMs: 30_000, perStream: 20, readLimit: 1000, answerBell: true };
  const open = await db.pool.connect();
  t.teardown(() => open.release());
  await open.query('begin');
  await open.query("insert into users (email, username, password) values ('s@x.io', 'silent', 'h')");
  const later = await addUser(db, 'later');
  const first = await claimStreams(db.pool, 'relay-a', options);
  t.same(
    first.streams.map((c) => c.userId),
    [later],
    'the committed writer behind it goes at once',
  );
  t.ok(first.openGaps, "the open writer's id is kept as a gap: the relay looks again shortly");
  const again = await claimStreams(db.pool, 'relay-a', options);
  t.same([again.streams.length, again.openGaps], [0, true], 'still open: nothing to lease, the gap stays');
  await open.query('commit');
  const after = await claimStreams(db.pool, 'relay-a', options);
  t.same(
    after.streams.map((c) => c.events.map((e) => e.action)),
    [['created']],
    'committed: its user is leased',
  );
  await closesEventually(t, db, options, 'and the gap is closed');
});

t.test('a primary key change captures both events with one notification', async (t) => {
  const db = await createTestDatabase(t);
  const wakesOf = await wakeCounter(t, db);
  const oldId = await addUser(db, 'piet');
  const newId = '00000000-0000-4000-8000-000000000002';
  t.equal(await wakesOf(() => db.pool.query('update users set id = $2 where id = $1', [oldId, newId])), 1);
  t.same(
    (await events(db)).slice(-2).map((r) => [r.action, r.user_id]),
    [
      ['deleted', oldId],
      ['created', newId],
    ],
  );
});

t.test('the payload function is inlined into its callers: not planned again in every transaction', async (t) => {
  const db = await createTestDatabase(t);
  const { rows } = await db.pool.query<{ 'QUERY PLAN': string }>(
    'explain (verbose, costs off) select suekk_sync.user_payload(u), suekk_sync.user_key(u), suekk_sync.user_is_live(u) from users u',
  );
  const output = rows.map((r) => r['QUERY PLAN']).join('\n');
  t.match(output, /'\{"id":'::text \|\| \(to_json/, 'the mapping expressions appear in the plan');
  t.notMatch(output, /user_payload|user_key|user_is_live/, 'no function call left');
});
