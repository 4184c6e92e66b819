/**
 * The secret sweep's second half (the first is test/secret-sweep.test.ts): configuration errors
 * that involve a secret or the database password, and the API's answers and logs for register
 * and login, driven with known secret values (helpers/secrets.ts).
 */
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { createTestDatabase } from './helpers/db.ts';
import { runCli, startServe } from './helpers/cli.ts';
import { findLeaks, registerSecret, TEST_SECRETS, withPassword } from './helpers/secrets.ts';

const S = TEST_SECRETS;

async function configFile(content: unknown): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'suekk-sweep-'));
  const path = join(dir, 'suekk-sync.json');
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

/** Runs `work` over `items` a few at a time: a dozen CLI processes at once starve a loaded machine. */
async function fewAtATime<T, R>(items: readonly T[], work: (item: T) => Promise<R>, width = 3): Promise<R[]> {
  const results: R[] = [];
  for (let i = 0; i < items.length; i += width)
    results.push(...(await Promise.all(items.slice(i, i + width).map(work))));
  return results;
}

/** Whether any `size`-character piece of `secret` shows in `text`: V8 quotes a few characters of bad JSON. */
function sharesPiece(text: string, secret: string, size = 8): boolean {
  for (let i = 0; i + size <= secret.length; i++) if (text.includes(secret.slice(i, i + size))) return true;
  return false;
}

t.test('configuration errors that involve a secret or a password do not print it', async (t) => {
  const db = await createTestDatabase(t);
  const pwUrl = `postgres://postgres:${S.databasePassword}@127.0.0.1:1/nowhere`;
  const runs: [string, string[], Record<string, string>, number][] = [
    [
      'a secret that is not whsec_',
      ['relay'],
      { DATABASE_URL: db.url, BACKEND_SYNC_URL: 'http://127.0.0.1:9/x', WEBHOOK_SECRET: S.syncToken },
      2,
    ],
    [
      'a whsec_ secret with bad base64',
      ['relay'],
      {
        DATABASE_URL: db.url,
        BACKEND_SYNC_URL: 'http://127.0.0.1:9/x',
        WEBHOOK_SECRET: `${S.oldWebhookSecret},whsec_${S.jwtSecret}`,
      },
      2,
    ],
    [
      'a backend URL with a password',
      ['relay'],
      { DATABASE_URL: db.url, BACKEND_SYNC_URL: `http://sync:${S.syncToken}@127.0.0.1:9/x` },
      2,
    ],
    ['an unreachable database, relay', ['relay'], { DATABASE_URL: pwUrl, BACKEND_SYNC_URL: 'http://127.0.0.1:9/x' }, 2],
    ['an unreachable database, status', ['status'], { DATABASE_URL: pwUrl }, 1],
    ['an unreachable database, install', ['--database-url', pwUrl, 'install'], {}, 1],
    [
      'a database URL that is not postgres',
      ['status'],
      { DATABASE_URL: `mysql://root:${S.databasePassword}@127.0.0.1/db` },
      2,
    ],
    [
      'a database URL that does not parse',
      ['status'],
      { DATABASE_URL: `postgres://root:${S.databasePassword}@127.0.0.1:port/db` },
      2,
    ],
    ['a database that does not exist', ['tail-log'], { DATABASE_URL: withPassword(`${db.url}_missing`) }, 2],
    [
      'serve with a short JWT secret',
      ['serve', '--port', '0'],
      { DATABASE_URL: pwUrl, JWT_SECRET: 'short-jwt-secret' },
      2,
    ],
  ];
  const results = await fewAtATime(runs, ([, args, env]) => runCli(args, { env, timeoutMs: 120_000 }));
  for (const [i, [what, , , code]] of runs.entries()) {
    t.equal(results[i]!.code, code, `${what}: exit ${code}: ${results[i]!.stderr.trim()}`);
    t.equal(results[i]!.stderr.trim().split('\n').length, 1, `${what}: one sentence`);
  }

  // A config file that is not valid JSON: V8's message quotes the text around the mistake.
  const secretsInFiles = [S.databasePassword, S.syncToken, S.jwtSecret, S.webhookSecret];
  const broken = [
    `{"databaseUrl": postgres://admin:${S.databasePassword}@db/auth}`,
    `{"backendSyncToken": ${S.syncToken}}`,
    `{\n  "jwtSecret": "${S.jwtSecret}",\n  "webhookSecret": "${S.webhookSecret}"\n  "logLevel": "info"\n}`,
    `{"webhookSecret": "${S.webhookSecret}}`,
    `{"logLevel": "${S.syncToken}"}`,
    `{"relay": {"timeoutMs": "${S.jwtSecret}"}}`,
  ];
  const parsed = await fewAtATime(broken, async (content) =>
    runCli(['--config', await configFile(content), 'status'], { env: { DATABASE_URL: db.url }, timeoutMs: 120_000 }),
  );
  for (const res of parsed) {
    t.equal(res.code, 2, `exit 2: ${res.stderr.trim()}`);
    t.match(res.stderr, /^suekk-sync: Config file .* (is not valid JSON|has an error at)/);
    t.notOk(
      secretsInFiles.some((s) => sharesPiece(res.stderr, s)),
      'not even a piece of a secret in the file is shown',
    );
  }
  t.match(parsed[2]!.stderr, /line 4, column 3/, 'the mistake is still located');
});

