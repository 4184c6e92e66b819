/**
 * The paths most likely to leak a secret, driven with known secret values (helpers/secrets.ts)
 * and a backend that fails in every way and echoes back what it was sent. Every CLI run's output
 * and every in-process relay log line is swept by the helpers; what the helpers do not capture
 * (stored responses) is swept here. Configuration errors and the API are in
 * test/secret-sweep-settings-api.test.ts.
 */
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import t from 'tap';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { runCli, type CliResult } from './helpers/cli.ts';
import { startReceiver, waitFor, type ReceivedRequest, type Answer } from './helpers/receiver.ts';
import { addUsers, startTestRelay } from './helpers/relay.ts';
import { findLeaks, SecretLeakError, TEST_SECRETS, withPassword } from './helpers/secrets.ts';
import { relayProcess } from './faults/fault-helpers.ts';

const S = TEST_SECRETS;
// Credentials a careless backend might send back in its own error pages.
const BACKEND_JWT = `eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJiYWNrZW5kIn0.${'q'.repeat(43)}`;
const BACKEND_HASH = bcrypt.hashSync('backend-password', 4);

/** A backend that fails by username prefix and echoes every credential it was given, or knows. */
function echoingBackend(req: ReceivedRequest): Answer {
  const name = String(req.body.username ?? '');
  const echo = JSON.stringify({
    error: 'nope',
    got: { authorization: req.headers.authorization, signature: req.headers['webhook-signature'] },
    expectedSecret: S.webhookSecret,
    session: BACKEND_JWT,
    hash: BACKEND_HASH,
  });
  // A PHP backend escapes every slash, which hides a base64 value from a plain search.
  const phpEcho = echo.replaceAll('/', '\\/');
  if (name.startsWith('boom')) return { status: 500, body: echo };
  if (name.startsWith('php')) return { status: 503, body: phpEcho };
  if (name.startsWith('denied')) return { status: 401, body: echo };
  if (name.startsWith('moved')) {
    const signature = String(req.headers['webhook-signature']).split(' ')[0]!;
    return {
      status: 302,
      headers: {
        location: `https://login.example/cb?token=${S.syncToken}&sig=${encodeURIComponent(signature)}&s=${signature}`,
      },
      body: echo,
    };
  }
  if (name.startsWith('stuck')) return { hang: true };
  return { status: 200, body: echo };
}

/** Sets the failing users up: each prefix once. */
async function failingUsers(db: TestDatabase): Promise<void> {
  for (const prefix of ['fine', 'boom', 'php', 'denied', 'moved', 'stuck']) await addUsers(db, 1, prefix);
}

async function configFile(content: unknown): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'suekk-sweep-'));
  const path = join(dir, 'suekk-sync.json');
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

/** Settings for the CLI: the secrets in the environment, small delays in the config file. */
async function cliEnv(db: TestDatabase, backendUrl: string) {
  const config = await configFile({
    // Long enough that only the hanging user times out, on a loaded machine too.
    relay: { timeoutMs: 2_000, maxAttempts: 2, backoffMs: 10, retrySchedule: '1h', pollIntervalMs: 100 },
  });
  return {
    config,
    env: {
      DATABASE_URL: withPassword(db.url),
      BACKEND_SYNC_URL: backendUrl,
      WEBHOOK_SECRET: `${S.webhookSecret},${S.oldWebhookSecret}`,
      BACKEND_SYNC_TOKEN: S.syncToken,
      JWT_SECRET: S.jwtSecret,
      LOG_LEVEL: 'debug',
    },
  };
}

