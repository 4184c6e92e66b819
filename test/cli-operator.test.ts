/**
 * What a first-time operator meets at the command line: a pipe into `head`, errors that name
 * where a setting was given, config mistakes, help, defaults, durations. The real executable,
 * against the real database.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { loadSettings } from '../src/config.ts';
import { BIN, cleanEnv, collect, runCli, startCli, type CliResult } from './helpers/cli.ts';
import { createTestDatabase } from './helpers/db.ts';
import { startReceiver, waitFor } from './helpers/receiver.ts';
import { addUsers } from './helpers/relay.ts';
import { TEST_SECRETS } from './helpers/secrets.ts';

/** A folder holding `suekk-sync.json` with `content`, to run commands in. */
function configDir(content: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'suekk-operator-'));
  writeFileSync(join(dir, 'suekk-sync.json'), typeof content === 'string' ? content : JSON.stringify(content));
  return dir;
}

/** Runs `work` over `items` a few at a time: a dozen CLI processes at once starve a loaded machine. */
async function fewAtATime<T, R>(items: readonly T[], work: (item: T) => Promise<R>, width = 3): Promise<R[]> {
  const results: R[] = [];
  for (let i = 0; i < items.length; i += width)
    results.push(...(await Promise.all(items.slice(i, i + width).map(work))));
  return results;
}

/**
 * Runs a command whose reader goes away: before it prints anything (`closeAt: 'start'`), or after
 * reading the first chunk, as `head -1` does.
 */
async function withReaderGone(
  args: string[],
  env: Record<string, string>,
  closeAt: 'start' | 'first chunk',
): Promise<CliResult> {
  const child = startCli(args, { env });
  child.stdin!.end();
  const done = collect(child, 60_000);
  if (closeAt === 'start') child.stdout!.destroy();
  else child.stdout!.once('data', () => child.stdout!.destroy());
  return done;
}

t.test('a reader that goes away (| head) ends every command quietly with exit 0', async (t) => {
  const db = await createTestDatabase(t);
  // More than a pipe holds (64 KiB), so the command is still writing when the reader leaves.
  await addUsers(db, 1500, 'piped');
  const env = { DATABASE_URL: db.url };
  const runs: [string, string[], 'start' | 'first chunk'][] = [
    ['tail-log', ['tail-log', '-n', '1500'], 'first chunk'],
    ['tail-log --json', ['tail-log', '--json', '-n', '1500'], 'first chunk'],
    ['tail-log, closed before it prints', ['tail-log', '-n', '3'], 'start'],
    ['install --dry-run', ['install', '--dry-run'], 'start'],
    ['--help', ['--help'], 'start'],
  ];
  const results = await fewAtATime(runs, ([, args, closeAt]) => withReaderGone(args, env, closeAt));
  for (const [i, [what]] of runs.entries()) {
    t.equal(results[i]!.code, 0, `${what}: exit 0`);
    t.equal(results[i]!.stderr, '', `${what}: nothing on stderr (no EPIPE stack)`);
  }

  // As an operator types it: the exit status of suekk-sync's side of the pipe.
  const shell = (command: string) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn('bash', ['-c', `set -o pipefail; ${command}`], { env: cleanEnv(env) });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
  const bin = `"${process.execPath}" "${BIN}"`;
  for (const [command, lines] of [
    [`${bin} tail-log -n 1500 | head -1`, 1],
    [`${bin} tail-log --json -n 1500 | head -2`, 2],
  ] as const) {
    const res = await shell(command);
    t.equal(res.code, 0, `${command}: the pipeline (with pipefail) exits 0`);
    t.equal(res.stdout.trim().split('\n').length, lines);
    t.equal(res.stderr, '', 'no error');
  }
});

t.test('a relay whose log reader goes away stops and exits 0', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  // Deliveries to log: a relay notices its reader is gone at its next line.
  await addUsers(db, 3, 'logged');
  const res = await withReaderGone(
    ['relay', '--poll-interval-ms', '50', '--backoff-ms', '20'],
    { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url },
    'first chunk',
  );
  t.equal(res.code, 0, res.stderr);
  t.equal(res.stderr, '');
});

