/** install / uninstall against a real database: mistakes change nothing, repeats are no-ops. */
import t from 'tap';
import { install } from '../src/capture/install.ts';
import { DEFAULT_SOURCE } from '../src/config.ts';
import { LATEST_SCHEMA_VERSION, loadMigrations } from '../src/db/migrations.ts';
import { createTestDatabase } from './helpers/db.ts';
import { runCli } from './helpers/cli.ts';
import { configFile, isInstalled } from './helpers/install.ts';
import { markHeadFailed } from './helpers/outbox.ts';
import { addUsers } from './helpers/relay.ts';

t.test('install --dry-run prints every statement and changes nothing', async (t) => {
  const db = await createTestDatabase(t, 'users');
  const res = await runCli(['install', '--dry-run'], { env: { DATABASE_URL: db.url } });
  t.equal(res.code, 0, res.stderr);
  t.match(res.stdout, /create table suekk_sync\.events/);
  t.match(res.stdout, /create or replace function suekk_sync\.user_payload\(u public\.users\)/);
  t.match(res.stdout, /begin atomic/);
  t.match(res.stdout, /create or replace trigger suekk_sync_capture/);
  t.match(res.stdout, /security definer set search_path = pg_catalog, pg_temp/);
  t.same(await isInstalled(db), { schema: false, triggers: 0 });
});

t.test('install, then install again: the second is a no-op that says so', async (t) => {
  const db = await createTestDatabase(t, 'users');
  const first = await runCli(['install'], { env: { DATABASE_URL: db.url } });
  t.equal(first.code, 0, first.stderr);
  t.match(first.stdout, `schema version 0 → ${LATEST_SCHEMA_VERSION}`);
  const second = await runCli(['install'], { env: { DATABASE_URL: db.url } });
  t.equal(second.code, 0, second.stderr);
  t.match(second.stdout, /already current/);
  t.same(await isInstalled(db), { schema: true, triggers: 3 });
  const dry = await runCli(['install', '--dry-run'], { env: { DATABASE_URL: db.url } });
  t.notMatch(dry.stdout, /create table/, 'an installed schema prints no migration again');
});

t.test('two installs racing apply each migration once', async (t) => {
  const db = await createTestDatabase(t, 'users');
  const results = await Promise.all([1, 2, 3].map(() => install(db.pool, { source: DEFAULT_SOURCE })));
  t.same(
    results.map((r) => r.toVersion),
    [1, 2, 3].map(() => LATEST_SCHEMA_VERSION),
  );
  t.equal(results.filter((r) => r.fromVersion === 0).length, 1, 'exactly one applied the migrations');
  const { rows } = await db.pool.query('select version from suekk_sync.migrations order by version');
  t.same(
    rows,
    loadMigrations().map((m) => ({ version: m.version })),
  );
});

t.test('a wrong expression exits 2 naming field, expression and Postgres, and changes nothing', async (t) => {
  const db = await createTestDatabase(t, 'users');
  const cfg = configFile({ source: { columns: { displayName: 'full_name' } } });
  const res = await runCli(['install', '--config', cfg], { env: { DATABASE_URL: db.url } });
  t.equal(res.code, 2);
  t.match(res.stderr, /source\.columns\.displayName = "full_name"/);
  t.match(res.stderr, /column "full_name" does not exist/);
  t.notMatch(res.stderr, / {4}at /, 'no stack trace');
  t.same(await isInstalled(db), { schema: false, triggers: 0 });
});

t.test('a second statement smuggled into an expression is refused', async (t) => {
  const db = await createTestDatabase(t, 'users');
  const cfg = configFile({ source: { columns: { role: "role; drop table users; select 'x'" } } });
  const res = await runCli(['install', '--config', cfg], { env: { DATABASE_URL: db.url } });
  t.equal(res.code, 2);
  t.match(res.stderr, /source\.columns\.role/);
  const { rows } = await db.pool.query("select to_regclass('public.users') is not null as ok");
  t.same(rows, [{ ok: true }]);
});

