/** tail-log: the log through the real CLI (piped), following out-of-order commits, and the live view. */
import type { ChildProcess } from 'node:child_process';
import { render } from 'ink-testing-library';
import pg from 'pg';
import t from 'tap';
import { TailView } from '../src/cli/ui/TailView.tsx';
import { DeliveryRates, LogFollower, recentEntries, resolveLogUser, type LogEntry } from '../src/ops/tail.ts';
import { collect, runCli, startCli } from './helpers/cli.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { waitFor } from './helpers/receiver.ts';
import { addUsers } from './helpers/relay.ts';
import { byUsername, markDelivered, markHeadFailed } from './helpers/outbox.ts';

const JSON_KEYS = [
  'id',
  'webhookId',
  'userId',
  'username',
  'action',
  'source',
  'status',
  'attempts',
  'rounds',
  'httpStatus',
  'durationMs',
  'error',
  'createdAt',
  'deliveredAt',
  'nextAttemptAt',
  'supersededBy',
];

/** A writer whose transaction stays open until the test commits it. */
async function openWriter(t: { teardown(fn: () => unknown): void }, db: TestDatabase) {
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  t.teardown(() => client.end());
  await client.query('begin');
  return {
    insert: (username: string) =>
      client.query(
        `insert into users (email, username, password, first_name, last_name) values ($1 || '@example.com', $1, 'x', 'F', 'L')`,
        [username],
      ),
    commit: () => client.query('commit'),
  };
}

