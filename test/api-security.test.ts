/**
 * The API against hostile input over real loopback HTTP: forged, expired and future-dated tokens,
 * malformed, oversized and deeply nested bodies on every route, NUL bytes, prototype keys, names
 * of invisible or control characters, SQL in strings, rate limits (behind a proxy too), errors
 * raised before routing, and a property test that no generated body ever gets a 5xx.
 */
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { Writable } from 'node:stream';
import fc from 'fast-check';
import { SignJWT } from 'jose';
import { pino } from 'pino';
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
  const app = createApiServer({
    pool: db.pool,
    jwtSecret: JWT_SECRET,
    rateLimits: { register: 1000, login: 1000 },
    ...options,
  });
  const base = await app.listen({ port: 0, host: '127.0.0.1' });
  t.teardown(() => app.close());
  /** Sends the body as given: a string goes out byte for byte, anything else as JSON. */
  const send = async (
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<Reply> => {
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
  t.throws(
    () => createApiServer({ pool: db.pool, jwtSecret: 's'.repeat(31) }),
    RangeError,
    'a secret under 32 bytes is refused',
  );
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
    [
      'alg none',
      `Bearer ${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ sub: id, role: 'admin', iat: now, exp: now + 60 })}.`,
    ],
    [
      'another key',
      `Bearer ${await sign({ sub: id, role: 'user', iat: now, exp: now + 60 }, 'HS256', new TextEncoder().encode('not-the-secret-at-all-0123456789abc'))}`,
    ],
    [
      'another algorithm with our key',
      `Bearer ${await sign({ sub: id, role: 'user', iat: now, exp: now + 60 }, 'HS512')}`,
    ],
    ['expired', `Bearer ${await sign({ sub: id, role: 'user', iat: now - 120, exp: now - 60 })}`],
    ['no exp', `Bearer ${await sign({ sub: id, role: 'user', iat: now })}`],
    ['issued an hour from now', `Bearer ${await sign({ sub: id, role: 'user', iat: now + 3600, exp: now + 7200 })}`],
    ['issued a minute from now', `Bearer ${await sign({ sub: id, role: 'user', iat: now + 60, exp: now + 120 })}`],
    ['sub not a uuid', `Bearer ${await sign({ sub: "x' or '1'='1", role: 'user', iat: now, exp: now + 60 })}`],
    [
      'unknown user',
      `Bearer ${await sign({ sub: '00000000-0000-4000-8000-000000000000', role: 'user', iat: now, exp: now + 60 })}`,
    ],
    [
      'tampered payload',
      `Bearer ${good.split('.')[0]}.${b64url({ sub: id, role: 'admin', iat: now, exp: now + 6000 })}.${good.split('.')[2]}`,
    ],
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
  const register = (body: unknown, headers?: Record<string, string>) =>
    send('POST', '/api/v1/auth/register', body, headers);
  const cases: [string, () => Promise<Reply>, number][] = [
    ['malformed JSON', () => register('{"email": '), 400],
    ['empty body', () => register(''), 400],
    ['no body', () => send('POST', '/api/v1/auth/register'), 400],
    ['an array', () => register([validUser]), 400],
    ['a string', () => register('"hello"'), 400],
    ['null', () => register('null'), 400],
    ['wrong types', () => register({ ...validUser, username: 42, password: ['x'], firstName: { a: 1 } }), 400],
    ['an unknown field', () => register({ ...validUser, role: 'admin' }), 400],
    ['a missing field', () => register({ ...validUser, lastName: undefined }), 400],
    ['text/plain', () => register(JSON.stringify(validUser), { 'content-type': 'text/plain' }), 415],
    ['form encoding', () => register('email=a', { 'content-type': 'application/x-www-form-urlencoded' }), 415],
    ['64 KiB body', () => register({ ...validUser, firstName: 'x'.repeat(64 * 1024) }), 413],
    ['NUL in a name', () => register({ ...validUser, firstName: 'Mal\u0000lory' }), 400],
    ['NUL in a key', () => register({ ...validUser, 'x\u0000': 1 }), 400],
    [
      'NUL in a login password',
      () => send('POST', '/api/v1/auth/login', { email: validUser.email, password: 'a\u0000b' }),
      400,
    ],
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
    [
      'login with both',
      () => send('POST', '/api/v1/auth/login', { email: 'a@b.co', username: 'a', password: 'x' }),
      400,
    ],
    ['login with a number', () => send('POST', '/api/v1/auth/login', { username: 1, password: 'x' }), 400],
    [
      'an anonymous profile update, before its body is looked at',
      () => send('PUT', '/api/v1/users/profile', { email: 1 }),
      401,
    ],
    ['an unknown route', () => send('GET', '/api/v1/users'), 404],
    ['a wrong method', () => send('PATCH', '/api/v1/users/profile', {}), 404],
  ];
  for (const [name, request, status] of cases) {
    const res = await request();
    t.equal(res.status, status, name);
    t.ok(isErrorBody(res.json), `${name}: ${res.text.slice(0, 200)}`);
  }

  const fields = await register({
    email: 'bad',
    username: 'x',
    password: 'short',
    firstName: '',
    lastName: 7,
    extra: true,
  });
  t.same(fields.json.details, [
    { field: 'extra', message: 'is not an accepted field' },
    { field: 'email', message: 'must be a valid email address' },
    { field: 'username', message: 'must be at least 3 characters long' },
    { field: 'password', message: 'must be 8 to 72 bytes long (UTF-8)' },
    { field: 'firstName', message: 'must be at least 1 character long' },
    { field: 'lastName', message: 'must be a string' },
  ]);
  t.equal((await register({ ...validUser, password: 'é'.repeat(36) })).status, 201, '72 bytes is enough');

  const token = (await send('POST', '/api/v1/auth/login', { email: validUser.email, password: 'é'.repeat(36) })).json
    .token;
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

/** Sends any method with any body, which fetch refuses for GET, and reads the answer. */
function sendRaw(
  base: string,
  method: string,
  path: string,
  body: string,
  headers: Record<string, string> = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    // Content-Length set by hand: Node sends a GET or DELETE body unframed otherwise.
    const framing = { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) };
    const req = httpRequest(new URL(path, base), { method, headers: { ...framing, ...headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        let json: unknown;
        try {
          json = text === '' ? undefined : JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode!, headers: new Headers(res.headers as Record<string, string>), text, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Writes bytes that are not (all) valid HTTP and reads what comes back before the server hangs up. */
function sendBytes(base: string, bytes: string): Promise<string> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    let answer = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => (answer += chunk));
    socket.on('error', reject);
    socket.on('close', () => resolve(answer));
    socket.end(bytes);
  });
}

/** A pino logger whose records the test can read. */
function capturingLogger() {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}

t.test('deep nesting: 8,000 nested arrays get a 4xx on every route, unknown ones too, and log no error', async (t) => {
  const db = await createTestDatabase(t);
  const { logger, lines } = capturingLogger();
  const { base, send } = await startApi(t, db, { logger });
  const token = (await send('POST', '/api/v1/auth/register', validUser)).json.token as string;
  const bodies: [string, string][] = [
    ['8,000 nested arrays', '['.repeat(8000) + ']'.repeat(8000)],
    ['2,500 nested objects', '{"a":'.repeat(2500) + '1' + '}'.repeat(2500)],
    ['7,000 nested arrays in a field', `{"firstName": ${'['.repeat(7000)}${']'.repeat(7000)}}`],
    ['33 levels, one past the limit', `{"a":${'['.repeat(32)}${']'.repeat(32)}}`],
  ];
  const paths = [
    '/api/v1/auth/register',
    '/api/v1/auth/login',
    '/api/v1/users/profile',
    '/healthz',
    '/api/v1/users',
    '/nowhere',
  ];
  let requests = 0;
  for (const [what, body] of bodies) {
    t.ok(Buffer.byteLength(body) <= 16 * 1024, `${what} fits the body limit`);
    for (const path of paths) {
      // GET bodies are never read, so only the methods that carry one are expected to fail on it.
      for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) {
        for (const authorization of [undefined, `Bearer ${token}`]) {
          const res = await sendRaw(base, method, path, body, authorization ? { authorization } : {});
          requests++;
          const name = `${what}: ${method} ${path}${authorization ? ' with a token' : ''}`;
          t.ok(res.status >= 400 && res.status < 500, `${name}: ${res.status}`);
          t.ok(isErrorBody(res.json), `${name}: ${res.text.slice(0, 120)}`);
        }
      }
      const get = await sendRaw(base, 'GET', path, body, { authorization: `Bearer ${token}` });
      t.ok(get.status < 500, `${what}: GET ${path}: ${get.status}`);
    }
  }
  const deepInField = await send('POST', '/api/v1/auth/register', bodies[2]![1]);
  t.match(deepInField.json.error, /nested more than 32 levels deep/, 'the answer says what is wrong');
  const justInside = await send('POST', '/api/v1/auth/register', `{"email":${'['.repeat(31)}${']'.repeat(31)}}`);
  t.same(
    justInside.json.details?.find((d: { field: string }) => d.field === 'email'),
    { field: 'email', message: 'must be a string' },
    '32 levels is still read, and validated',
  );
  t.equal(
    (await send('GET', '/api/v1/users/profile', undefined, { authorization: `Bearer ${token}` })).status,
    200,
    'the user was not deleted',
  );
  t.ok(requests > 150, `${requests} requests`);
  t.same(
    lines.filter((l) => /Maximum call stack|"level":(50|60)/.test(l)),
    [],
    'no error was logged',
  );
});

t.test('unknown routes are rate limited per client address, before their body is read', async (t) => {
  const db = await createTestDatabase(t);
  const { base, send } = await startApi(t, db, { rateLimits: { register: 1000, login: 1000, notFound: 3 } });
  const statuses = [];
  for (const path of ['/nowhere', '/api/v1/users', '/api/v1/auth/register/x'])
    statuses.push((await send('GET', path)).status);
  t.same(statuses, [404, 404, 404]);
  const limited = await sendRaw(base, 'POST', '/nowhere', '['.repeat(8000) + ']'.repeat(8000));
  t.equal(limited.status, 429, 'refused before its body is parsed');
  t.ok(isErrorBody(limited.json));
  t.match(limited.json.error, /^Too many requests/);
  t.ok(Number(limited.headers.get('retry-after')) > 0, 'with Retry-After');
  t.equal((await send('POST', '/api/v1/auth/register', validUser)).status, 201, 'known routes keep their own budgets');
});

t.test('__proto__ and constructor.prototype keys are refused with a message that names them', async (t) => {
  const db = await createTestDatabase(t);
  const { send } = await startApi(t, db);
  const cases: [string, string, RegExp, string][] = [
    ['__proto__ at the top', '{"__proto__": {"role": "admin"}}', /"__proto__"/, '__proto__'],
    ['__proto__ spelled with an escape', '{"\\u005f_proto__": {"role": "admin"}}', /"__proto__"/, '__proto__'],
    ['__proto__ in a nested object', '{"email": "a@b.co", "x": [{"__proto__": {}}]}', /"__proto__"/, 'x.0.__proto__'],
    [
      'constructor.prototype',
      '{"constructor": {"prototype": {"role": "admin"}}}',
      /"constructor\.prototype"/,
      'constructor',
    ],
  ];
  for (const [what, body, message, field] of cases) {
    const res = await send('POST', '/api/v1/auth/register', body);
    t.equal(res.status, 400, what);
    t.match(res.json.error, message, `${what}: ${res.json.error}`);
    t.same(res.json.details, [{ field, message: 'is not an accepted key' }], what);
  }
  const plain = await send('POST', '/api/v1/auth/register', JSON.stringify({ ...validUser, constructor: 'x' }));
  t.same(
    plain.json.details,
    [{ field: 'constructor', message: 'is not an accepted field' }],
    'a plain "constructor" field is only unknown',
  );
  t.equal(
    (await send('POST', '/api/v1/auth/register', '{"email": ')).json.error,
    'The request body is not valid JSON.',
  );
});

t.test('errors raised before routing have the {error} shape too: bad percent-encoding, malformed HTTP', async (t) => {
  const db = await createTestDatabase(t);
  const { base, send } = await startApi(t, db);
  for (const path of ['/api/v1/%', '/api/v1/users/%E0%A4%A', '/%zz']) {
    const res = await send('GET', path);
    t.equal(res.status, 400, path);
    t.ok(isErrorBody(res.json), `${path}: ${res.text}`);
    t.match(res.json.error, /percent-encoded/, path);
  }
  const raw: [string, string, number][] = [
    ['a request line with spaces', 'GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n', 400],
    ['a control character in the path', 'GET /api/\x7f HTTP/1.1\r\nHost: x\r\n\r\n', 400],
    ['headers over the limit', `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431],
  ];
  for (const [what, bytes, status] of raw) {
    const answer = await sendBytes(base, bytes);
    t.match(answer, new RegExp(`^HTTP/1\\.1 ${status} `), what);
    t.ok(
      isErrorBody(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))),
      `${what}: ${answer.split('\r\n').at(-1)}`,
    );
  }
});

/** A string for a test's name: TAP reads U+2028 and the like as line breaks. */
function shown(text: string): string {
  return JSON.stringify(text).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

t.test(
  'names of only invisible characters, or with control or bidirectional characters, are a 400 with details',
  async (t) => {
    const db = await createTestDatabase(t);
    const { send } = await startApi(t, db);
    const invisible = [
      '\u200B',
      '\u200B\u200C\u200D',
      '\u2060\uFEFF',
      '\u00AD',
      '\u3164',
      '\u2800',
      ' \u200B ',
      '\u180E',
      '\u034F\uFE0F',
    ];
    const controls = [
      'Mal\u001b[31mlory',
      'Bell\u0007',
      'Tab\tName',
      'evil\u202Egnp.exe',
      'x\u2066y\u2069',
      'a\u200Fb',
      'line\u2028break',
      '\u0085next',
    ];
    let n = 0;
    const register = (fields: Record<string, string>) => {
      n++;
      return send('POST', '/api/v1/auth/register', {
        ...validUser,
        email: `names${n}@example.com`,
        username: `names${n}`,
        ...fields,
      });
    };
    for (const [names, message] of [
      [invisible, 'must contain a visible character'],
      [controls, 'must not contain control characters or bidirectional overrides'],
    ] as const) {
      for (const name of names) {
        const label = shown(name);
        const first = await register({ firstName: name });
        t.equal(first.status, 400, `firstName ${label}`);
        t.equal(first.json.error, 'Some fields are invalid; see details.');
        t.same(first.json.details, [{ field: 'firstName', message }], `firstName ${label}`);
        const last = await register({ lastName: name });
        t.same([last.status, last.json.details], [400, [{ field: 'lastName', message }]], `lastName ${label}`);
      }
    }

    // Letters of every script stay welcome, joiners inside emoji and Persian words included.
    const welcome = [
      'Zoë',
      'Jose\u0301',
      '李',
      'می\u200Cخواهم',
      '👨\u200D👩\u200D👧',
      'O\u2019Brien',
      'Ada\u00A0Lovelace',
    ];
    for (const name of welcome) t.equal((await register({ firstName: name })).status, 201, `firstName ${shown(name)}`);

    const token = (await register({})).json.token as string;
    const auth = { authorization: `Bearer ${token}` };
    for (const [field, value, message] of [
      ['firstName', '\u200B\u200B', 'must contain a visible character'],
      ['lastName', 'Smith\u001b]0;owned\u0007', 'must not contain control characters or bidirectional overrides'],
    ] as const) {
      const res = await send('PUT', '/api/v1/users/profile', { [field]: value }, auth);
      t.same([res.status, res.json.details], [400, [{ field, message }]], `profile update, ${field}`);
    }
  },
);

t.test(
  'behind a proxy (trustProxy), rate limits count each forwarded client; otherwise forwarding headers change nothing',
  async (t) => {
    const db = await createTestDatabase(t);
    const login = (send: (typeof api)['send'], client: string) =>
      send(
        'POST',
        '/api/v1/auth/login',
        { username: 'nobody', password: 'wrong password' },
        { 'x-forwarded-for': client },
      );
    const api = await startApi(t, db, { rateLimits: { register: 1000, login: 1 }, trustProxy: ['127.0.0.1'] });
    t.equal((await login(api.send, '203.0.113.1')).status, 401);
    t.equal((await login(api.send, '203.0.113.1')).status, 429, 'a client over its budget is limited');
    t.equal(
      (await login(api.send, '203.0.113.2')).status,
      401,
      'another client behind the same proxy has its own budget',
    );
    t.equal(
      (await login(api.send, '198.51.100.7, 203.0.113.2')).status,
      429,
      'what the client itself put in front does not count',
    );

    const unproxied: [string, Partial<ApiServerOptions>][] = [
      ['by default', {}],
      ['when the peer is not the trusted proxy', { trustProxy: ['10.1.2.3'] }],
    ];
    for (const [what, options] of unproxied) {
      const direct = await startApi(t, db, { rateLimits: { register: 1000, login: 1 }, ...options });
      t.equal((await login(direct.send, '203.0.113.1')).status, 401, what);
      t.equal(
        (await login(direct.send, '203.0.113.2')).status,
        429,
        `${what}: a made-up X-Forwarded-For is no new budget`,
      );
    }
  },
);

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
  const row = await db.pool.query('select email, first_name, last_name from public.users where id = $1', [
    registered.json.user.id,
  ]);
  t.same(row.rows[0], { email: body.email, first_name: body.firstName, last_name: body.lastName });

  const login = await send('POST', '/api/v1/auth/login', { email: "' or 1=1 --", password: "' or '1'='1" });
  t.equal(login.status, 401);
  t.equal((await send('POST', '/api/v1/auth/login', { username: body.username, password: body.password })).status, 200);
  const put = await send(
    'PUT',
    '/api/v1/users/profile',
    { firstName: "'; update users set role='admin' --" },
    {
      authorization: `Bearer ${registered.json.token}`,
    },
  );
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
    statuses.push(
      (
        await send('POST', '/api/v1/auth/register', {
          ...validUser,
          username: `limit${i}`,
          email: `limit${i}@example.com`,
        })
      ).status,
    );
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
  const value = fc.oneof(
    text,
    fc.integer(),
    fc.double(),
    fc.boolean(),
    fc.constant(null),
    fc.array(text, { maxLength: 3 }),
    fc.object({ maxDepth: 1 }),
  );
  // Mostly valid fields with a wrong one mixed in now and then, so both outcomes are reached.
  const field = <T>(valid: fc.Arbitrary<T>) =>
    fc.oneof({ weight: 4, arbitrary: valid }, { weight: 1, arbitrary: value });
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
        {
          weight: 1,
          arbitrary: fc.record({ avatar: field(fc.webUrl()), role: fc.constant('admin') }, { requiredKeys: [] }),
        },
      ),
    )
    .map(([fields, extra]) => ({ ...fields, ...extra }));
  const profileLike = fc.record(
    { firstName: field(fc.string({ minLength: 1, maxLength: 100 })), lastName: value, avatar: field(fc.webUrl()) },
    { requiredKeys: [] },
  );
  const body = (shaped: fc.Arbitrary<object>) =>
    fc.oneof(
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
      const res = await send(
        route === 'register' ? 'POST' : 'PUT',
        route === 'register' ? '/api/v1/auth/register' : '/api/v1/users/profile',
        encode(b) ?? '',
        {
          authorization: `Bearer ${token}`,
        },
      );
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
