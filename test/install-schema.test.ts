/** Install, part two: what the installed capture protects, other tables and mappings, uninstall and upgrades. */
import pg from 'pg';
import t from 'tap';
import { DEFAULT_SOURCE } from '../src/config.ts';
import { LATEST_SCHEMA_VERSION, loadMigrations } from '../src/db/migrations.ts';
import { createTestDatabase, withDatabase } from './helpers/db.ts';
import { runCli } from './helpers/cli.ts';
import { configFile, isInstalled, refused } from './helpers/install.ts';

/** How Postgres names what refused a change to a column capture reads. */
const PINNED = /view suekk_sync\.columns_read_by_capture/;

t.test('a mapped column cannot be dropped; an unmapped one can, and writes keep working', async (t) => {
  const db = await createTestDatabase(t);
  await refused(t, db.pool.query('alter table users drop column first_name'), PINNED);
  await refused(t, db.pool.query('alter table users alter column email type varchar(10)'), PINNED);
  await refused(t, db.pool.query('alter table users drop column deleted_at'), PINNED);
  await refused(t, db.pool.query('alter table users drop column updated_at'), PINNED);
  await db.pool.query('alter table users drop column last_login_at');
  await db.pool.query("insert into users (email, username, password) values ('w@x.io', 'writer', 'h')");
  const { rows } = await db.pool.query('select action from suekk_sync.event_log');
  t.same(rows, [{ action: 'created' }]);
});

t.test('the boolean field and the primary key are protected too; updates and deletes keep capturing', async (t) => {
  const db = await createTestDatabase(t);
  const { rows: added } = await db.pool.query<{ id: string }>(
    "insert into users (email, username, password) values ('k@x.io', 'keeper', 'h') returning id",
  );
  await refused(t, db.pool.query('alter table users alter column is_active type text'), PINNED);
  await refused(t, db.pool.query('alter table users drop column is_active'), PINNED);
  await refused(t, db.pool.query('alter table users alter column id type text'), PINNED);
  await refused(t, db.pool.query('alter table users drop column id'), PINNED);
  const { rows: types } = await db.pool.query<{ attname: string; type: string }>(
    "select attname, format_type(atttypid, atttypmod) as type from pg_attribute where attrelid = 'users'::regclass and attname in ('id', 'is_active') order by attname",
  );
  t.same(
    types,
    [
      { attname: 'id', type: 'uuid' },
      { attname: 'is_active', type: 'boolean' },
    ],
    'both columns as they were',
  );
  const id = added[0]!.id;
  await db.pool.query('update users set is_active = false where id = $1', [id]);
  await db.pool.query('update users set deleted_at = now() where id = $1', [id]);
  const { rows } = await db.pool.query<{ action: string; active: boolean }>(
    "select action, (payload->>'isActive')::boolean as active from suekk_sync.event_log where user_id = $1 order by id",
    [id],
  );
  t.same(rows, [
    { action: 'created', active: true },
    { action: 'updated', active: false },
    { action: 'deleted', active: false },
  ]);
});

t.test("the auth service's migrations of columns capture does not read work, and capture keeps up", async (t) => {
  const db = await createTestDatabase(t);
  const { rows: added } = await db.pool.query<{ id: string }>(
    "insert into users (email, username, password) values ('m@x.io', 'migrated', 'h') returning id",
  );
  const id = added[0]!.id;
  // What GORM, Rails or Django generate: a column with a default (a constant one, and a volatile one
  // that rewrites the table), a retyped column, a renamed one, a dropped one.
  await db.pool.query("alter table users add column plan text not null default 'free'");
  await db.pool.query('alter table users add column signup_token uuid not null default gen_random_uuid()');
  await db.pool.query('alter table users alter column last_login_at type timestamp');
  await db.pool.query('alter table users alter column password type varchar(200)');
  await db.pool.query('alter table users rename column created_at to registered_at');
  await db.pool.query('alter table users drop column signup_token');
  // A mapped column's type still cannot change.
  await refused(t, db.pool.query('alter table users alter column username type varchar(20)'), PINNED);

  await db.pool.query("update users set plan = 'pro' where id = $1", [id]);
  await db.pool.query("update users set first_name = 'Mig' where id = $1", [id]);
  await db.pool.query("insert into users (email, username, password, plan) values ('n@x.io', 'newer', 'h', 'team')");
  const { rows } = await db.pool.query<{ action: string; payload: Record<string, unknown> }>(
    'select action, payload from suekk_sync.event_log order by id',
  );
  t.same(
    rows.map((r) => [r.action, r.payload.username, r.payload.displayName]),
    [
      ['created', 'migrated', 'migrated'],
      ['updated', 'migrated', 'Mig'],
      ['created', 'newer', 'newer'],
    ],
    'a change to an unread column alone is no event; every other change is captured',
  );
  const status = await runCli(['status', '--json'], { env: { DATABASE_URL: db.url } });
  t.match(JSON.parse(status.stdout), { drift: [] }, 'nothing drifted');
});