function jsonLines(stdout: string): Record<string, unknown>[] {
  return stdout
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

t.test('tail-log --json and plain lines, piped: the last n events, filtered, never a terminal escape', async (t) => {
  const db = await createTestDatabase(t);
  await addUsers(db, 3, 'ann');
  await db.pool.query("update users set first_name = 'Annie' where username = 'ann2'");
  await markDelivered(db, byUsername('ann1'));
  await markHeadFailed(db, byUsername('ann3'), {
    attempts: 1,
    rounds: 1,
    httpStatus: 400,
    error: 'HTTP 400',
    durationMs: 7,
  });
  const env = { DATABASE_URL: db.url };
  const [json, plain, filtered, badStatus] = await Promise.all([
    runCli(['tail-log', '--json', '-n', '3'], { env }),
    runCli(['tail-log'], { env }),
    runCli(['tail-log', '--user', 'ann2@example.com', '--status', 'pending', '--json'], { env }),
    runCli(['tail-log', '--status', 'lost'], { env }),
  ]);
  t.equal(json.code, 0, json.stderr);
  const lines = jsonLines(json.stdout);
  t.equal(lines.length, 3, '-n 3');
  t.same(Object.keys(lines[0]!), JSON_KEYS);
  t.same(
    lines.map((l) => [l.username, l.action, l.status]),
    [
      ['ann2', 'created', 'pending'],
      ['ann3', 'created', 'failed'],
      ['ann2', 'updated', 'pending'],
    ],
    'oldest first, ending with the latest',
  );
  t.match(lines[1], {
    source: 'trigger',
    attempts: 1,
    rounds: 1,
    httpStatus: 400,
    error: 'HTTP 400',
    durationMs: 7,
    deliveredAt: null,
    nextAttemptAt: null,
  });
  t.match(lines[0]!.webhookId, /^evt_[0-9a-f-]{36}$/);
  t.match(lines[0]!.createdAt, /^\d{4}-\d\d-\d\dT.*Z$/);
  t.match(lines[0]!.nextAttemptAt, /Z$/, 'a pending event says when it is due');

  t.equal(plain.code, 0, plain.stderr);
  const plainLines = plain.stdout.trim().split('\n');
  t.equal(plainLines.length, 4, 'all four events (fewer than the default 20)');
  t.match(
    plainLines[0],
    /^\S+Z {2}evt_[0-9a-f-]{36} {2}ann1 +created {2}trigger {2}delivered {2}attempts=1 rounds=1 {2}http=200 {2}12ms$/,
  );
  t.match(
    plainLines[2],
    /ann3 +created {2}trigger {2}failed +attempts=1 rounds=1 {2}http=400 {2}7ms {2}error: HTTP 400$/,
  );
  t.notMatch(plain.stdout, /\u001b/, 'no ANSI escapes when piped');

  t.equal(filtered.code, 0, filtered.stderr);
  t.same(
    jsonLines(filtered.stdout).map((l) => [l.username, l.action, l.status]),
    [
      ['ann2', 'created', 'pending'],
      ['ann2', 'updated', 'pending'],
    ],
    '--user takes an email too, and combines with --status',
  );
  t.same(
    (await recentEntries(db.pool, { status: 'failed' }, 20)).map((e) => e.username),
    ['ann3'],
  );
  t.equal(badStatus.code, 2);
  t.match(badStatus.stderr, /--status.*pending, delivered, failed, skipped/);

  await db.pool.query("delete from users where username = 'ann1'");
  const [ann1] = (await recentEntries(db.pool, {}, 1)).map((e) => e.userId);
  t.equal(await resolveLogUser(db.pool, 'ann1'), ann1, 'a hard-deleted user is still found in the log by username');
  await t.rejects(resolveLogUser(db.pool, 'nobody'), /No user and no logged event matches "nobody"/);
});

t.test('the follower sees commits out of id order, and every status change once', async (t) => {
  const db = await createTestDatabase(t);
  await addUsers(db, 1, 'old');
  const follower = new LogFollower(db.pool);
  t.same(
    (await follower.start(5)).map((e) => e.username),
    ['old1'],
  );

  const slow = await openWriter(t, db);
  const fast = await openWriter(t, db);
  await slow.insert('slow'); // takes the lower id
  await fast.insert('fast');
  await fast.commit();
  const seen = (entries: LogEntry[]) => entries.map((e) => `${e.username}:${e.status}`);
  t.same(seen(await follower.poll()), ['fast:pending']);
  // Polls while the slow transaction stays open must not move past its id.
  for (let i = 0; i < 3; i++) t.same(seen(await follower.poll()), []);
  await slow.commit();
  const late = await follower.poll();
  t.same(seen(late), ['slow:pending'], 'the lower id, committed last, still shows');
  t.ok(
    BigInt(late[0]!.id) <
      BigInt(
        (await db.pool.query("select id from suekk_sync.event_log where payload->>'username' = 'fast'")).rows[0].id,
      ),
  );

  await markDelivered(db, byUsername('old1'));
  await markDelivered(db, byUsername('fast'));
  t.same(seen(await follower.poll()), ['old1:delivered', 'fast:delivered'], 'status changes, old and new');
  t.same(seen(await follower.poll()), [], 'each change once');
  await markHeadFailed(db, byUsername('slow'), { attempts: 3, rounds: 1, dueAt: new Date(Date.now() + 60_000) });
  t.same(seen(await follower.poll()), ['slow:pending'], 'a round that failed shows again (attempts changed)');
});

t.test(
  'tail-log --follow, piped: initial lines, an out-of-order commit, a delivery, exit 0 on SIGTERM and SIGINT',
  async (t) => {
    const db = await createTestDatabase(t);
    await addUsers(db, 2, 'early');
    const children: ChildProcess[] = [];
    t.teardown(() => children.forEach((c) => c.exitCode === null && c.kill('SIGKILL')));
    const follow = (args: string[]) => {
      const child = startCli(['tail-log', '--follow', '--interval-ms', '50ms', ...args], {
        env: { DATABASE_URL: db.url },
      });
      children.push(child);
      const out = { stdout: '', stderr: '' };
      child.stdout!.setEncoding('utf8').on('data', (d: string) => (out.stdout += d));
      child.stderr!.setEncoding('utf8').on('data', (d: string) => (out.stderr += d));
      const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
      return { child, out, exited };
    };
    const json = follow(['--json', '-n', '1']);
    const plain = follow([]);
    const events = () => jsonLines(json.out.stdout).map((l) => `${l.username}:${l.status}`);
    await waitFor(
      () => events().length === 1 && plain.out.stdout.split('\n').length === 3,
      'the initial lines',
      20_000,
      () => json.out,
    );
    t.same(events(), ['early2:pending'], '-n 1');

    const slow = await openWriter(t, db);
    const fast = await openWriter(t, db);
    await slow.insert('slow');
    await fast.insert('fast');
    await fast.commit();
    await waitFor(() => events().includes('fast:pending'), 'the second insert, committed first');
    await new Promise((r) => setTimeout(r, 200));
    await slow.commit();
    await waitFor(() => events().includes('slow:pending'), 'the first insert, committed last');
    await markDelivered(db, byUsername('early1'));
    await waitFor(() => events().includes('early1:delivered'), 'the delivery of an event shown before --follow began');
    t.same(
      events(),
      ['early2:pending', 'fast:pending', 'slow:pending', 'early1:delivered'],
      'each once, in the order they happened',
    );
    await waitFor(
      () =>
        /slow +created {2}trigger {2}pending/.test(plain.out.stdout) &&
        /early1 +created {2}trigger {2}delivered/.test(plain.out.stdout),
      'the plain follower too',
    );
    t.notMatch(plain.out.stdout, /\u001b/, 'no cursor movement into a pipe');

    json.child.kill('SIGTERM');
    plain.child.kill('SIGINT');
    t.equal(await json.exited, 0, 'SIGTERM ends --follow with exit 0');
    t.equal(await plain.exited, 0, 'SIGINT (Ctrl-C) too');
    t.equal(json.out.stderr, '');
  },
);

t.test('the follower shows changes in the order they happened, not by capture', async (t) => {
  const db = await createTestDatabase(t);
  await addUsers(db, 1, 'old');
  const follower = new LogFollower(db.pool);
  await follower.start(5);
  // Between two polls: a new user is captured, then the old user's event is delivered.
  await addUsers(db, 1, 'new');
  await markDelivered(db, byUsername('old1'));
  const seen = (entries: LogEntry[]) => entries.map((e) => `${e.username}:${e.status}`);
  t.same(
    seen(await follower.poll()),
    ['new1:pending', 'old1:delivered'],
    'the later delivery of the older event comes after',
  );
  // A round that failed records no time: it is the latest thing the poll learnt.
  await markHeadFailed(db, byUsername('new1'), { attempts: 3, rounds: 1, dueAt: new Date(Date.now() + 60_000) });
  await addUsers(db, 1, 'newer');
  t.same(seen(await follower.poll()), ['newer1:pending', 'new1:pending']);
});

t.test(
  'tail-log --follow, piped: a delivery after a capture shows after it; the schema dropped ends it with one sentence',
  async (t) => {
    const db = await createTestDatabase(t);
    await addUsers(db, 1, 'old');
    // A poll every 1.5 s: both changes below land between two polls.
    const child = startCli(['tail-log', '--follow', '--json', '--interval-ms', '1.5s'], {
      env: { DATABASE_URL: db.url },
    });
    t.teardown(() => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });
    const done = collect(child, 60_000);
    let stdout = '';
    child.stdout!.on('data', (d: string) => (stdout += d));
    const events = () => jsonLines(stdout).map((l) => `${l.username}:${l.status}`);
    await waitFor(() => events().length === 1, 'the initial line');
    await addUsers(db, 1, 'new');
    await markDelivered(db, byUsername('old1'));
    await waitFor(() => events().length === 3, 'both changes', 15_000, events);
    t.same(events(), ['old1:pending', 'new1:pending', 'old1:delivered']);

    const uninstalled = await runCli(['uninstall', '--drop-events', '--force'], { env: { DATABASE_URL: db.url } });
    t.equal(uninstalled.code, 0, uninstalled.stderr);
    const result = await done;
    t.equal(result.code, 2);
    t.equal(
      result.stderr,
      'suekk-sync: suekk-sync was uninstalled from this database while tail-log followed it; run `suekk-sync install` to capture changes again.\n',
    );
  },
);

