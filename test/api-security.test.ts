/**
 * The API against hostile input over real loopback HTTP: forged and expired tokens, malformed and
 * oversized bodies, NUL bytes, SQL in strings, rate limits, and a property test that no generated
 * body ever gets a 5xx.
 */
import fc from 'fast-check';
import { SignJWT } from 'jose';
import t, { type Test } from 'tap';
import { createApiServer, type ApiServerOptions } from '../src/api/server.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';

const JWT_SECRET = 'security-test-secret-0123456789abcdef012345';

interface Reply {
  status: number;
  headers: Headers;
  text: string;
  json: any;
}

async function startApi(t: Test, db: TestDatabase, options: Partial<ApiServerOptions> = {}) {
  const app = createApiServer({ pool: db.pool, jwtSecret: JWT_SECRET, rateLimits: { register: 1000, login: 1000 }, ...options });
  const base = await app.listen({ port: 0, host: '127.0.0.1' });
  t.teardown(() => app.close());
  /** Sends the body as given: a string goes out byte for byte, anything else as JSON. */
  const send = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> => {
    const raw = body === undefined || typeof body === 'string' ? body : JSON.stringify(body);
    const res = await fetch(base + path, {
      method,
      headers: raw === undefined ? headers : { 'content-type': 'application/json', ...headers },
      body: raw,
    });
    const text = await res.text();
    let json: unknown;
    try {
      json = text === '' ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, text, json };
  };
  return { base, send };
}

const validUser = {
  email: 'mallory@example.com',
  username: 'mallory',
  password: 'correct horse battery',
  firstName: 'Mallory',
  lastName: 'Hacker',
};

function isErrorBody(json: unknown): boolean {
  if (json === null || typeof json !== 'object') return false;
  const keys = Object.keys(json);
  return typeof (json as { error?: unknown }).error === 'string' && keys.every((k) => k === 'error' || k === 'details');
}

function b64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

t.test('tokens: only an unexpired HS256 token of a live user, signed with our key, gets in', async (t) => {
  const db = await createTestDatabase(t);
  const { send } = await startApi(t, db);
  const registered = await send('POST', '/api/v1/auth/register', validUser);
  t.equal(registered.status, 201);
  const id = registered.json.user.id as string;
  const now = Math.floor(Date.now() / 1000);
  const key = new TextEncoder().encode(JWT_SECRET);
  const sign = (claims: Record<string, unknown>, alg = 'HS256', signingKey = key) =>
    new SignJWT(claims).setProtectedHeader({ alg }).sign(signingKey);

  const good = await sign({ sub: id, role: 'user', iat: now, exp: now + 60 });
  t.equal((await send('GET', '/api/v1/users/profile', undefined, { authorization: `Bearer ${good}` })).status, 200);
  t.equal(
    (await send('GET', '/api/v1/users/profile', undefined, { authorization: `bearer ${good}` })).status,
    200,
    'the scheme is case-insensitive',
  );

  const refused: [string, string | undefined][] = [
    ['no header', undefined],
    ['another scheme', `Basic ${Buffer.from('mallory:pw').toString('base64')}`],
    ['no token', 'Bearer '],
    ['garbage', 'Bearer abc'],
    ['three garbage parts', 'Bearer a.b.c'],
    ['alg none', `Bearer ${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ sub: id, role: 'admin', iat: now, exp: now + 60 })}.`],
    ['another key', `Bearer ${await sign({ sub: id, role: 'user', iat: now, exp: now + 60 }, 'HS256', new TextEncoder().encode('not-the-secret-at-all-0123456789abc'))}`],
    ['another algorithm with our key', `Bearer ${await sign({ sub: id, role: 'user', iat: now, exp: now + 60 }, 'HS512')}`],
    ['expired', `Bearer ${await sign({ sub: id, role: 'user', iat: now - 120, exp: now - 60 })}`],
    ['no exp', `Bearer ${await sign({ sub: id, role: 'user', iat: now })}`],
    ['sub not a uuid', `Bearer ${await sign({ sub: "x' or '1'='1", role: 'user', iat: now, exp: now + 60 })}`],
    ['unknown user', `Bearer ${await sign({ sub: '00000000-0000-4000-8000-000000000000', role: 'user', iat: now, exp: now + 60 })}`],
    ['tampered payload', `Bearer ${good.split('.')[0]}.${b64url({ sub: id, role: 'admin', iat: now, exp: now + 6000 })}.${good.split('.')[2]}`],
  ];
  for (const [name, authorization] of refused) {
    const res = await send('GET', '/api/v1/users/profile', undefined, authorization ? { authorization } : {});
    t.equal(res.status, 401, name);
    t.match(res.headers.get('www-authenticate'), /^Bearer/, `${name}: challenge`);
    t.ok(isErrorBody(res.json), `${name}: error body`);
  }
});