t.test('a writer role with rights on users only can still write users', async (t) => {
  const db = await createTestDatabase(t);
  const role = `suekk_writer_${db.name.slice(-8)}`;
  await db.pool.query(`create role ${role} login`);
  await db.pool.query(`grant select, insert, update, delete, truncate on users to ${role}`);
  const writer = new pg.Client({ connectionString: withDatabase(db.url, db.name).replace('postgres@', `${role}@`) });
  await writer.connect();
  try {
    await writer.query("insert into users (email, username, password) values ('ro@x.io', 'ro', 'h')");
    await writer.query("update users set first_name = 'R'");
    await writer.query('delete from users');
    await t.rejects(writer.query('select * from suekk_sync.event_log'), /permission denied/);
  } finally {
    await writer.end();
    await db.pool.query(`revoke all on users from ${role}`);
    await db.pool.query(`drop role ${role}`);
  }
  const { rows } = await db.pool.query('select action from suekk_sync.event_log order by id');
  t.same(
    rows.map((r) => r.action),
    ['created', 'updated', 'deleted'],
  );
});

t.test('a table in another schema, mixed case, with its own mapping', async (t) => {
  const db = await createTestDatabase(t, 'users');
  await db.pool.query(`create schema "Auth";
    create table "Auth"."Accounts" (
      "AccountId" bigint generated always as identity primary key,
      mail text not null, handle text not null, "FullName" text, active boolean, removed timestamptz)`);
  const cfg = configFile({
    source: {
      table: '"Auth"."Accounts"',
      softDeleteColumn: 'removed',
      updatedAtColumn: null,
      columns: {
        id: '"AccountId"',
        email: 'mail',
        username: 'handle',
        displayName: 'coalesce("FullName", handle)',
        avatar: "''",
        role: "'member'",
        isActive: 'coalesce(active, true)',
      },
    },
  });
  const res = await runCli(['install', '--config', cfg], { env: { DATABASE_URL: db.url } });
  t.equal(res.code, 0, res.stderr);
  t.match(res.stdout, /Auth\.Accounts/);
  await db.pool.query(`insert into "Auth"."Accounts" (mail, handle) values ('q@x.io', 'quinn')`);
  await db.pool.query(`update "Auth"."Accounts" set removed = now()`);
  const { rows } = await db.pool.query('select user_id, action, payload from suekk_sync.event_log order by id');
  t.same(rows, [
    {
      user_id: '1',
      action: 'created',
      payload: {
        id: '1',
        email: 'q@x.io',
        username: 'quinn',
        displayName: 'quinn',
        avatar: '',
        role: 'member',
        isActive: true,
        action: 'created',
      },
    },
    {
      user_id: '1',
      action: 'deleted',
      payload: {
        id: '1',
        email: 'q@x.io',
        username: 'quinn',
        displayName: 'quinn',
        avatar: '',
        role: 'member',
        isActive: true,
        action: 'deleted',
      },
    },
  ]);
  // An unmapped column of that table can go; a mapped one cannot.
  await db.pool.query('alter table "Auth"."Accounts" drop column if exists nothing_here');
  await refused(t, db.pool.query('alter table "Auth"."Accounts" drop column "FullName"'), PINNED);

  // Moving capture back to public.users says so and leaves no trigger on the old table.
  const moved = await runCli(['install'], { env: { DATABASE_URL: db.url } });
  t.equal(moved.code, 0, moved.stderr);
  t.match(moved.stdout, /Capture moved from "Auth"\."Accounts" to public\.users/);
  const trig = await db.pool.query(
    `select tgrelid::regclass::text as rel from pg_trigger where tgname like 'suekk_sync%' order by 1`,
  );
  t.same(
    trig.rows.map((r) => r.rel),
    ['users', 'users', 'users'],
  );
  await db.pool.query('alter table "Auth"."Accounts" drop column "FullName"');
});

t.test('install --no-notify captures without notifying', async (t) => {
  const db = await createTestDatabase(t, 'users');
  const res = await runCli(['install', '--no-notify'], { env: { DATABASE_URL: db.url } });
  t.equal(res.code, 0, res.stderr);
  t.match(res.stdout, /NOTIFY off/);
  const listener = await db.pool.connect();
  const received: string[] = [];
  listener.on('notification', (n) => received.push(n.channel));
  await listener.query('listen suekk_sync');
  await db.pool.query("insert into users (email, username, password) values ('nn@x.io', 'nn', 'h')");
  await db.pool.query("update users set first_name = 'Idle'");
  await db.pool.query('truncate users');
  await new Promise((r) => setTimeout(r, 200));
  await listener.query('unlisten *');
  listener.release();
  t.same(received, []);
  const { rows } = await db.pool.query('select action from suekk_sync.event_log order by id');
  t.same(
    rows.map((r) => r.action),
    ['created', 'updated', 'deleted'],
  );
  const { rows: src } = await db.pool.query<{ src: string }>(
    "select string_agg(prosrc, ' ') as src from pg_proc where proname in ('capture_row', 'capture_truncate')",
  );
  t.notMatch(src[0]!.src, /pg_notify/, 'the trigger functions have no NOTIFY at all');
});

