/** `suekk-sync serve` as an operator runs it: settings checks, start-up, a request, SIGTERM. */
import t from 'tap';
import { createTestDatabase } from './helpers/db.ts';
import { runCli, startServe } from './helpers/cli.ts';

const JWT_SECRET = 'cli-test-secret-0123456789abcdef0123456789';

t.test('serve refuses to start without what it needs', async (t) => {
  const [noSecret, badPort] = await Promise.all([
    runCli(['serve'], { env: { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/x' } }),
    runCli(['serve', '--port', '70000'], { env: { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/x', JWT_SECRET } }),
  ]);
  t.equal(noSecret.code, 2);
  t.match(noSecret.stderr, /^suekk-sync: JWT_SECRET is not set; /);
  t.equal(badPort.code, 2);
  t.match(
    badPort.stderr,
    /^suekk-sync: option '--port <port>' argument '70000' is invalid\. It must be a whole number, from 0 to 65535; run `suekk-sync serve --help` for usage\.\n$/,
  );
});

t.test('serve refuses a JWT_SECRET shorter than 32 bytes, and a TRUST_PROXY that names no address', async (t) => {
  const unreachable = 'postgres://postgres@127.0.0.1:1/x';
  const [short, bad] = await Promise.all([
    runCli(['serve'], { env: { DATABASE_URL: unreachable, JWT_SECRET: 'k'.repeat(31) } }),
    runCli(['serve'], { env: { DATABASE_URL: unreachable, JWT_SECRET, TRUST_PROXY: '127.0.0.1,proxy.internal' } }),
  ]);
  t.equal(short.code, 2, 'a usage error, before the database is tried');
  t.match(
    short.stderr,
    /^suekk-sync: JWT_SECRET is 31 bytes, too short to keep tokens from being forged; use at least 32 \(.*\)\.\n$/,
  );
  t.notMatch(short.stderr, /kkkkkkkk/, 'the secret is not shown');
  t.equal(bad.code, 2);
  t.match(
    bad.stderr,
    /^suekk-sync: trustProxy \(TRUST_PROXY\) must be true, false, or the proxy's addresses or CIDR ranges, not "proxy\.internal"; .*\.\n$/,
  );
});

t.test(
  'serve, receive and dev share one whole-number check: exit 2 naming the option, the value and the range',
  async (t) => {
    const runs: [string[], RegExp][] = [
      [
        ['serve', '--register-limit', '0'],
        /option '--register-limit <n>' argument '0' is invalid\. It must be a whole number, 1 or more;/,
      ],
      [['serve', '--login-limit', '1e3'], /option '--login-limit <n>' argument '1e3' is invalid/],
      [
        ['receive', '--port', ''],
        /option '--port <port>' argument '' is invalid\. It must be a whole number, from 0 to 65535;/,
      ],
      [
        ['receive', '--delay-ms', 'soon'],
        /option '--delay-ms <duration>' argument 'soon' is invalid\. It must be a duration such as 500ms, 10s or 2m \(or a number of milliseconds\), 0ms or more;/,
      ],
      [['dev', '--api-port', '0x50'], /option '--api-port <port>' argument '0x50' is invalid/],
      [['dev', '--receiver-port', '65536'], /option '--receiver-port <port>' argument '65536' is invalid/],
    ];
    const results = await Promise.all(
      runs.map(([args]) => runCli(args, { env: { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/x', JWT_SECRET } })),
    );
    for (const [i, [args, message]] of runs.entries()) {
      t.equal(results[i]!.code, 2, args.join(' '));
      t.match(results[i]!.stderr, message);
    }
  },
);

t.test('serve answers on the printed address, warns when not installed, and stops on SIGTERM', async (t) => {
  const db = await createTestDatabase(t, 'users');
  const { child, base, finished } = await startServe(t, ['--port', '0', '--register-limit', '1'], {
    env: { DATABASE_URL: db.url, JWT_SECRET, LOG_LEVEL: 'warn' },
    timeoutMs: 30_000,
  });

  t.equal((await fetch(`${base}/healthz`)).status, 200);
  const register = () =>
    fetch(`${base}/api/v1/auth/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        email: 'cli@example.com',
        username: 'cli',
        password: 'password123',
        firstName: 'C',
        lastName: 'L',
      }),
    });
  t.equal((await register()).status, 201);
  t.equal((await register()).status, 429, '--register-limit applies');

  child.kill('SIGTERM');
  const result = await finished;
  t.equal(result.code, 0, result.stderr);
  t.match(
    result.stdout,
    /suekk-sync is not installed on public\.users: changes will not be synced; run `suekk-sync install`/,
  );
  t.notMatch(result.stdout, /password123|\$2[aby]\$/);
});

t.test(
  'serve with TRUST_PROXY counts the forwarded clients, and takes a secret of exactly 32 bytes (16 two-byte characters)',
  async (t) => {
    const db = await createTestDatabase(t);
    const secret = 'é'.repeat(16);
    const { child, base, finished } = await startServe(t, ['--port', '0', '--login-limit', '1'], {
      env: { DATABASE_URL: db.url, JWT_SECRET: secret, TRUST_PROXY: 'loopback', LOG_LEVEL: 'warn' },
      timeoutMs: 30_000,
      secrets: [{ label: 'JWT secret', value: secret }],
    });
    const login = (client: string) =>
      fetch(`${base}/api/v1/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-forwarded-for': client },
        body: JSON.stringify({ username: 'nobody', password: 'wrong password' }),
      }).then((res) => res.status);
    t.same([await login('203.0.113.1'), await login('203.0.113.1'), await login('203.0.113.2')], [401, 429, 401]);
    child.kill('SIGTERM');
    const result = await finished;
    t.equal(result.code, 0, result.stderr);
  },
);