t.test('hostile bodies get a 4xx with a JSON error, never a 5xx', async (t) => {
  const db = await createTestDatabase(t);
  const { send } = await startApi(t, db);
  const register = (body: unknown, headers?: Record<string, string>) => send('POST', '/api/v1/auth/register', body, headers);
  const cases: [string, () => Promise<Reply>, number][] = [
    ['malformed JSON', () => register('{"email": '), 400],
    ['empty body', () => register(''), 400],
    ['no body', () => send('POST', '/api/v1/auth/register'), 400],
    ['an array', () => register([validUser]), 400],
    ['a string', () => register('"hello"'), 400],
    ['null', () => register('null'), 400],
    ['prototype poisoning', () => register('{"__proto__": {"role": "admin"}}'), 400],
    ['wrong types', () => register({ ...validUser, username: 42, password: ['x'], firstName: { a: 1 } }), 400],
    ['an unknown field', () => register({ ...validUser, role: 'admin' }), 400],
    ['a missing field', () => register({ ...validUser, lastName: undefined }), 400],
    ['text/plain', () => register(JSON.stringify(validUser), { 'content-type': 'text/plain' }), 415],
    ['form encoding', () => register('email=a', { 'content-type': 'application/x-www-form-urlencoded' }), 415],
    ['64 KiB body', () => register({ ...validUser, firstName: 'x'.repeat(64 * 1024) }), 413],
    ['NUL in a name', () => register({ ...validUser, firstName: 'Mal\u0000lory' }), 400],
    ['NUL in a key', () => register({ ...validUser, 'x\u0000': 1 }), 400],
    ['NUL in a login password', () => send('POST', '/api/v1/auth/login', { email: validUser.email, password: 'a\u0000b' }), 400],
    ['email without a domain', () => register({ ...validUser, email: 'mallory@' }), 400],
    ['email of 255 characters', () => register({ ...validUser, email: `${'a'.repeat(243)}@example.com` }), 400],
    ['username of 2', () => register({ ...validUser, username: 'ab' }), 400],
    ['username of 33', () => register({ ...validUser, username: 'a'.repeat(33) }), 400],
    ['username with a space', () => register({ ...validUser, username: 'mal lory' }), 400],
    ['username with a quote', () => register({ ...validUser, username: "mal'lory" }), 400],
    ['password of 7 bytes', () => register({ ...validUser, password: '1234567' }), 400],
    ['password of 37 characters but 74 bytes', () => register({ ...validUser, password: 'é'.repeat(37) }), 400],
    ['blank first name', () => register({ ...validUser, firstName: '   ' }), 400],
    ['last name of 101', () => register({ ...validUser, lastName: 'x'.repeat(101) }), 400],
    ['login without email or username', () => send('POST', '/api/v1/auth/login', { password: 'x' }), 400],
    ['login with both', () => send('POST', '/api/v1/auth/login', { email: 'a@b.co', username: 'a', password: 'x' }), 400],
    ['login with a number', () => send('POST', '/api/v1/auth/login', { username: 1, password: 'x' }), 400],
    ['an anonymous profile update, before its body is looked at', () => send('PUT', '/api/v1/users/profile', { email: 1 }), 401],
    ['an unknown route', () => send('GET', '/api/v1/users'), 404],
    ['a wrong method', () => send('PATCH', '/api/v1/users/profile', {}), 404],
  ];
  for (const [name, request, status] of cases) {
    const res = await request();
    t.equal(res.status, status, name);
    t.ok(isErrorBody(res.json), `${name}: ${res.text.slice(0, 200)}`);
  }

  const fields = await register({ email: 'bad', username: 'x', password: 'short', firstName: '', lastName: 7, extra: true });
  t.same(fields.json.details, [
    { field: 'extra', message: 'is not an accepted field' },
    { field: 'email', message: 'must be a valid email address' },
    { field: 'username', message: 'must be at least 3 characters long' },
    { field: 'password', message: 'must be 8 to 72 bytes long (UTF-8)' },
    { field: 'firstName', message: 'must be at least 1 character long' },
    { field: 'lastName', message: 'must be a string' },
  ]);
  t.equal((await register({ ...validUser, password: 'é'.repeat(36) })).status, 201, '72 bytes is enough');

  const token = (await send('POST', '/api/v1/auth/login', { email: validUser.email, password: 'é'.repeat(36) })).json.token;
  const auth = { authorization: `Bearer ${token}` };
  const put = (body: unknown) => send('PUT', '/api/v1/users/profile', body, auth);
  for (const [name, body] of [
    ['an empty object', {}],
    ['an ftp avatar', { avatar: 'ftp://example.com/a.png' }],
    ['a javascript: avatar', { avatar: 'javascript:alert(1)' }],
    ['a relative avatar', { avatar: '/a.png' }],
    ['an avatar of 2049', { avatar: `https://example.com/${'a'.repeat(2029)}` }],
    ['a null name', { firstName: null }],
    ['an email change', { email: 'new@example.com' }],
    ['NUL in the avatar', { avatar: 'https://example.com/\u0000' }],
  ] as const) {
    const res = await put(body);
    t.equal(res.status, 400, name);
    t.ok(isErrorBody(res.json), name);
  }
  const huge = await send('PUT', '/api/v1/users/profile', { firstName: 'x'.repeat(1024 * 1024) }, auth);
  t.equal(huge.status, 413, 'a 1 MiB body');
});