t.test('uninstall refuses while events are undelivered, unless --force; --drop-events drops the schema', async (t) => {
  const db = await createTestDatabase(t);
  await db.pool.query("insert into users (email, username, password) values ('u@x.io', 'uma', 'h')");
  const refused = await runCli(['uninstall'], { env: { DATABASE_URL: db.url } });
  t.equal(refused.code, 2);
  t.match(refused.stderr, /1 event is not delivered yet.*--force/);
  t.same(await isInstalled(db), { schema: true, triggers: 3 });
  const forced = await runCli(['uninstall', '--force'], { env: { DATABASE_URL: db.url } });
  t.equal(forced.code, 0, forced.stderr);
  t.same(await isInstalled(db), { schema: true, triggers: 0 });
  const fns = await db.pool.query(
    "select count(*)::int as n from pg_proc where pronamespace = 'suekk_sync'::regnamespace and proname like 'user_%'",
  );
  t.same(fns.rows, [{ n: 0 }]);
  await db.pool.query("update users set first_name = 'untracked'");
  const { rows } = await db.pool.query('select count(*)::int as n from suekk_sync.event_log');
  t.same(rows, [{ n: 1 }], 'no capture after uninstall; the old events are kept');
  const dropped = await runCli(['uninstall', '--drop-events', '--force'], { env: { DATABASE_URL: db.url } });
  t.equal(dropped.code, 0, dropped.stderr);
  t.same(await isInstalled(db), { schema: false, triggers: 0 });
  const again = await runCli(['uninstall'], { env: { DATABASE_URL: db.url } });
  t.match(again.stdout, /not installed/);
});

t.test('install on a schema-1 database upgrades it: migration 2, the new trigger, the events kept', async (t) => {
  const db = await createTestDatabase(t, 'users');
  // What an install of schema version 1 left: its migration and a trigger that calls record_event.
  const first = loadMigrations().find((m) => m.version === 1)!;
  await db.pool.query(`create schema suekk_sync;
    create table suekk_sync.migrations (version integer primary key, name text not null, applied_at timestamptz not null default now());
    ${first.sql}
    insert into suekk_sync.migrations (version, name) values (1, '${first.name}');
    create function suekk_sync.capture_row() returns trigger language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
    begin
      perform suekk_sync.record_event(new.id::text, 'created', jsonb_build_object('id', new.id::text), 'trigger', null, 0::smallint);
      perform pg_notify('suekk_sync', '');
      return null;
    end $$;
    create trigger suekk_sync_capture after insert on public.users for each row execute function suekk_sync.capture_row();
    update suekk_sync.state set source_table = 'public.users', primary_key = 'id', notify = true;`);
  await db.pool.query("insert into users (email, username, password) values ('old@x.io', 'old', 'h')");

  const res = await runCli(['install'], { env: { DATABASE_URL: db.url } });
  t.equal(res.code, 0, res.stderr);
  t.match(res.stdout, new RegExp(`schema version 1 → ${LATEST_SCHEMA_VERSION}`));
  const { rows: versions } = await db.pool.query('select version from suekk_sync.migrations order by version');
  t.same(
    versions,
    loadMigrations().map((m) => ({ version: m.version })),
  );
  const { rows: gone } = await db.pool.query<{ fn: string | null; checks: number }>(
    `select to_regprocedure('suekk_sync.record_event(text, text, jsonb, text, bigint, smallint)')::text as fn,
            (select count(*)::int from pg_constraint where conrelid = 'suekk_sync.events'::regclass and contype = 'c') as checks`,
  );
  t.same(gone, [{ fn: null, checks: 0 }], 'record_event and the CHECK constraints are gone');
  const { rows: fillfactor } = await db.pool.query(
    "select reloptions from pg_class where oid = 'suekk_sync.streams'::regclass",
  );
  t.same(fillfactor, [{ reloptions: ['fillfactor=70'] }]);

  // The new trigger: an update of the old user records the full payload.
  await db.pool.query("update users set first_name = 'Olde'");
  const { rows } = await db.pool.query<{ action: string; payload: Record<string, unknown> }>(
    'select action, payload from suekk_sync.event_log order by id',
  );
  t.same(
    rows.map((r) => r.action),
    ['created', 'updated'],
    'the event captured before the upgrade is kept',
  );
  t.match(rows[1]!.payload, { username: 'old', displayName: 'Olde', isActive: true });
});