t.test('an API server whose log reader goes away stops and exits 0', async (t) => {
  const db = await createTestDatabase(t);
  const child = startCli(['serve', '--port', '0'], {
    env: { DATABASE_URL: db.url, JWT_SECRET: TEST_SECRETS.jwtSecret },
  });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const done = collect(child, 60_000);
  // Everything up to its own "listening" line is read; from then on only the log writes.
  const base = await new Promise<string>((resolve) => {
    let out = '';
    const read = (d: string) => {
      out += d;
      const match = /API listening on (http:\S+)/.exec(out);
      if (!match) return;
      child.stdout!.off('data', read);
      child.stdout!.destroy();
      resolve(match[1]!);
    };
    child.stdout!.on('data', read);
  });
  // Each request is a log line; the first written after the reader left stops the server.
  await waitFor(async () => {
    await fetch(`${base}/healthz`).catch(() => undefined);
    return child.exitCode !== null;
  }, 'serve to stop');
  const res = await done;
  t.equal(res.code, 0, res.stderr);
  t.equal(res.stderr, '');
});

t.test('a malformed setting is named where the operator set it: flag, variable, or key and file', async (t) => {
  const db = await createTestDatabase(t);
  const url = 'http://127.0.0.1:9/sync';
  const good = TEST_SECRETS.webhookSecret;
  const inFile = configDir({ webhookSecret: 'foo', backendSyncUrl: url });
  const urlInFile = configDir({ backendSyncUrl: 'ftp://example.com/sync' });
  const dbInFile = configDir({ databaseUrl: 'mysql://root@127.0.0.1/auth' });
  const runs: [string, string[], Record<string, string>, string | undefined, RegExp][] = [
    [
      '--secret',
      ['relay', '--url', url, '--secret', 'foo'],
      { DATABASE_URL: db.url },
      undefined,
      /^suekk-sync: --secret does not start with whsec_; /,
    ],
    [
      'WEBHOOK_SECRET',
      ['relay', '--url', url],
      { DATABASE_URL: db.url, WEBHOOK_SECRET: 'foo' },
      undefined,
      /^suekk-sync: WEBHOOK_SECRET does not start with whsec_; /,
    ],
    [
      'webhookSecret in the file',
      ['relay'],
      { DATABASE_URL: db.url },
      inFile,
      /^suekk-sync: webhookSecret in \.\/suekk-sync\.json does not start with whsec_; /,
    ],
    [
      '--url',
      ['relay', '--url', 'ftp://example.com/sync', '--secret', good],
      { DATABASE_URL: db.url },
      undefined,
      /^suekk-sync: --url must be an http:\/\/ or https:\/\/ URL/,
    ],
    [
      'backendSyncUrl in the file',
      ['relay'],
      { DATABASE_URL: db.url },
      urlInFile,
      /^suekk-sync: backendSyncUrl in \.\/suekk-sync\.json must be an http:\/\/ or https:\/\/ URL/,
    ],
    [
      '--database-url',
      ['--database-url', 'mysql://root@127.0.0.1/auth', 'tail-log'],
      {},
      undefined,
      /^suekk-sync: --database-url must start with postgres:\/\//,
    ],
    [
      'databaseUrl in the file',
      ['tail-log'],
      {},
      dbInFile,
      /^suekk-sync: databaseUrl in \.\/suekk-sync\.json must start with postgres:\/\//,
    ],
    [
      'an empty DATABASE_URL leaves the file its say',
      ['tail-log'],
      { DATABASE_URL: '' },
      dbInFile,
      /^suekk-sync: databaseUrl in \.\/suekk-sync\.json /,
    ],
    [
      'DATABASE_URL',
      ['tail-log'],
      { DATABASE_URL: 'postgres://[::1' },
      undefined,
      /^suekk-sync: DATABASE_URL is not a valid URL; /,
    ],
  ];
  const results = await fewAtATime(runs, ([, args, env, cwd]) => runCli(args, { env, cwd }));
  for (const [i, [what, , , , message]] of runs.entries()) {
    t.equal(results[i]!.code, 2, `${what}: exit 2`);
    t.match(results[i]!.stderr, message, what);
    t.equal(results[i]!.stderr.trim().split('\n').length, 1, `${what}: one line`);
  }
  t.notMatch(results[0]!.stderr, /WEBHOOK_SECRET/, 'a flag is not called by the variable it stands in for');
});