t.test('the sweep itself fails a test on every form of a secret, and names the leak without printing it', async (t) => {
  const key = Buffer.from(S.webhookSecret.slice('whsec_'.length), 'base64');
  const forms: [string, RegExp][] = [
    [`x ${S.webhookSecret} y`, /the webhookSecret/],
    [`key=${S.webhookSecret.slice(6, -1)}`, /as its base64 key/],
    [`key=${key.toString('hex')}`, /as its key in hex/],
    [`key=${key.toString('base64url')}`, /as its key in base64url/],
    [`authorization: Bearer ${S.syncToken}`, /the syncToken/],
    [`"webhook-signature":"v1,${'A'.repeat(43)}="`, /a webhook signature/],
    [`password=${BACKEND_HASH}`, /a bcrypt password hash/],
    [`token=${BACKEND_JWT}`, /a JWT/],
    [`postgres://u:${S.databasePassword}@h/d`, /the databasePassword/],
  ];
  for (const [text, what] of forms) {
    const leaks = findLeaks(text, 'a test string');
    t.ok(leaks.length > 0, `caught: ${what}`);
    t.match(leaks.map((l) => l.what).join(' | '), what);
    const error = new SecretLeakError(leaks, 'this test');
    t.notOk(
      Object.values(S).some((secret) => error.message.includes(secret)),
      'the failure does not print the secret',
    );
  }
  t.same(
    findLeaks('suekk-sync: WEBHOOK_SECRET does not start with whsec_; Bearer $TOKEN', 'ordinary output'),
    [],
    'ordinary output passes',
  );
  t.same(
    findLeaks(`token: ${BACKEND_JWT}`, 'a login answer', { allow: ['jwt'] }),
    [],
    'a JWT where it is the point can be allowed',
  );

  // A real run whose output carries a secret is refused by runCli (the dry run prints the mapping).
  const db = await createTestDatabase(t, 'users');
  const config = await configFile({ source: { columns: { avatar: `'${S.syncToken}'` } } });
  const leaked = await runCli(['--config', config, 'install', '--dry-run'], { env: { DATABASE_URL: db.url } }).then(
    () => undefined,
    (err: unknown) => err,
  );
  t.type(leaked, SecretLeakError, 'runCli fails on a leak');
  t.match(
    (leaked as Error).message,
    /^suekk-sync install printed a secret: the syncToken in stdout, starting swee… \(29 characters\)$/,
  );

  // And an in-process relay whose log line carries one is caught too.
  const receiver = await startReceiver(t);
  const logged = await createTestDatabase(t);
  const second = await startTestRelay(t, logged, receiver.url, { expectLeaks: true });
  await logged.pool.query("insert into users (email, username, password) values ('leak@example.com', $1, 'x')", [
    S.syncToken,
  ]);
  await waitFor(() => second.leaks.length > 0, 'the relay logging the user name, which is a secret here', 10_000);
  t.match(second.leaks[0], { kind: 'known', what: 'the syncToken' });
});

t.test('relay logs and stored responses on 500, 503, 401, redirects and timeouts hold no secret', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t, echoingBackend);
  const { logs, stop } = await startTestRelay(t, db, receiver.url, {
    secrets: [S.webhookSecret, S.oldWebhookSecret],
    token: S.syncToken,
    settings: { timeoutMs: 2_000, maxAttempts: 2, backoffMs: 10, retryScheduleMs: [60_000] },
  });
  await failingUsers(db);
  await waitFor(
    async () => {
      const { rows } = await db.pool.query<{ n: number }>(
        "select count(*)::int as n from suekk_sync.event_log where status <> 'pending' or rounds > 0",
      );
      return rows[0]!.n === 6;
    },
    'one round for every user',
    60_000,
  );
  await stop();
  t.ok(
    receiver.requests.every((r) => String(r.headers.authorization) === `Bearer ${S.syncToken}`),
    'the backend got the token',
  );
  t.ok(
    receiver.requests.every((r) => /^v1,\S+ v1,\S+$/.test(String(r.headers['webhook-signature']))),
    'and two signatures to echo',
  );

  const { rows } = await db.pool.query<{
    username: string;
    status: string;
    last_status: number | null;
    last_error: string | null;
    last_response: string | null;
  }>(
    `select payload->>'username' as username, status, last_status, last_error, last_response
       from suekk_sync.event_log order by id`,
  );
  const stored = rows.flatMap((r) => [r.last_error ?? '', r.last_response ?? '']).join('\n');
  t.match(stored, /\[redacted\]/);
  t.same(findLeaks(stored, 'suekk_sync.events'), [], 'no secret, signature, hash or JWT stored');
  const byUser = Object.fromEntries(rows.map((r) => [r.username.replace(/\d+$/, ''), r]));
  t.match(
    byUser.boom,
    { last_status: 500, last_error: /^HTTP 500: .*\[redacted\]/ },
    'the 500 is recorded, its credentials redacted',
  );
  t.match(byUser.php, { last_status: 503, last_response: /\[redacted\]/ });
  t.match(byUser.denied, { status: 'failed', last_status: 401, last_response: /"error":"nope"/ });
  t.match(byUser.moved, {
    status: 'failed',
    last_status: 302,
    last_error: /redirects are not followed \(Location: https:\/\/login\.example\/cb\?/,
  });
  t.match(byUser.stuck, { last_error: /timed out/ });
  t.match(byUser.fine, { status: 'delivered' });
  t.ok(
    logs.some((l) => /^Failed to sync user boom1 to backend: HTTP 500/.test(String(l.msg))),
    'the failures were logged (and swept)',
  );
});