t.test('install applies a migration recorded as missing even below the newest one applied', async (t) => {
  const db = await createTestDatabase(t);
  // As if 004 had been merged after a database got 005: unrecorded, and its changes not made.
  await db.pool.query(`delete from suekk_sync.migrations where version = 4;
    drop sequence suekk_sync.wake_pending`);
  const res = await runCli(['install'], { env: { DATABASE_URL: db.url } });
  t.equal(res.code, 0, res.stderr);
  const { rows } = await db.pool.query<{ migrations: number[]; bell: string | null }>(
    `select array(select version from suekk_sync.migrations order by version) as migrations,
            to_regclass('suekk_sync.wake_pending')::text as bell`,
  );
  t.same(rows[0], { migrations: loadMigrations().map((m) => m.version), bell: 'suekk_sync.wake_pending' });
  await db.pool.query("insert into users (email, username, password) values ('g@x.io', 'gap', 'h')");
  t.same(
    (await db.pool.query('select action from suekk_sync.events')).rows,
    [{ action: 'created' }],
    'and capture works',
  );
});

t.test('a changed mapping replaces the payload helper, also one with the same types under other names', async (t) => {
  const db = await createTestDatabase(t);
  const helpers = async () =>
    (
      await db.pool.query<{ signature: string }>(
        `select pg_get_function_identity_arguments(p.oid) as signature from pg_proc p
          where p.pronamespace = 'suekk_sync'::regnamespace and p.proname = 'user_payload_from'`,
      )
    ).rows.map((r) => r.signature);
  t.same(await helpers(), [
    'id uuid, email text, username text, first_name text, last_name text, avatar text, role text, is_active boolean',
  ]);
  // avatar from the password column instead: the same parameter types, one of them renamed.
  const same = configFile({
    source: { ...DEFAULT_SOURCE, columns: { ...DEFAULT_SOURCE.columns, avatar: 'password' } },
  });
  const res = await runCli(['install', '--config', same], { env: { DATABASE_URL: db.url } });
  t.equal(res.code, 0, res.stderr);
  t.same(await helpers(), [
    'id uuid, email text, username text, password text, first_name text, last_name text, role text, is_active boolean',
  ]);
  // displayName from last_name alone: first_name is no longer read, and may go.
  const fewer = configFile({
    source: { ...DEFAULT_SOURCE, columns: { ...DEFAULT_SOURCE.columns, displayName: 'coalesce(last_name, username)' } },
  });
  const again = await runCli(['install', '--config', fewer], { env: { DATABASE_URL: db.url } });
  t.equal(again.code, 0, again.stderr);
  t.same(await helpers(), [
    'id uuid, email text, username text, last_name text, avatar text, role text, is_active boolean',
  ]);
  await db.pool.query('alter table users drop column first_name');
  await refused(t, db.pool.query('alter table users drop column last_name'), PINNED);
  await db.pool.query(
    "insert into users (email, username, password, last_name) values ('m@x.io', 'mapped', 'h', 'Lastly')",
  );
  const { rows } = await db.pool.query<{ payload: Record<string, unknown> }>(
    'select payload from suekk_sync.event_log',
  );
  t.match(rows, [{ payload: { username: 'mapped', displayName: 'Lastly' } }]);
});

t.test(
  'a mapped column with its own collation keeps it: the payload function reads the fields in a FROM',
  async (t) => {
    const db = await createTestDatabase(t, 'users');
    await db.pool.query('alter table users alter column first_name type text collate "C"');
    const res = await runCli(['install'], { env: { DATABASE_URL: db.url } });
    t.equal(res.code, 0, res.stderr);
    const { rows: fns } = await db.pool.query<{ n: number; body: string }>(
      `select (select count(*)::int from pg_proc where pronamespace = 'suekk_sync'::regnamespace and proname = 'user_payload_from') as n,
            pg_get_functiondef('suekk_sync.user_payload'::regproc) as body`,
    );
    t.equal(fns[0]!.n, 0, 'no helper');
    t.match(fns[0]!.body, /from \(select/i);
    await db.pool.query(
      "insert into users (email, username, password, first_name) values ('c@x.io', 'coll', 'h', 'Cee')",
    );
    const { rows } = await db.pool.query<{ payload: Record<string, unknown> }>(
      'select payload from suekk_sync.event_log',
    );
    t.match(rows, [{ payload: { username: 'coll', displayName: 'Cee' } }]);
    await refused(t, db.pool.query('alter table users drop column first_name'), PINNED);
  },
);