t.test('config mistakes name the key and the file; an unknown key gets the closest known one', async (t) => {
  const cases: [unknown, RegExp][] = [
    [
      { relay: { retrySchedule: '30s,soon' } },
      /^suekk-sync: Config file \.\/suekk-sync\.json has an error at "relay\.retrySchedule": must be one or more durations/,
    ],
    [{ relay: { timout: '10s' } }, /unknown key "relay\.timout" \(did you mean "relay\.timeoutMs"\?\)/],
    [{ relay: { retrySchedule: [] } }, /"relay\.retrySchedule": must be one or more durations/],
    [{ relay: { giveUpAfter: 'a day' } }, /"relay\.giveUpAfter": must be a duration such as 500ms/],
    [{ relay: { leaseMs: '100ms' } }, /"relay\.leaseMs": must be at least 300ms/],
    [
      { relay: { retry_schedule: '1m' } },
      /unknown key "relay\.retry_schedule" \(did you mean "relay\.retrySchedule"\?\)/,
    ],
    [{ sorce: { table: 'users' } }, /unknown key "sorce" \(did you mean "source"\?\)/],
    [{ timeoutMs: 100 }, /unknown key "timeoutMs" \(did you mean "relay\.timeoutMs"\?\)/],
    [
      { source: { columns: { isactive: 'true' } } },
      /unknown key "source\.columns\.isactive" \(did you mean "source\.columns\.isActive"\?\)/,
    ],
    [{ webhookSecrets: 'x' }, /unknown key "webhookSecrets" \(did you mean "webhookSecret"\?\)/],
    [{ nothingLikeIt: 1 }, /unknown key "nothingLikeIt"; fix that key\./],
  ];
  // Two as the operator meets them; the rest from the same loader, in-process.
  const results = await Promise.all(
    cases
      .slice(0, 2)
      .map(([content]) =>
        runCli(['relay'], { cwd: configDir(content), env: { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/x' } }),
      ),
  );
  for (const [i, [content, message]] of cases.entries()) {
    if (i < results.length) {
      t.equal(results[i]!.code, 2, JSON.stringify(content));
      t.match(results[i]!.stderr, message, JSON.stringify(content));
    } else {
      const dir = configDir(content);
      t.throws(
        () => loadSettings({}, {}, dir),
        { message: new RegExp(message.source.replace(/^\^suekk-sync: /, '^')) },
        JSON.stringify(content),
      );
    }
  }
});

t.test("every subcommand's help shows the global options, and every default one way", async (t) => {
  // One command of each module; the help configuration is the program's, inherited by all.
  const commands = ['install', 'relay', 'retry', 'pause', 'tail-log', 'status', 'serve', 'receive', 'dev'];
  const helps = await fewAtATime(commands, (c) => runCli([c, '--help']), 4);
  for (const [i, command] of commands.entries()) {
    const { code, stdout } = helps[i]!;
    t.equal(code, 0, `${command} --help`);
    const global = stdout.slice(stdout.indexOf('Global Options:'));
    t.ok(stdout.includes('Global Options:'), `${command}: a Global Options section`);
    if (command !== 'dev')
      t.match(
        global,
        /--database-url <url> +the auth database \(default: \$DATABASE_URL\)/,
        `${command}: --database-url`,
      );
    t.match(global, /--config <file> +config file \(default: \.\/suekk-sync\.json when/, `${command}: --config`);
    t.notMatch(global, /--version/, `${command}: not the program's --version`);
    t.notMatch(stdout, /\(default: "/, `${command}: a text default as it is typed, not quoted`);
    t.notMatch(stdout, /\(default: \[\]\)/, `${command}: no empty-list default`);
  }
  // dev's own --database-url is the one that applies there; it is listed once.
  const dev = helps[commands.indexOf('dev')]!.stdout;
  t.equal(dev.match(/--database-url/g)?.length, 1);

  // One notation in these commands' options: `(default: X)`.
  for (const command of ['relay', 'tail-log', 'receive', 'serve', 'dev']) {
    const { stdout } = helps[commands.indexOf(command)]!;
    t.notMatch(
      stdout.replace(/\s+/g, ' '),
      /\(default [^:]|; default /,
      `${command}: no "(default X)" in a description`,
    );
  }
  const flat = (command: string) => helps[commands.indexOf(command)]!.stdout.replace(/\s+/g, ' ');
  t.match(flat('relay'), '--timeout-ms <duration> bound on each attempt (default: 10s)');
  t.match(flat('relay'), '--secret <whsec> webhook signing secret(s), comma-separated (default: $WEBHOOK_SECRET)');
  t.match(flat('relay'), 'A <duration> is a number of milliseconds (10000) or a duration');
  t.match(
    flat('receive'),
    '--secret <whsec> verify signatures with this secret; repeat it while rotating (default: $WEBHOOK_SECRET)',
  );
  t.match(flat('receive'), 'exercise retries (default: 0)');
  t.match(flat('receive'), '--host <host> address to listen on (default: 127.0.0.1)');
  t.match(flat('tail-log'), '--interval-ms <duration> how often --follow looks for changes (default: 1s)');
});

t.test("commander's usage errors read like ours: one line, the same prefix, exit 2", async (t) => {
  const runs: [string[], RegExp][] = [
    [
      ['stauts'],
      /^suekk-sync: unknown command 'stauts' \(did you mean status\?\); run `suekk-sync --help` for usage\.\n$/,
    ],
    [
      ['relay', '--frobnicate'],
      /^suekk-sync: unknown option '--frobnicate'; run `suekk-sync relay --help` for usage\.\n$/,
    ],
    [
      ['tail-log', '-n', 'many'],
      /^suekk-sync: option '-n, --lines <count>' argument 'many' is invalid\. It must be a whole number, from 0 to 100000; run `suekk-sync tail-log --help` for usage\.\n$/,
    ],
    [
      ['tail-log', '--status', 'lost'],
      /^suekk-sync: option '--status <status>' argument 'lost' is invalid\. Allowed choices are pending, delivered, failed, skipped, superseded; run/,
    ],
    [['tail-log', 'extra'], /^suekk-sync: too many arguments for 'tail-log'/],
    [
      ['relay', '--timeout-ms', '10 seconds'],
      /^suekk-sync: option '--timeout-ms <duration>' argument '10 seconds' is invalid\. It must be a duration such as 500ms, 10s or 2m \(or a number of milliseconds\), 1ms or more; run/,
    ],
    [['relay', '--lease-ms', '100'], /argument '100' is invalid\. .*300ms or more/],
    [
      ['receive', '--fail-rate', '1.5'],
      /^suekk-sync: option '--fail-rate <rate>' argument '1\.5' is invalid\. It must be a number from 0 to 1; run/,
    ],
  ];
  const results = await fewAtATime(runs, ([args]) => runCli(args));
  for (const [i, [args, message]] of runs.entries()) {
    t.equal(results[i]!.code, 2, args.join(' '));
    t.match(results[i]!.stderr, message, args.join(' '));
    t.equal(results[i]!.stderr.trim().split('\n').length, 1, `${args.join(' ')}: one line`);
  }
});

t.test('times take a duration or a bare number of milliseconds, on the command line and in the file', async (t) => {
  // Parsed and accepted: each run gets as far as the check that follows the flags.
  const runs: [string[], RegExp][] = [
    [
      ['relay', '--timeout-ms', '10s', '--backoff-ms', '500ms', '--poll-interval-ms', '2m', '--lease-ms', '45s'],
      /^suekk-sync: BACKEND_SYNC_URL is not set; /,
    ],
    [
      ['relay', '--timeout-ms', '10000', '--backoff-ms', '500', '--poll-interval-ms', '120000', '--lease-ms', '45000'],
      /^suekk-sync: BACKEND_SYNC_URL is not set; /,
    ],
    [['tail-log', '--interval-ms', '2s'], /^suekk-sync: No database given; /],
  ];
  const results = await fewAtATime(runs, ([args]) => runCli(args));
  for (const [i, [args, message]] of runs.entries()) {
    t.equal(results[i]!.code, 2, args.join(' '));
    t.match(results[i]!.stderr, message, args.join(' '));
  }

  const dir = configDir({
    relay: {
      timeoutMs: '10s',
      backoffMs: 250,
      pollIntervalMs: '2m',
      leaseMs: '1m',
      retrySchedule: ['30s', 60_000],
      giveUpAfter: '2h',
    },
  });
  t.match(loadSettings({}, {}, dir).relay, {
    timeoutMs: 10_000,
    backoffMs: 250,
    pollIntervalMs: 120_000,
    leaseMs: 60_000,
    retryScheduleMs: [30_000, 60_000],
    giveUpAfterMs: 7_200_000,
  });
  t.match(
    loadSettings({ relay: { timeoutMs: 3_000 } }, {}, dir).relay,
    { timeoutMs: 3_000 },
    'a flag still comes first',
  );

  // A relay started with durations delivers; a receiver started with one says it waits that long.
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  await addUsers(db, 1, 'timed');
  const relay = startCli(
    ['relay', '--timeout-ms', '5s', '--backoff-ms', '20ms', '--poll-interval-ms', '100ms', '--lease-ms', '3s'],
    {
      env: { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url, LOG_LEVEL: 'warn' },
    },
  );
  const relayDone = collect(relay, 60_000);
  await waitFor(() => receiver.delivered.length === 1, 'the delivery');
  relay.kill('SIGTERM');
  t.equal((await relayDone).code, 0);

  const receive = startCli(['receive', '--port', '0', '--delay-ms', '1.5s']);
  const receiveDone = collect(receive, 30_000);
  let banner = '';
  receive.stdout!.on('data', (d: string) => (banner += d));
  await waitFor(() => banner.includes('\n'), 'the receiver banner');
  t.match(banner, /answering after 1500 ms/);
  receive.kill('SIGTERM');
  t.equal((await receiveDone).code, 0);
});

t.test('a mapping set to JSON null means "no such column", as the string "null" does', async (t) => {
  const db = await createTestDatabase(t, 'users');
  const cwd = configDir({ source: { columns: { avatar: null, role: 'null', isActive: null } } });
  const env = { DATABASE_URL: db.url };
  const installed = await runCli(['install'], { env, cwd });
  t.equal(installed.code, 0, installed.stderr);
  await addUsers(db, 1, 'nulled');
  const { rows } = await db.pool.query<{ body: string }>('select body from suekk_sync.events');
  t.match(JSON.parse(rows[0]!.body), { username: 'nulled1', avatar: '', role: '', isActive: false });
  const status = await runCli(['status', '--json'], { env, cwd });
  t.equal(status.code, 0, status.stdout);
  t.same(JSON.parse(status.stdout).drift, [], 'the installed capture matches the config');

  const stringNull = await runCli(['install', '--dry-run'], {
    env,
    cwd: configDir({ source: { columns: { isActive: 'null' } } }),
  });
  t.equal(stringNull.code, 0, `the string "null" works for isActive too: ${stringNull.stderr}`);
  const noId = await runCli(['install', '--dry-run'], { env, cwd: configDir({ source: { columns: { id: null } } }) });
  t.equal(noId.code, 2);
  t.match(
    noId.stderr,
    /"source\.columns\.id": must be an SQL expression: the id is how the backend knows the user; fix that key\./,
  );
});