t.test('install mistakes in the table and columns exit 2 with a sentence', async (t) => {
  const db = await createTestDatabase(t, 'users');
  const noTable = await runCli(['install', '--table', 'auth.nope'], { env: { DATABASE_URL: db.url } });
  t.equal(noTable.code, 2);
  t.match(noTable.stderr, /"auth\.nope" does not exist/);
  const badColumn = configFile({ source: { softDeleteColumn: 'removed_at' } });
  const res = await runCli(['install', '--config', badColumn], { env: { DATABASE_URL: db.url } });
  t.equal(res.code, 2);
  t.match(res.stderr, /source\.softDeleteColumn names column "removed_at"/);
  const isActive = configFile({ source: { columns: { isActive: 'email' } } });
  const res2 = await runCli(['install', '--config', isActive], { env: { DATABASE_URL: db.url } });
  t.equal(res2.code, 2);
  t.match(res2.stderr, /source\.columns\.isActive/);
  t.same(await isInstalled(db), { schema: false, triggers: 0 });
});

t.test('bad config files exit 2 naming the key', async (t) => {
  const cases: [unknown, RegExp][] = [
    ['{ not json', /is not valid JSON/],
    [{ relay: { timeoutMs: 'soon' } }, /"relay\.timeoutMs"/],
    [{ sorce: {} }, /unknown key "sorce"/],
    [{ source: { columns: { nickname: 'x' } } }, /unknown key "source\.columns\.nickname"/],
  ];
  for (const [content, pattern] of cases) {
    const res = await runCli(['install', '--config', configFile(content)], {
      env: { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none' },
    });
    t.equal(res.code, 2, String(pattern));
    t.match(res.stderr, pattern);
  }
  const missing = await runCli(['install', '--config', '/nonexistent/suekk.json']);
  t.equal(missing.code, 2);
  t.match(missing.stderr, /does not exist/);
  const noDb = await runCli(['install']);
  t.equal(noDb.code, 2);
  t.match(noDb.stderr, /DATABASE_URL/);
  const badUrl = await runCli(['install'], { env: { DATABASE_URL: 'mysql://x@y/z' } });
  t.equal(badUrl.code, 2);
  t.match(badUrl.stderr, /postgres:\/\//);
  const unreachable = await runCli(['install'], { env: { DATABASE_URL: 'postgres://u:hunter2@127.0.0.1:1/db' } });
  t.equal(unreachable.code, 1);
  t.match(unreachable.stderr, /Cannot reach the database/);
  t.notMatch(unreachable.stderr, /hunter2/, 'the password is never printed');
});

t.test('install on a table with users says they were not sent, and how to send them', async (t) => {
  const db = await createTestDatabase(t, 'users');
  const env = { DATABASE_URL: db.url };
  await db.pool.query(
    "insert into users (email, username, password) select 'old' || g || '@x.io', 'old' || g, 'h' from generate_series(1, 3) g",
  );
  const res = await runCli(['install'], { env });
  t.equal(res.code, 0, res.stderr);
  t.match(res.stdout, /^Installed suekk-sync on public\.users/);
  t.match(
    res.stdout,
    /\nThe 3 users already in public\.users were not sent: capture sends changes made from now on\. Send them with `suekk-sync resync --all`\.\n$/,
    'the last line: how many, and the command',
  );
  const { rows } = await db.pool.query('select count(*)::int as n from suekk_sync.event_log');
  t.same(rows, [{ n: 0 }], 'indeed nothing was sent for them');

  const again = await runCli(['install'], { env });
  t.equal(again.code, 0, again.stderr);
  t.notMatch(again.stdout, /not sent|resync/, 'a repeat install started nothing new');

  const empty = await createTestDatabase(t, 'users');
  const fresh = await runCli(['install'], { env: { DATABASE_URL: empty.url } });
  t.match(fresh.stdout, /\npublic\.users has no users yet; every change from now on is sent\.\n$/);
});

t.test('install after an uninstall warns that changes made meanwhile were not captured', async (t) => {
  const db = await createTestDatabase(t);
  const env = { DATABASE_URL: db.url };
  t.equal((await runCli(['uninstall'], { env })).code, 0);
  await db.pool.query("insert into users (email, username, password) values ('gap@x.io', 'gap', 'h')");
  const res = await runCli(['install'], { env });
  t.equal(res.code, 0, res.stderr);
  t.match(
    res.stdout,
    /\nWarning: capture was off since `suekk-sync uninstall`, so changes made to public\.users meanwhile were not captured; `suekk-sync resync --all` sends the current state of its 1 user\.\n$/,
  );
});

t.test(
  'uninstall: a dry run needs no --force, the refusal suggests what works, --drop-events counts what it discards',
  async (t) => {
    const db = await createTestDatabase(t);
    const env = { DATABASE_URL: db.url };
    const ids = await addUsers(db, 3);
    await markHeadFailed(db, (e) => e.userId === ids[0]);

    const dry = await runCli(['uninstall', '--dry-run'], { env });
    t.equal(dry.code, 0, dry.stderr);
    t.match(dry.stdout, /^-- suekk-sync uninstall --dry-run: nothing was changed\.\n/);
    t.match(
      dry.stdout,
      /\n-- Without --force this uninstall is refused: 3 events are not delivered yet; 2 pending, 1 failed: let a relay deliver the pending ones, and retry or skip the failed ones/,
    );
    t.match(dry.stdout, /\ndrop trigger if exists suekk_sync_capture on public\.users;\n/);
    t.match(dry.stdout, /\nupdate suekk_sync\.state set source_table = null, installed_at = null;\n$/);
    t.same(await isInstalled(db), { schema: true, triggers: 3 }, 'the dry run changed nothing');

    const refusedRun = await runCli(['uninstall'], { env });
    t.equal(refusedRun.code, 2);
    t.equal(
      refusedRun.stderr,
      'suekk-sync: 3 events are not delivered yet; 2 pending, 1 failed: let a relay deliver the pending ones, and retry or skip the failed ones (`suekk-sync tail-log --status failed` lists them), or pass --force to uninstall anyway (the events are kept for a relay to deliver, or discarded with --drop-events).\n',
    );
    // What the sentence suggests works: skip takes the failed event (a pending one it refuses).
    const skipped = await runCli(['skip', '--user', ids[0]!], { env });
    t.equal(skipped.code, 0, skipped.stderr);
    const pendingOnly = await runCli(['uninstall'], { env });
    t.match(
      pendingOnly.stderr,
      /^suekk-sync: 2 events are not delivered yet; let a relay deliver them \(`suekk-sync status` shows the backlog\), or pass --force/,
    );
    t.notMatch(pendingOnly.stderr, /skip/, 'no suggestion to skip what skip refuses');

    const dropDry = await runCli(['uninstall', '--drop-events', '--force', '--dry-run'], { env });
    t.match(dropDry.stdout, /\n-- Would discard 2 undelivered events\.\n/);
    t.match(dropDry.stdout, /\ndrop schema suekk_sync cascade;\n$/);

    const dropped = await runCli(['uninstall', '--drop-events', '--force'], { env });
    t.equal(dropped.code, 0, dropped.stderr);
    t.equal(
      dropped.stdout,
      "Uninstalled suekk-sync and dropped the suekk_sync schema with its events.\nDiscarded 2 undelivered events: the backend never got them; after a new install, `suekk-sync resync --all` sends every user's current state.\n",
    );
    t.same(await isInstalled(db), { schema: false, triggers: 0 });
  },
);

t.test('uninstall --force keeping the events says a running relay still delivers them', async (t) => {
  const db = await createTestDatabase(t);
  await addUsers(db, 1);
  const res = await runCli(['uninstall', '--force'], { env: { DATABASE_URL: db.url } });
  t.equal(res.code, 0, res.stderr);
  t.match(res.stdout, /\nKept 1 undelivered event: a running relay still delivers it\.\n$/);
});