t.test('unicode is stored as given and SQL in strings is only text', async (t) => {
  const db = await createTestDatabase(t);
  const { send } = await startApi(t, db);
  const body = {
    email: "o'brien+test@example.com",
    username: 'zoe.li-2',
    password: 'пароль-密码-🔑',
    firstName: 'Zoë 李 🎉',
    lastName: "Robert'); DROP TABLE users;--",
  };
  const registered = await send('POST', '/api/v1/auth/register', body);
  t.equal(registered.status, 201);
  t.match(registered.json.user, { email: body.email, firstName: body.firstName, lastName: body.lastName });
  t.equal(registered.json.user.displayName, `${body.firstName} ${body.lastName}`);
  const row = await db.pool.query('select email, first_name, last_name from public.users where id = $1', [registered.json.user.id]);
  t.same(row.rows[0], { email: body.email, first_name: body.firstName, last_name: body.lastName });

  const login = await send('POST', '/api/v1/auth/login', { email: "' or 1=1 --", password: "' or '1'='1" });
  t.equal(login.status, 401);
  t.equal((await send('POST', '/api/v1/auth/login', { username: body.username, password: body.password })).status, 200);
  const put = await send('PUT', '/api/v1/users/profile', { firstName: "'; update users set role='admin' --" }, {
    authorization: `Bearer ${registered.json.token}`,
  });
  t.equal(put.status, 200);
  t.equal(put.json.firstName, "'; update users set role='admin' --");
  t.equal(put.json.role, 'user');
  const count = await db.pool.query('select count(*)::int as n from public.users');
  t.equal(count.rows[0].n, 1, 'the table is still there, with one user');
});

t.test('register and login are rate limited per client address, with Retry-After', async (t) => {
  const db = await createTestDatabase(t);
  const { send } = await startApi(t, db, { rateLimits: { register: 2, login: 3 } });
  const statuses = [];
  for (let i = 0; i < 3; i++) {
    statuses.push((await send('POST', '/api/v1/auth/register', { ...validUser, username: `limit${i}`, email: `limit${i}@example.com` })).status);
  }
  t.same(statuses, [201, 201, 429]);
  const limited = await send('POST', '/api/v1/auth/register', { nonsense: true });
  t.equal(limited.status, 429, 'bad requests count too, and are refused before parsing');
  const retryAfter = Number(limited.headers.get('retry-after'));
  t.ok(retryAfter > 0 && retryAfter <= 60, `Retry-After ${retryAfter}`);
  t.ok(isErrorBody(limited.json));
  t.match(limited.json.error, /^Too many requests/);

  const login = (password: string) => send('POST', '/api/v1/auth/login', { username: 'limit0', password });
  t.equal((await login(validUser.password)).status, 200, 'login has its own budget');
  t.equal((await login('wrong')).status, 401);
  const ok = await login(validUser.password);
  t.equal(ok.status, 200);
  t.equal((await login(validUser.password)).status, 429);

  for (let i = 0; i < 5; i++) {
    const res = await send('GET', '/api/v1/users/profile', undefined, { authorization: `Bearer ${ok.json.token}` });
    t.equal(res.status, 200, 'the profile is not rate limited');
  }
  t.equal((await send('GET', '/healthz')).status, 200);
});