t.test('operator commands over those events print no secret: status, tail-log, push, retry, resync', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t, echoingBackend);
  await failingUsers(db);
  const { config, env } = await cliEnv(db, receiver.url);
  const cli = (args: string[]) => runCli(['--config', config, ...args], { env, timeoutMs: 120_000 });

  // No relay is alive: resync delivers inline, logging at debug to stderr.
  const resynced = await cli(['resync', '--all', '--json']);
  t.equal(resynced.code, 1, 'a resync that did not deliver everything exits 1');
  t.match(JSON.parse(resynced.stdout.trim().split('\n').at(-1)!), { enqueued: 6 });
  t.match(resynced.stderr, /Failed to sync user boom1 to backend: HTTP 500/, 'the inline relay logged the failures');

  // Reading commands side by side; the ones that deliver one after another.
  const reading = {
    status: ['status'],
    statusJson: ['status', '--json'],
    tail: ['tail-log', '-n', '100'],
    tailJson: ['tail-log', '-n', '100', '--json'],
    retryDry: ['retry', '--all-failed', '--dry-run', '--json'],
    resyncDry: ['resync', '--all', '--dry-run'],
  };
  const read = await fewAtATime(Object.values(reading), (args) => cli(args));
  const results: Record<string, CliResult> = Object.fromEntries(
    Object.keys(reading).map((name, i) => [name, read[i]!]),
  );
  for (const [name, args] of Object.entries({
    pushFine: ['push', 'fine1'],
    pushBoom: ['push', 'boom1', '--json'],
    pushDenied: ['push', 'denied1'],
    retryUser: ['retry', '--user', 'php1'],
    retryAll: ['retry', '--all-failed'],
  })) {
    results[name] = await cli(args);
  }
  t.equal(results.status!.code, 1, 'status: unhealthy (failed events)');
  t.match(results.tailJson!.stdout, /"error":"HTTP 500: /);
  t.match(results.tail!.stdout, /error: HTTP 302: redirects are not followed/);
  t.equal(results.pushFine!.code, 0, results.pushFine!.stderr);
  t.match(results.pushFine!.stdout, /response: /, 'push shows the answer of a delivered event');
  t.equal(results.pushBoom!.code, 1);
  t.match(JSON.parse(results.pushBoom!.stdout), {
    outcome: 'blocked',
    ahead: [{ outcome: 'waiting', httpStatus: 500, response: /\[redacted\]/ }, { outcome: 'blocked' }],
  });
  t.equal(results.pushDenied!.code, 1);
  t.match(results.pushDenied!.stderr + results.pushDenied!.stdout, /retry --user/);
  t.match(results.retryUser!.stdout, /response: /, 'retry shows the answer of an event that was not delivered');
  t.match(results.resyncDry!.stdout, /Would resync 6 users/);
  t.ok(receiver.requests.length > 10, `the backend was asked ${receiver.requests.length} times`);
});

t.test('the relay process at LOG_LEVEL=debug prints no secret', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t, echoingBackend);
  const { env } = await cliEnv(db, receiver.url);
  const relay = relayProcess(t, env, [
    '--timeout-ms',
    '2000',
    '--max-attempts',
    '2',
    '--backoff-ms',
    '10',
    '--retry-schedule',
    '1h',
    '--poll-interval-ms',
    '100',
  ]);
  await failingUsers(db);
  await waitFor(() => new Set(receiver.requests.map((r) => r.body.username)).size === 6, 'every user tried', 60_000);
  await waitFor(
    async () => {
      const { rows } = await db.pool.query<{ n: number }>(
        "select count(*)::int as n from suekk_sync.event_log where status <> 'pending' or rounds > 0",
      );
      return rows[0]!.n === 6;
    },
    'one round each',
    60_000,
  );
  relay.child.kill('SIGTERM');
  const out = await relay.done;
  t.equal(out.code, 0, out.stderr);
  t.match(out.stdout, /Failed to sync user denied1 to backend: HTTP 401/, 'the failures were logged (and swept)');
  t.match(out.stdout, /Failed to sync user moved1 to backend: HTTP 302: redirects are not followed/);
});

/** Runs `work` over `items` a few at a time: a dozen CLI processes at once starve a loaded machine. */
async function fewAtATime<T, R>(items: readonly T[], work: (item: T) => Promise<R>, width = 3): Promise<R[]> {
  const results: R[] = [];
  for (let i = 0; i < items.length; i += width)
    results.push(...(await Promise.all(items.slice(i, i + width).map(work))));
  return results;
}
