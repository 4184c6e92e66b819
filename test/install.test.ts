/** install / uninstall against a real database: mistakes change nothing, repeats are no-ops. */
import t from 'tap';
import { install } from '../src/capture/install.ts';
import { DEFAULT_SOURCE } from '../src/config.ts';
import { LATEST_SCHEMA_VERSION, loadMigrations } from '../src/db/migrations.ts';
import { createTestDatabase } from './helpers/db.ts';
import { runCli } from './helpers/cli.ts';
import { configFile, isInstalled, refused } from './helpers/install.ts';

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
  t.same(results.map((r) => r.toVersion), [1, 2, 3].map(() => LATEST_SCHEMA_VERSION));
  t.equal(results.filter((r) => r.fromVersion === 0).length, 1, 'exactly one applied the migrations');
  const { rows } = await db.pool.query('select version from suekk_sync.migrations order by version');
  t.same(rows, loadMigrations().map((m) => ({ version: m.version })));
});

t.test('a wrong expression exits 2 naming field, expression and Postgres, and changes nothing', async (t) => {
  const db = await createTestDatabase(t, 'users');
  const cfg = configFile({ source: { columns: { displayName: 'full_name' } } });
  const res = await runCli(['install', '--config', cfg], { env: { DATABASE_URL: db.url } });
  t.equal(res.code, 2);
  t.match(res.stderr, /source\.columns\.displayName = "full_name"/);
  t.match(res.stderr, /column "full_name" does not exist/);
  t.notMatch(res.stderr, /    at /, 'no stack trace');
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