t.test('the live view shows counters and the latest lines', async (t) => {
  const at = (s: string) => new Date(`2025-06-01T12:00:${s}Z`);
  const entry = (over: Partial<LogEntry>): LogEntry => ({
    id: '1',
    webhookId: 'evt_5f0e8c5e-1d7a-4c43-9a55-0c2d8f1f3e01',
    userId: 'u-1',
    username: 'alice',
    action: 'created',
    source: 'trigger',
    status: 'delivered',
    attempts: 1,
    rounds: 1,
    httpStatus: 200,
    durationMs: 14,
    error: null,
    createdAt: at('00.000'),
    deliveredAt: at('00.120'),
    nextAttemptAt: at('00.000'),
    supersededBy: null,
    ...over,
  });
  const entries = [
    entry({}),
    entry({
      id: '2',
      username: 'bob',
      status: 'failed',
      httpStatus: 400,
      durationMs: 9,
      error: 'HTTP 400',
      deliveredAt: null,
    }),
    entry({
      id: '3',
      username: 'carol',
      action: 'updated',
      status: 'pending',
      attempts: 0,
      rounds: 0,
      httpStatus: null,
      durationMs: null,
      deliveredAt: null,
    }),
  ];
  const { lastFrame, rerender, unmount } = render(
    <TailView
      entries={entries}
      rates={{ deliveredPerMinute: 42, failedPerMinute: 1, lagP50Ms: 120, lagP99Ms: 2_500 }}
      gauges={{ backlog: 7, oldestPendingSeconds: 75, oldestLiveSeconds: 75, failed: 1, parkedUsers: 1, paused: false }}
      scope="status failed"
    />,
  );
  const frame = lastFrame() ?? '';
  t.match(frame, 'suekk-sync tail-log · status failed · following (Ctrl-C to stop)');
  t.match(frame, 'delivered 42/min · failed 1/min · lag p50 120ms p99 2.5s');
  t.match(frame, 'backlog 7 · oldest pending 1m 15s · parked users 1');
  t.notMatch(frame, 'PAUSED');
  const lines = frame.split('\n');
  t.match(lines.at(-4), /^time +user +action +source +status +try\/rnd http took +webhook$/);
  t.equal(lines.at(-3), '12:00:00Z alice          created trigger delivered 1/1     200  14ms    evt_5f0e8c5e');
  t.equal(
    lines.at(-2),
    '12:00:00Z bob            created trigger failed    1/1     400  9ms     evt_5f0e8c5e HTTP 400',
  );
  t.equal(lines.at(-1), '12:00:00Z carol          updated trigger pending   0/0                  evt_5f0e8c5e');

  rerender(
    <TailView
      entries={[]}
      rates={{ deliveredPerMinute: 0, failedPerMinute: 0, lagP50Ms: null, lagP99Ms: null }}
      gauges={{
        backlog: 0,
        oldestPendingSeconds: null,
        oldestLiveSeconds: null,
        failed: 0,
        parkedUsers: 0,
        paused: true,
      }}
      problem="The database does not answer (ECONNREFUSED); retrying."
    />,
  );
  const idle = lastFrame() ?? '';
  t.match(idle, 'lag p50 — p99 —');
  t.match(idle, 'backlog 0 · oldest pending — · parked users 0 · PAUSED');
  t.match(idle, 'The database does not answer (ECONNREFUSED); retrying.');
  t.match(idle, '(no events yet)');
  unmount();
});

t.test('delivery rates: per minute, with nearest-rank lag percentiles', async (t) => {
  const rates = new DeliveryRates(60_000);
  const delivered = (lagMs: number): LogEntry =>
    ({ status: 'delivered', createdAt: new Date(0), deliveredAt: new Date(lagMs) }) as LogEntry;
  rates.record([...Array.from({ length: 99 }, (_, i) => delivered(i + 1)), delivered(5_000)], 1_000);
  rates.record([{ status: 'failed' } as LogEntry, { status: 'pending' } as LogEntry], 30_000);
  t.same(rates.snapshot(40_000), { deliveredPerMinute: 100, failedPerMinute: 1, lagP50Ms: 50, lagP99Ms: 99 });
  t.same(
    rates.snapshot(61_000),
    { deliveredPerMinute: 0, failedPerMinute: 1, lagP50Ms: null, lagP99Ms: null },
    'a minute later',
  );
  t.same(rates.snapshot(91_000), { deliveredPerMinute: 0, failedPerMinute: 0, lagP50Ms: null, lagP99Ms: null });
});