t.test('property: no generated body gets a 5xx from register or a profile update', async (t) => {
  const db = await createTestDatabase(t);
  const { send } = await startApi(t, db);
  const token = (await send('POST', '/api/v1/auth/register', validUser)).json.token as string;

  const text = fc.oneof(
    fc.string(),
    fc.string({ unit: 'binary', maxLength: 120 }),
    fc.constantFrom('', ' ', '\u0000', "' or 1=1 --", 'é'.repeat(37), 'https://example.com/a.png', 'javascript:x'),
  );
  const value = fc.oneof(text, fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.array(text, { maxLength: 3 }), fc.object({ maxDepth: 1 }));
  // Mostly valid fields with a wrong one mixed in now and then, so both outcomes are reached.
  const field = <T>(valid: fc.Arbitrary<T>) => fc.oneof({ weight: 4, arbitrary: valid }, { weight: 1, arbitrary: value });
  const registerLike = fc
    .tuple(
      fc.record({
        email: field(fc.emailAddress()),
        username: field(fc.stringMatching(/^[A-Za-z0-9_.-]{3,32}$/)),
        password: field(fc.string({ minLength: 8, maxLength: 30 })),
        firstName: field(fc.string({ minLength: 1, maxLength: 100 })),
        lastName: field(fc.string({ minLength: 1, maxLength: 100 })),
      }),
      fc.oneof(
        { weight: 4, arbitrary: fc.constant({}) },
        { weight: 1, arbitrary: fc.record({ avatar: field(fc.webUrl()), role: fc.constant('admin') }, { requiredKeys: [] }) },
      ),
    )
    .map(([fields, extra]) => ({ ...fields, ...extra }));
  const profileLike = fc.record(
    { firstName: field(fc.string({ minLength: 1, maxLength: 100 })), lastName: value, avatar: field(fc.webUrl()) },
    { requiredKeys: [] },
  );
  const body = (shaped: fc.Arbitrary<object>) => fc.oneof(
    { weight: 4, arbitrary: shaped },
    { weight: 1, arbitrary: fc.anything() },
    { weight: 1, arbitrary: fc.dictionary(text, value, { maxKeys: 5 }) },
    // Raw strings: mostly malformed JSON.
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 200 }).map((s) => ({ raw: s })) },
  );
  const encode = (b: unknown): string | undefined => {
    if (b !== null && typeof b === 'object' && 'raw' in b && Object.keys(b).length === 1) return String(b.raw);
    return JSON.stringify(b);
  };

  let statuses = new Map<number, number>();
  const check = (route: 'register' | 'profile') =>
    fc.asyncProperty(body(route === 'register' ? registerLike : profileLike), async (b) => {
      const res = await send(route === 'register' ? 'POST' : 'PUT', route === 'register' ? '/api/v1/auth/register' : '/api/v1/users/profile', encode(b) ?? '', {
        authorization: `Bearer ${token}`,
      });
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      if (res.status >= 500) return false;
      return res.status < 400 || isErrorBody(res.json);
    });

  await fc.assert(check('register'), { numRuns: 150 });
  t.pass(`register: ${JSON.stringify(Object.fromEntries(statuses))}`);
  t.ok(statuses.has(201) && statuses.has(400), 'the generator reaches both outcomes');
  statuses = new Map();
  await fc.assert(check('profile'), { numRuns: 150 });
  t.pass(`profile: ${JSON.stringify(Object.fromEntries(statuses))}`);
  t.ok(statuses.has(200) && statuses.has(400), 'the generator reaches both outcomes');
});
