/**
 * The register/profile API over real loopback HTTP against a real database: every route's
 * successes and failures, the outbox event each write leaves, Go-style password hashes, and that
 * no response or log line ever carries a password hash or a token.
 */
import { Writable } from 'node:stream';
import bcrypt from 'bcryptjs';
import { decodeJwt } from 'jose';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { createApiServer, type ApiServerOptions } from '../src/api/server.ts';
import { createPool } from '../src/db/pool.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';

const JWT_SECRET = 'api-test-secret-0123456789abcdef0123456789';
const HASH = /\$2[aby]\$\d\d\$/;

/** Every response body any test saw, scanned for password hashes at the end. */
const seenBodies: string[] = [];

interface Reply {
  status: number;
  headers: Headers;
  text: string;
  json: any;
}

interface CallOptions {
  body?: unknown;
  token?: string;
}

async function startApi(t: Test, db: TestDatabase, options: Partial<ApiServerOptions> = {}) {
  const app = createApiServer({
    pool: db.pool,
    jwtSecret: JWT_SECRET,
    rateLimits: { register: 1000, login: 1000 },
    ...options,
  });
  const base = await app.listen({ port: 0, host: '127.0.0.1' });
  t.teardown(() => app.close());
  const call = async (method: string, path: string, { body, token }: CallOptions = {}): Promise<Reply> => {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    const res = await fetch(base + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    seenBodies.push(text);
    return { status: res.status, headers: res.headers, text, json: text === '' ? undefined : JSON.parse(text) };
  };
  return { app, base, call };
}

let counter = 0;
function newUser(overrides: Record<string, unknown> = {}) {
  counter += 1;
  return {
    email: `user${counter}@example.com`,
    username: `user${counter}`,
    password: 'correct horse battery',
    firstName: 'Ada',
    lastName: 'Lovelace',
    ...overrides,
  };
}

async function events(db: TestDatabase, userId: string) {
  const { rows } = await db.pool.query<{
    action: string;
    payload: Record<string, unknown>;
    application_name: string | null;
  }>('select action, payload, application_name from suekk_sync.event_log where user_id = $1 order by id', [userId]);
  return rows;
}

const USER_KEYS = [
  'avatar',
  'createdAt',
  'displayName',
  'email',
  'firstName',
  'id',
  'isActive',
  'lastName',
  'role',
  'updatedAt',
  'username',
];

t.test('register, log in, read, update and delete a profile, each write captured once', async (t) => {
  const db = await createTestDatabase(t);
  const { call } = await startApi(t, db);
  const body = newUser();

  const registered = await call('POST', '/api/v1/auth/register', { body });
  t.equal(registered.status, 201);
  t.same(Object.keys(registered.json).sort(), ['token', 'user']);
  const user = registered.json.user;
  t.same(Object.keys(user).sort(), USER_KEYS);
  t.match(user, {
    email: body.email,
    username: body.username,
    firstName: 'Ada',
    lastName: 'Lovelace',
    displayName: 'Ada Lovelace',
    avatar: null,
    role: 'user',
    isActive: true,
  });
  const claims = decodeJwt(registered.json.token);
  t.equal(claims.sub, user.id);
  t.equal(claims.role, 'user');
  t.equal(claims.exp! - claims.iat!, 86_400, 'tokens live 24 h by default');
  const stored = await db.pool.query<{ password: string }>('select password from public.users where id = $1', [
    user.id,
  ]);
  t.match(stored.rows[0]!.password, /^\$2b\$10\$/, 'bcrypt at cost 10');
  t.match(await events(db, user.id), [
    {
      action: 'created',
      payload: { id: user.id, email: body.email, username: body.username, displayName: 'Ada Lovelace', isActive: true },
    },
  ]);

  const byEmail = await call('POST', '/api/v1/auth/login', { body: { email: body.email, password: body.password } });
  t.equal(byEmail.status, 200);
  t.same(Object.keys(byEmail.json), ['token']);
  const byUsername = await call('POST', '/api/v1/auth/login', {
    body: { username: body.username, password: body.password },
  });
  t.equal(byUsername.status, 200);
  const token = byUsername.json.token as string;
  const login = await db.pool.query('select last_login_at from public.users where id = $1', [user.id]);
  t.ok(login.rows[0].last_login_at, 'login records last_login_at');
  t.equal((await events(db, user.id)).length, 1, 'a login sends no webhook');

  const profile = await call('GET', '/api/v1/users/profile', { token });
  t.equal(profile.status, 200);
  t.same(profile.json, user);

  const updated = await call('PUT', '/api/v1/users/profile', {
    token,
    body: { firstName: 'Augusta', avatar: 'https://example.com/ada.png' },
  });
  t.equal(updated.status, 200);
  t.match(updated.json, {
    firstName: 'Augusta',
    lastName: 'Lovelace',
    displayName: 'Augusta Lovelace',
    avatar: 'https://example.com/ada.png',
  });
  t.ok(Date.parse(updated.json.updatedAt) > Date.parse(user.updatedAt), 'updated_at moves');
  t.same((await call('GET', '/api/v1/users/profile', { token })).json, updated.json);

  const cleared = await call('PUT', '/api/v1/users/profile', { token, body: { avatar: null } });
  t.equal(cleared.status, 200);
  t.equal(cleared.json.avatar, null, 'avatar null clears it');

  const deleted = await call('DELETE', '/api/v1/users/profile', { token });
  t.equal(deleted.status, 204);
  t.equal(deleted.text, '');
  const row = await db.pool.query('select deleted_at from public.users where id = $1', [user.id]);
  t.ok(row.rows[0].deleted_at, 'soft-deleted, the row stays');

  t.match(
    (await events(db, user.id)).map((e) => [e.action, e.payload.displayName, e.payload.avatar]),
    [
      ['created', 'Ada Lovelace', ''],
      ['updated', 'Augusta Lovelace', 'https://example.com/ada.png'],
      ['updated', 'Augusta Lovelace', ''],
      ['deleted', 'Augusta Lovelace', ''],
    ],
  );
  const writers = new Set((await events(db, user.id)).map((e) => e.application_name));
  t.same([...writers], ['suekk-sync test'], 'the outbox records the writer (the pool given to the API)');

  const afterDelete = await call('GET', '/api/v1/users/profile', { token });
  t.equal(afterDelete.status, 401, "a deleted user's token is refused");
  t.match(afterDelete.headers.get('www-authenticate'), /^Bearer/);
  t.equal((await call('DELETE', '/api/v1/users/profile', { token })).status, 401);
  t.equal((await call('PUT', '/api/v1/users/profile', { token, body: { firstName: 'X' } })).status, 401);
});

t.test('login failures all look the same; taken emails and usernames are 409, soft-deleted ones too', async (t) => {
  const db = await createTestDatabase(t);
  const { call } = await startApi(t, db);
  const alice = newUser();
  const bob = newUser();
  t.equal((await call('POST', '/api/v1/auth/register', { body: alice })).status, 201);
  const bobRegistered = await call('POST', '/api/v1/auth/register', { body: bob });

  const dupEmail = await call('POST', '/api/v1/auth/register', { body: newUser({ email: alice.email }) });
  t.equal(dupEmail.status, 409);
  t.same(dupEmail.json.details, [{ field: 'email', message: 'is already registered' }]);
  const dupUsername = await call('POST', '/api/v1/auth/register', { body: newUser({ username: alice.username }) });
  t.equal(dupUsername.status, 409);
  t.same(dupUsername.json.details, [{ field: 'username', message: 'is already taken' }]);

  await db.pool.query('update public.users set is_active = false where id = $1', [bobRegistered.json.user.id]);
  const failures = [
    { email: alice.email, password: 'wrong password' },
    { username: alice.username, password: 'wrong password' },
    { email: 'nobody@example.com', password: alice.password },
    { username: 'nobody', password: alice.password },
    { username: bob.username, password: bob.password }, // inactive
    { email: alice.email, password: alice.password + 'x'.repeat(80) }, // bcrypt would only read 72 bytes
  ];
  const answers = await Promise.all(failures.map((body) => call('POST', '/api/v1/auth/login', { body })));
  t.same(
    answers.map((a) => a.status),
    failures.map(() => 401),
  );
  t.equal(new Set(answers.map((a) => a.text)).size, 1, 'one message whichever part was wrong');
  t.notOk(answers[0]!.json.details);
  t.equal(
    (await call('GET', '/api/v1/users/profile', { token: bobRegistered.json.token })).status,
    401,
    "an inactive user's token is refused",
  );

  const aliceLogin = await call('POST', '/api/v1/auth/login', {
    body: { email: alice.email, password: alice.password },
  });
  t.equal((await call('DELETE', '/api/v1/users/profile', { token: aliceLogin.json.token })).status, 204);
  const deletedLogin = await call('POST', '/api/v1/auth/login', {
    body: { email: alice.email, password: alice.password },
  });
  t.equal(deletedLogin.status, 401);
  t.equal(deletedLogin.text, answers[0]!.text, 'a deleted user gets the same 401');
  t.equal((await call('POST', '/api/v1/auth/register', { body: newUser({ email: alice.email }) })).status, 409);
  t.equal((await call('POST', '/api/v1/auth/register', { body: newUser({ username: alice.username }) })).status, 409);

  const racing = await Promise.all(
    [1, 2, 3].map(() => call('POST', '/api/v1/auth/register', { body: newUser({ email: 'race@example.com' }) })),
  );
  t.same(racing.map((r) => r.status).sort(), [201, 409, 409], 'the unique constraint decides a race');
});

t.test(
  'one account per email and per username, ignoring case, soft-deleted users included; login ignores case',
  async (t) => {
    const db = await createTestDatabase(t);
    const { call } = await startApi(t, db);
    const alice = newUser({ email: 'Alice@X.io', username: 'Alice' });
    const registered = await call('POST', '/api/v1/auth/register', { body: alice });
    t.equal(registered.status, 201);
    const id = registered.json.user.id as string;

    const emailTaken = [{ field: 'email', message: 'is already registered' }];
    const usernameTaken = [{ field: 'username', message: 'is already taken' }];
    for (const [body, details] of [
      [newUser({ email: 'alice@x.io' }), emailTaken],
      [newUser({ email: 'ALICE@X.IO' }), emailTaken],
      [newUser({ username: 'alice' }), usernameTaken],
      [newUser({ username: 'ALICE' }), usernameTaken],
      [newUser({ email: 'aLiCe@x.Io', username: 'aLICE' }), [...emailTaken, ...usernameTaken]],
    ] as const) {
      const res = await call('POST', '/api/v1/auth/register', { body });
      t.equal(res.status, 409, `${body.email} / ${body.username}`);
      t.same(res.json.details, details, `${body.email} / ${body.username}`);
    }
    t.match(await events(db, id), [{ action: 'created' }], 'one account, one created event');
    const { rows } = await db.pool.query<{ n: number }>(
      "select count(*)::int as n from public.users where lower(email) = 'alice@x.io' or lower(username) = 'alice'",
    );
    t.equal(rows[0]!.n, 1);

    for (const body of [
      { email: 'alice@x.io', password: alice.password },
      { email: 'ALICE@x.IO', password: alice.password },
      { username: 'aLiCe', password: alice.password },
    ]) {
      const login = await call('POST', '/api/v1/auth/login', { body });
      t.equal(login.status, 200, `login as ${body.email ?? body.username}`);
      t.equal(decodeJwt(login.json.token).sub, id);
    }

    // A soft-deleted user keeps their email and username, in every case.
    const x12 = await call('POST', '/api/v1/auth/register', {
      body: newUser({ email: 'x12@example.com', username: 'x12' }),
    });
    t.equal((await call('DELETE', '/api/v1/users/profile', { token: x12.json.token })).status, 204);
    t.same(
      (await call('POST', '/api/v1/auth/register', { body: newUser({ username: 'X12' }) })).json.details,
      usernameTaken,
    );
    t.same(
      (await call('POST', '/api/v1/auth/register', { body: newUser({ email: 'X12@Example.com' }) })).json.details,
      emailTaken,
    );

    // The reference table refuses case variants by itself, whoever writes them.
    for (const [column, email, username] of [
      ['email', 'ALICE@x.io', 'someone-else'],
      ['username', 'someone@else.io', 'ALICE'],
    ] as const) {
      await t.rejects(
        db.pool.query("insert into public.users (email, username, password) values ($1, $2, 'h')", [email, username]),
        { code: '23505' },
        `the database refuses a case-variant ${column}`,
      );
    }
  },
);

t.test(
  "on a table without unique indexes on lower(...), the API's own check refuses case variants, racing ones too",
  async (t) => {
    const db = await createTestDatabase(t);
    // An operator's table as GORM makes it: unique, but case-sensitive.
    await db.pool.query(`drop index public.users_email_lower_key, public.users_username_lower_key;
    alter table public.users add constraint users_email_key unique (email), add constraint users_username_key unique (username)`);
    const { call } = await startApi(t, db);
    t.equal(
      (await call('POST', '/api/v1/auth/register', { body: newUser({ email: 'Bob@x.io', username: 'Bob' }) })).status,
      201,
    );
    const emailVariant = await call('POST', '/api/v1/auth/register', { body: newUser({ email: 'bob@X.io' }) });
    t.equal(emailVariant.status, 409);
    t.same(emailVariant.json.details, [{ field: 'email', message: 'is already registered' }]);
    const usernameVariant = await call('POST', '/api/v1/auth/register', { body: newUser({ username: 'BOB' }) });
    t.equal(usernameVariant.status, 409);
    t.same(usernameVariant.json.details, [{ field: 'username', message: 'is already taken' }]);

    const racing = async (variant: (i: number) => Record<string, string>) => {
      const answers = await Promise.all(
        [0, 1, 2, 3, 4, 5].map((i) => call('POST', '/api/v1/auth/register', { body: newUser(variant(i)) })),
      );
      return answers.map((a) => a.status).sort();
    };
    const cases = ['race@x.io', 'RACE@x.io', 'Race@X.io', 'race@X.IO', 'rAce@x.io', 'RACE@X.IO'];
    t.same(
      await racing((i) => ({ email: cases[i]! })),
      [201, 409, 409, 409, 409, 409],
      'racing email variants: one wins',
    );
    const names = ['racer', 'RACER', 'Racer', 'rAcer', 'raCer', 'racER'];
    t.same(
      await racing((i) => ({ username: names[i]! })),
      [201, 409, 409, 409, 409, 409],
      'racing username variants: one wins',
    );
    const { rows } = await db.pool.query<{ n: number }>(
      "select count(*)::int as n from public.users where lower(email) = 'race@x.io' or lower(username) = 'racer'",
    );
    t.equal(rows[0]!.n, 2);
  },
);

t.test(
  'a table that already holds case variants: login takes the exact match first, then the active one',
  async (t) => {
    const db = await createTestDatabase(t);
    await db.pool.query('drop index public.users_email_lower_key, public.users_username_lower_key');
    const { call } = await startApi(t, db);
    const hash = bcrypt.hashSync('twin-password', 4);
    const { rows } = await db.pool.query<{ id: string; username: string }>(
      `insert into public.users (email, username, password, deleted_at) values
       ('twin@x.io', 'twin', $1, now()), ('TWIN@x.io', 'TWIN', $1, null), ('Twin@x.io', 'Twin', $1, null)
     returning id, username`,
      [hash],
    );
    const idOf = (username: string) => rows.find((r) => r.username === username)!.id;
    const subOf = async (body: Record<string, string>) => {
      const res = await call('POST', '/api/v1/auth/login', { body: { ...body, password: 'twin-password' } });
      return res.status === 200 ? decodeJwt(res.json.token).sub : res.status;
    };
    t.equal(await subOf({ username: 'TWIN' }), idOf('TWIN'), 'the exact match');
    t.equal(await subOf({ email: 'Twin@x.io' }), idOf('Twin'), 'the exact match, by email');
    t.equal(await subOf({ username: 'twin' }), 401, 'the exact match is soft-deleted: no login, no other account');
    t.ok(
      [idOf('TWIN'), idOf('Twin')].includes((await subOf({ username: 'tWIN' })) as string),
      'no exact match: an active one',
    );
  },
);

t.test('hashes written by the Go service ($2a$) log in', async (t) => {
  const db = await createTestDatabase(t);
  const { call } = await startApi(t, db);
  const goHash = bcrypt.hashSync('gopher-password', 10).replace(/^\$2b\$/, '$2a$');
  // The OpenBSD/OpenWall test vector: "U*U" at cost 5.
  const vector = '$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW';
  await db.pool.query(
    `insert into public.users (email, username, password) values
       ('go@example.com', 'gopher', $1), ('vector@example.com', 'vector', $2), ('broken@example.com', 'broken', 'not-a-hash')`,
    [goHash, vector],
  );
  const go = await call('POST', '/api/v1/auth/login', { body: { username: 'gopher', password: 'gopher-password' } });
  t.equal(go.status, 200);
  const profile = await call('GET', '/api/v1/users/profile', { token: go.json.token });
  t.match(profile.json, { username: 'gopher', firstName: null, lastName: null, displayName: 'gopher' });
  t.equal((await call('POST', '/api/v1/auth/login', { body: { username: 'vector', password: 'U*U' } })).status, 200);
  t.equal(
    (await call('POST', '/api/v1/auth/login', { body: { username: 'gopher', password: 'gopher-passwore' } })).status,
    401,
  );
  t.equal(
    (await call('POST', '/api/v1/auth/login', { body: { username: 'broken', password: 'not-a-hash' } })).status,
    401,
    'a malformed hash in the table is a failed login, not a 500',
  );
});

t.test('healthz answers 200 with a database and 503 without', async (t) => {
  const db = await createTestDatabase(t);
  const { call } = await startApi(t, db);
  const ok = await call('GET', '/healthz');
  t.equal(ok.status, 200);
  t.same(ok.json, { status: 'ok' });

  const deadPool = createPool('postgres://postgres@127.0.0.1:1/nowhere', { max: 1 });
  t.teardown(() => deadPool.end());
  const dead = await startApi(t, { ...db, pool: deadPool });
  const down = await dead.call('GET', '/healthz');
  t.equal(down.status, 503);
  t.same(down.json, { error: 'The database is not answering.' });
  const register = await dead.call('POST', '/api/v1/auth/register', { body: newUser() });
  t.equal(register.status, 503, 'an unreachable database is a 503, not a 500');
  t.same(Object.keys(register.json), ['error']);
});

/** A pino logger whose lines the test can read. */
function capturingLogger(level: string) {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  return { logger: pino({ level }, stream), lines };
}

t.test('start-up warns when suekk-sync is not installed on the users table', async (t) => {
  const bare = await createTestDatabase(t, 'users');
  const warned = capturingLogger('warn');
  await startApi(t, bare, { logger: warned.logger });
  t.match(
    warned.lines.map((l) => JSON.parse(l).msg),
    ['suekk-sync is not installed on public.users: changes will not be synced; run `suekk-sync install`'],
  );

  const installed = await createTestDatabase(t);
  const quiet = capturingLogger('warn');
  await startApi(t, installed, { logger: quiet.logger });
  t.same(quiet.lines, [], 'no warning when installed');
});

t.test('logs carry no bodies, passwords, hashes or tokens, even at trace level', async (t) => {
  const db = await createTestDatabase(t);
  const { logger, lines } = capturingLogger('trace');
  const { call } = await startApi(t, db, { logger });
  const body = newUser({ password: 'very-secret-password' });
  const registered = await call('POST', '/api/v1/auth/register', { body });
  const token = registered.json.token as string;
  await call('GET', '/api/v1/users/profile', { token });
  await call('GET', '/api/v1/users/profile', { token: token + 'x' });
  await call('POST', '/api/v1/auth/login', { body: { email: body.email, password: 'wrong-password-here' } });
  t.ok(lines.length > 0, 'requests were logged');
  const all = lines.join('\n');
  for (const secret of ['very-secret-password', 'wrong-password-here', token, token.split('.')[2]!, 'Bearer']) {
    t.notOk(all.includes(secret), `no log line contains ${secret.slice(0, 12)}…`);
  }
  t.notMatch(all, HASH);
  t.notMatch(all, /authorization/i);
});

t.test('no response body ever contained a password hash', async (t) => {
  t.ok(seenBodies.length > 30, `${seenBodies.length} responses scanned`);
  t.same(
    seenBodies.filter((text) => HASH.test(text) || /"password/.test(text)),
    [],
  );
});