t.test(
  'a password given as a URL parameter (?password=, ?sslpassword=) is masked in every command that names the database',
  async (t) => {
    const db = await createTestDatabase(t);
    const secret = S.databasePassword;
    const unreachable = (parameter: string) =>
      `postgres://postgres@127.0.0.1:1/nowhere?application_name=x&${parameter}=${secret}`;
    const missing = new URL(`${db.url}_missing`);
    missing.searchParams.set('password', secret);
    const runs: [string, string[], Record<string, string>, number][] = [
      ['status, ?password=', ['status'], { DATABASE_URL: unreachable('password') }, 1],
      ['status, ?sslpassword=', ['status'], { DATABASE_URL: unreachable('sslpassword') }, 1],
      ['relay', ['relay'], { DATABASE_URL: unreachable('password'), BACKEND_SYNC_URL: 'http://127.0.0.1:9/x' }, 2],
      ['install', ['--database-url', unreachable('sslpassword'), 'install'], {}, 1],
      ['serve', ['serve', '--port', '0'], { DATABASE_URL: unreachable('password'), JWT_SECRET: S.jwtSecret }, 1],
      ['tail-log, a database that does not exist', ['tail-log'], { DATABASE_URL: missing.toString() }, 2],
    ];
    // runCli's sweep rejects any run that prints the secret; the checks below say where it went.
    const results = await fewAtATime(runs, ([, args, env]) => runCli(args, { env, timeoutMs: 120_000 }));
    for (const [i, [what, , , code]] of runs.entries()) {
      const output = results[i]!.stdout + results[i]!.stderr;
      t.equal(results[i]!.code, code, `${what}: exit ${code}`);
      t.match(
        output,
        /(Cannot reach the database at|The database in) postgres:\/\/postgres@127\.0\.0\.1:\d+\/\w+\?\S*password=\*\*\*/,
        `${what}: ${output.trim()}`,
      );
      t.notOk(output.includes(secret), `${what}: the password is not shown`);
    }
  },
);

t.test("the API's answers and logs for register and login hold no password, hash or secret", async (t) => {
  const db = await createTestDatabase(t);
  const password = 'sweep-user-password-91b2';
  registerSecret(password, 'user password');
  const { child, base, finished } = await startServe(t, ['--port', '0'], {
    env: { DATABASE_URL: withPassword(db.url), JWT_SECRET: S.jwtSecret, LOG_LEVEL: 'debug' },
    timeoutMs: 60_000,
  });

  const answers: { what: string; status: number; text: string }[] = [];
  const call = async (what: string, method: string, path: string, body?: unknown, token?: string) => {
    const res = await fetch(base + path, {
      method,
      headers: {
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    answers.push({ what, status: res.status, text });
    return { status: res.status, json: text === '' ? undefined : (JSON.parse(text) as Record<string, any>) };
  };
  const user = { email: 'sweep@example.com', username: 'sweeper', password, firstName: 'Sweep', lastName: 'Er' };
  const registered = await call('register', 'POST', '/api/v1/auth/register', user);
  t.equal(registered.status, 201);
  const { rows } = await db.pool.query<{ password: string }>("select password from users where username = 'sweeper'");
  t.match(rows[0]!.password, /^\$2[aby]\$10\$/, 'the stored hash');
  registerSecret(rows[0]!.password, 'bcrypt hash of the user password');
  registerSecret(registered.json!.token as string, 'JWT issued at register');

  t.equal((await call('register taken', 'POST', '/api/v1/auth/register', user)).status, 409);
  t.equal(
    (
      await call('register short password', 'POST', '/api/v1/auth/register', {
        ...user,
        email: 'b@example.com',
        username: 'b_sweeper',
        password: 'sweep-1',
      })
    ).status,
    400,
  );
  t.equal(
    (
      await call('register long password', 'POST', '/api/v1/auth/register', {
        ...user,
        email: 'c@example.com',
        username: 'c_sweeper',
        password: password.repeat(4),
      })
    ).status,
    400,
  );
  t.equal(
    (
      await call(
        'register broken JSON',
        'POST',
        '/api/v1/auth/register',
        `{"email": "d@example.com", "password": ${password}}`,
      )
    ).status,
    400,
  );
  t.equal(
    (
      await call('login wrong password', 'POST', '/api/v1/auth/login', {
        username: 'sweeper',
        password: `${password}x`,
      })
    ).status,
    401,
  );
  t.equal(
    (await call('login unknown user', 'POST', '/api/v1/auth/login', { email: 'nobody@example.com', password })).status,
    401,
  );
  t.equal(
    (
      await call('login with a bad field', 'POST', '/api/v1/auth/login', {
        username: 'sweeper',
        password,
        extra: S.jwtSecret,
      })
    ).status,
    400,
  );
  const login = await call('login', 'POST', '/api/v1/auth/login', { username: 'sweeper', password });
  t.equal(login.status, 200);
  registerSecret(login.json!.token as string, 'JWT issued at login');
  t.equal(
    (await call('profile, forged token', 'GET', '/api/v1/users/profile', undefined, `${login.json!.token as string}x`))
      .status,
    401,
  );
  t.equal((await call('profile', 'GET', '/api/v1/users/profile', undefined, login.json!.token as string)).status, 200);
  t.equal(
    (await call('profile update', 'PUT', '/api/v1/users/profile', { firstName: 'Swept' }, login.json!.token as string))
      .status,
    200,
  );

  for (const a of answers) {
    // The token of a successful register or login is the answer's point; the rest is swept.
    const body =
      a.status < 300 && a.text !== ''
        ? JSON.stringify({ ...(JSON.parse(a.text) as object), token: undefined })
        : a.text;
    t.same(findLeaks(body, `the answer to ${a.what}`), [], `${a.what} (${a.status}): no secret in the answer`);
  }
  child.kill('SIGTERM');
  const out = await finished;
  t.equal(out.code, 0, out.stderr);
  t.match(
    out.stdout,
    /"msg":"incoming request"/,
    'requests were logged (and swept, with the password, hash and tokens)',
  );
});
