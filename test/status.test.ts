/** `status` against a real database: what makes it unhealthy, its exit codes and the JSON contract. */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { DEFAULT_SOURCE } from '../src/config.ts';
import { formatStatus } from '../src/cli/commands/status.ts';
import { LATEST_SCHEMA_VERSION } from '../src/db/migrations.ts';
import { getStatus, type NotInstalledReport, type StatusReport, type UnreachableReport } from '../src/ops/status.ts';
import { runCli } from './helpers/cli.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { waitFor } from './helpers/receiver.ts';
import { addUsers, startTestRelay } from './helpers/relay.ts';
import { markDelivered, markHeadFailed } from './helpers/outbox.ts';
import { skip } from '../src/ops/retry.ts';

const CONTRACT_KEYS = [
  'healthy',
  'problems',
  'database',
  'schemaVersion',
  'table',
  'trigger',
  'notify',
  'paused',
  'backlog',
  'oldestPendingSeconds',
  'failed',
  'parkedUsers',
  'deliveredLast5m',
  'relays',
];

async function status(db: TestDatabase): Promise<StatusReport> {
  const report = await getStatus(db.pool);
  if (report.database !== 'reachable' || report.schemaVersion === null)
    throw new Error(`no status: ${report.problems.join(' ')}`);
  return report;
}

async function beat(db: TestDatabase, agoSeconds = 0): Promise<void> {
  await db.pool.query(
    `insert into suekk_sync.relays (id, host, pid, version, heartbeat_at)
     values ($1, 'relay-host', 4242, '0.1.0', now() - make_interval(secs => $2))`,
    [`relay-${agoSeconds}`, agoSeconds],
  );
}

t.test('a fresh install: healthy, exit 0, every contract key in --json', async (t) => {
  const db = await createTestDatabase(t);
  await addUsers(db, 2);
  await markDelivered(db, (e) => e.id === '1');
  const json = await runCli(['status', '--json'], { env: { DATABASE_URL: db.url } });
  t.equal(json.code, 0, json.stderr);
  const report = JSON.parse(json.stdout) as StatusReport;
  for (const key of CONTRACT_KEYS) t.ok(key in report, `has ${key}`);
  t.match(report, {
    healthy: true,
    problems: [],
    database: 'reachable',
    schemaVersion: LATEST_SCHEMA_VERSION,
    table: 'public.users',
    trigger: { installed: true, enabled: true },
    notify: true,
    paused: false,
    backlog: 1,
    failed: 0,
    parkedUsers: 0,
    deliveredLast5m: 1,
    relays: [],
    missingFunctions: [],
    mappingChanged: null,
    drift: [],
  });
  t.type(report.oldestPendingSeconds, 'number');
  t.match(report.warnings, [/No relay is alive/]);
  t.equal(json.stdout.trim().split('\n').length, 1, 'one object on one line');

  const human = formatStatus(report);
  t.match(human, /^healthy +yes$/m);
  t.match(human, /^trigger +installed, enabled$/m);
  t.match(human, /^capture +as installed$/m);
  t.match(human, /^backlog +1 pending, oldest \d+s$/m);
  t.match(human, /^delivered \(5m\) +1$/m);
  t.match(human, /Warnings:\n {2}- No relay is alive/);
});

t.test('a disabled trigger: unhealthy, exit 1, and the problem says how to enable it', async (t) => {
  const db = await createTestDatabase(t);
  await db.pool.query(
    'alter table users disable trigger suekk_sync_capture, disable trigger suekk_sync_capture_update',
  );
  // A config file whose mapping differs from the installed one adds a warning, not a problem.
  const dir = mkdtempSync(join(tmpdir(), 'suekk-status-'));
  const config = join(dir, 'suekk-sync.json');
  writeFileSync(config, JSON.stringify({ source: { columns: { displayName: 'username' } } }));
  const [json, human] = await Promise.all([
    runCli(['status', '--json'], { env: { DATABASE_URL: db.url } }),
    runCli(['--config', config, 'status'], { env: { DATABASE_URL: db.url } }),
  ]);
  t.equal(json.code, 1);
  const report = JSON.parse(json.stdout) as StatusReport;
  t.equal(report.healthy, false);
  t.same(report.trigger, { installed: true, enabled: false });
  t.match(report.problems, [
    /suekk_sync_capture on public\.users is disabled.*alter table public\.users enable trigger suekk_sync_capture/,
  ]);
  t.equal(human.code, 1);
  t.match(human.stdout, /^healthy +NO$/m);
  t.match(human.stdout, /^trigger +installed, DISABLED$/m);
  t.match(human.stdout, /Problems:\n {2}- The capture trigger suekk_sync_capture/);
  t.match(
    human.stdout,
    /Warnings:\n( {2}- .*\n)* {2}- The source mapping in the config file differs from the one installed; run `suekk-sync install`/,
  );
  t.equal(human.stderr, '', 'the table says it all; no error line');

  await db.pool.query('alter table users enable trigger suekk_sync_capture, enable trigger suekk_sync_capture_update');
  await db.pool.query('drop trigger suekk_sync_capture on users');
  const dropped = await status(db);
  t.same(dropped.trigger, { installed: false, enabled: false });
  t.match(dropped.problems, [/suekk_sync_capture is missing on public\.users.*suekk-sync install/]);
});

t.test('failed events, old pending events without a relay, missing functions: unhealthy', async (t) => {
  const db = await createTestDatabase(t);
  const [first] = await addUsers(db, 2);

  await db.pool.query("update suekk_sync.events set created_at = now() - interval '2 minutes'");
  let report = await status(db);
  t.equal(report.healthy, false);
  t.match(report.problems, [
    /2 events wait \(the oldest for 2m \d+s\) and no relay is alive; start `suekk-sync relay`/,
  ]);

  await beat(db, 30);
  report = await status(db);
  t.equal(report.healthy, false, 'a relay that stopped beating is not alive');
  t.match(report.relays, [{ host: 'relay-host', pid: 4242, version: '0.1.0', alive: false }]);
  t.ok(report.relays[0]!.heartbeatAgeSeconds >= 30);

  await beat(db, 0);
  report = await status(db);
  t.equal(report.healthy, true, 'old pending events with a live relay are its business');
  t.same(
    report.relays.map((r) => r.alive),
    [true, false],
    'the freshest first',
  );

  await markHeadFailed(db, (e) => e.userId === first);
  report = await status(db);
  t.equal(report.healthy, false);
  t.equal(report.failed, 1);
  t.equal(report.parkedUsers, 1);
  t.equal(report.backlog, 1);
  t.match(report.problems, [
    /1 event failed and 1 user is parked.*tail-log --status failed.*retry --all-failed.*skip --user/,
  ]);

  await skip(db.pool, { userRef: first! });
  await db.pool.query('drop function suekk_sync.user_payload(public.users)');
  report = await status(db);
  t.equal(report.healthy, false);
  t.same(report.missingFunctions, ['suekk_sync.user_payload']);
  t.match(report.problems, [
    /suekk_sync\.user_payload is missing, so every write to public\.users fails; run `suekk-sync install`/,
  ]);
});

t.test(
  'a hand-edited accessor, trigger function or trigger is drift: unhealthy, named, fixed by install',
  async (t) => {
    const db = await createTestDatabase(t);
    const env = { DATABASE_URL: db.url };
    // Still valid and still capturing, so nothing but the comparison can notice: avatar left out.
    await db.pool.query(
      `create or replace function suekk_sync.user_payload(u public.users) returns text language sql stable
     as $f$select '{"id":' || to_json((u).id::text)::text || ',"email":' || to_json((u).email)::text
       || ',"username":' || to_json((u).username)::text || ',"displayName":' || to_json((u).username)::text
       || ',"avatar":"","role":' || to_json((u).role)::text || ',"isActive":' || case when (u).is_active then 'true' else 'false' end$f$`,
    );
    // The trigger function without its NOTIFY, as a DBA might "optimise" it.
    const { rows } = await db.pool.query<{ src: string }>(
      "select prosrc as src from pg_proc where proname = 'capture_row'",
    );
    t.match(rows[0]!.src, /pg_notify/, 'the installed trigger function notifies');
    await db.pool.query(
      `create or replace function suekk_sync.capture_row() returns trigger language plpgsql security definer
     set search_path = pg_catalog, pg_temp as $f$${rows[0]!.src.replace(/perform pg_notify\([^)]*\);/, 'null;')}$f$`,
    );
    const [json, human] = await Promise.all([runCli(['status', '--json'], { env }), runCli(['status'], { env })]);
    t.equal(json.code, 1, 'drift is unhealthy');
    const report = JSON.parse(json.stdout) as StatusReport;
    t.same(report.drift, ['suekk_sync.user_payload', 'suekk_sync.capture_row']);
    t.same(report.trigger, { installed: true, enabled: true }, 'the trigger itself is fine');
    t.match(report.problems, [
      /^The capture function suekk_sync\.user_payload differs from what `suekk-sync install` generates from the recorded mapping .*; run `suekk-sync install` to rebuild it/,
      /^The capture function suekk_sync\.capture_row differs .*; run `suekk-sync install`/,
    ]);
    t.equal(report.problems.length, 2, 'one sentence per drifted function');
    t.equal(human.code, 1);
    t.match(human.stdout, /^capture +DRIFTED: suekk_sync\.user_payload, suekk_sync\.capture_row$/m);
    t.match(human.stdout, /Problems:\n {2}- The capture function suekk_sync\.user_payload differs/);

    // A trigger recreated by hand for inserts only.
    await db.pool.query(
      'create or replace trigger suekk_sync_capture after insert on users for each row execute function suekk_sync.capture_row()',
    );
    const trigger = await status(db);
    t.ok(trigger.drift?.includes('trigger suekk_sync_capture'), 'the narrowed trigger is drift');
    t.match(trigger.problems, [
      /./,
      /./,
      /^The capture trigger suekk_sync_capture on public\.users differs from what `suekk-sync install` creates.*run `suekk-sync install`/,
    ]);

    // The update trigger without its condition: every login would call the capture function again.
    await db.pool.query(
      'create or replace trigger suekk_sync_capture_update after update on users for each row execute function suekk_sync.capture_row()',
    );
    const unconditional = await status(db);
    t.ok(
      unconditional.drift?.includes('trigger suekk_sync_capture_update'),
      'an update trigger without its WHEN condition is drift',
    );

    // The view that pins what capture reads, dropped so that a mapped column could go.
    await db.pool.query('drop view suekk_sync.columns_read_by_capture');
    const unpinned = await status(db);
    t.ok(unpinned.drift?.includes('suekk_sync.columns_read_by_capture'), 'the missing view is drift');
    t.match(unpinned.problems, [
      /./,
      /./,
      /^The view suekk_sync\.columns_read_by_capture is missing, so PostgreSQL no longer refuses to drop or retype a column capture reads .*; run `suekk-sync install`/,
      /^The capture trigger suekk_sync_capture on/,
      /^The capture trigger suekk_sync_capture_update on/,
    ]);

    const installed = await runCli(['install'], { env });
    t.equal(installed.code, 0, installed.stderr);
    const repaired = await status(db);
    t.match(repaired, { healthy: true, drift: [], problems: [] }, 'install, as the sentence says, ends the drift');
  },
);

t.test('a retyped mapped column, a changed primary key and a renamed table are drift too', async (t) => {
  const db = await createTestDatabase(t);
  // Postgres refuses to drop or retype is_active while the pinning view and the UPDATE trigger's
  // condition read it; a DBA who dropped both first can drop the column and add it back as text.
  await db.pool.query('drop view suekk_sync.columns_read_by_capture');
  await db.pool.query('drop trigger suekk_sync_capture_update on users');
  await db.pool.query('alter table users drop column is_active');
  await db.pool.query("alter table users add column is_active text not null default 'yes'");
  const retyped = await status(db);
  t.equal(retyped.healthy, false);
  t.same(retyped.drift, ['mapping']);
  t.match(retyped.problems, [
    /^The capture trigger suekk_sync_capture_update is missing on public\.users/,
    /^The installed mapping no longer fits public\.users \(source\.columns\.isActive = "is_active" does not work on public\.users: it must be a boolean expression\), .*run `suekk-sync install`\.$/,
  ]);

  const keyed = await createTestDatabase(t);
  await keyed.pool.query(
    'alter table users drop constraint users_pkey, add constraint users_email_pkey primary key (email)',
  );
  const rekeyed = await status(keyed);
  t.ok(rekeyed.drift?.includes('public.users primary key'));
  t.match(rekeyed.problems, [
    /^The primary key of public\.users is now email, but capture was installed keyed on id.*run `suekk-sync install`.*resync --all/,
  ]);

  const renamed = await createTestDatabase(t);
  await renamed.pool.query('alter table users rename to accounts');
  const moved = await status(renamed);
  t.match(moved, { healthy: false, table: 'public.users', trigger: { installed: true, enabled: true }, drift: null });
  t.match(moved.problems, [
    /^The captured table public\.users was renamed or moved to public\.accounts, .*set source\.table to public\.accounts and run `suekk-sync install`, or rename it back\.$/,
  ]);
  await renamed.pool.query('alter table accounts rename to users');
  t.match(await status(renamed), { healthy: true, drift: [] }, 'renamed back: nothing drifted');
});

t.test('paused and a changed mapping are warnings, not problems', async (t) => {
  const db = await createTestDatabase(t);
  await beat(db);
  await db.pool.query('update suekk_sync.state set paused = true');
  await addUsers(db, 1);
  const same = await getStatus(db.pool, { source: DEFAULT_SOURCE });
  t.match(same, {
    healthy: true,
    paused: true,
    mappingChanged: false,
    warnings: [/paused with 1 event waiting; run `suekk-sync resume`/],
  });
  const spelledOtherwise = await getStatus(db.pool, { source: { ...DEFAULT_SOURCE, table: 'users' } });
  t.match(spelledOtherwise, { mappingChanged: false }, 'the same table by another name');

  const changed = await getStatus(db.pool, {
    source: { ...DEFAULT_SOURCE, columns: { ...DEFAULT_SOURCE.columns, avatar: "''" } },
  });
  t.match(changed, {
    healthy: true,
    mappingChanged: true,
    warnings: [/differs from the one installed; run `suekk-sync install`/],
  });
  const otherTable = await getStatus(db.pool, { source: { ...DEFAULT_SOURCE, table: 'suekk_sync.events' } });
  t.match(otherTable, { mappingChanged: true });
});

t.test('not installed, or an unreachable database: unhealthy, exit 1, still one JSON object', async (t) => {
  const bare = await createTestDatabase(t, 'users');
  const env = { DATABASE_URL: bare.url };
  const [json, human] = await Promise.all([runCli(['status', '--json'], { env }), runCli(['status'], { env })]);
  t.equal(json.code, 1, json.stderr);
  const notInstalled = JSON.parse(json.stdout) as NotInstalledReport;
  for (const key of CONTRACT_KEYS) t.ok(key in notInstalled, `has ${key}`);
  t.same(notInstalled.problems, ['suekk-sync is not installed in this database; run `suekk-sync install` first.']);
  t.match(notInstalled, {
    healthy: false,
    database: 'reachable',
    schemaVersion: null,
    trigger: { installed: false, enabled: false },
  });
  for (const key of [
    'paused',
    'backlog',
    'oldestPendingSeconds',
    'failed',
    'parkedUsers',
    'deliveredLast5m',
    'relays',
    'backend',
    'lastError',
    'notify',
  ]) {
    t.equal(notInstalled[key as keyof NotInstalledReport], null, `${key} is null: nothing to tell it from`);
  }
  t.equal(human.code, 1);
  t.match(human.stdout, /^schema version +not installed$/m);
  for (const label of [
    'paused',
    'backlog',
    'failed',
    'parked users',
    'delivered \\(5m\\)',
    'backend',
    'relays',
    'last error',
  ]) {
    t.match(human.stdout, new RegExp(`^${label} +—$`, 'm'), `${label} shows a dash, not an invented value`);
  }

  const unreachable = await runCli(['status', '--json'], {
    env: { DATABASE_URL: 'postgres://postgres:secret@127.0.0.1:1/nowhere' },
  });
  t.equal(unreachable.code, 1);
  const report = JSON.parse(unreachable.stdout) as UnreachableReport;
  t.same(Object.keys(report), ['healthy', 'problems', 'database']);
  t.match(report, {
    healthy: false,
    database: 'unreachable',
    problems: [/Cannot reach the database at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:1/],
  });
  t.notMatch(unreachable.stdout, /secret/, 'the password is not shown');
  t.match(formatStatus(report), /^database +unreachable$/m);
});

t.test('a backend outage is unhealthy: the relays see it down, and the problem names the last error', async (t) => {
  const db = await createTestDatabase(t);
  const env = { DATABASE_URL: db.url };
  // Nothing listens on port 1: every attempt is refused, as with a stopped backend.
  const { relay } = await startTestRelay(t, db, 'http://127.0.0.1:1/sync', {
    settings: {
      maxAttempts: 1,
      retryScheduleMs: [600_000],
      giveUpAfterMs: 3_600_000,
      breakerThreshold: 3,
      probeIntervalMs: 60_000,
    },
  });
  await addUsers(db, 9);
  await waitFor(() => relay.breakerOpen, 'the relay sees the backend down');
  const [json, human] = await Promise.all([runCli(['status', '--json'], { env }), runCli(['status'], { env })]);
  t.equal(json.code, 1, 'exit 1 during an outage');
  const report = JSON.parse(json.stdout) as StatusReport;
  t.match(report, { healthy: false, backend: { state: 'down' }, lastError: /ECONNREFUSED/ });
  t.match(report.problems, [
    /^The backend looks down to the relays since .* \(last error: connect ECONNREFUSED 127\.0\.0\.1:1\)/,
  ]);
  t.equal(human.code, 1);
  t.match(human.stdout, /^healthy +NO$/m);
  t.match(human.stdout, /^last error +connect ECONNREFUSED 127\.0\.0\.1:1$/m);
  t.match(human.stdout, /Problems:\n {2}- The backend looks down/);
});

t.test(
  'changes held back longer than --max-lag are an outage, whether or not the relays call the backend down',
  async (t) => {
    const db = await createTestDatabase(t);
    const env = { DATABASE_URL: db.url };
    // A breaker that never opens: each user's round fails once and waits ten minutes for the next.
    await startTestRelay(t, db, 'http://127.0.0.1:1/sync', {
      settings: { maxAttempts: 1, retryScheduleMs: [600_000], giveUpAfterMs: 3_600_000 },
    });
    await addUsers(db, 9);
    await waitFor(async () => {
      const { rows } = await db.pool.query<{ n: number }>(
        'select count(*)::int as n from suekk_sync.streams where head_error is not null',
      );
      return rows[0]!.n === 9;
    }, 'every user failed a round');
    await new Promise((r) => setTimeout(r, 1_100));

    const calm = await runCli(['status', '--json'], { env });
    t.equal(calm.code, 0, "within the default --max-lag of 5m: a moment's wait");
    t.match(JSON.parse(calm.stdout), {
      healthy: true,
      backend: { state: 'up' },
      lastError: /ECONNREFUSED/,
      maxLagSeconds: 300,
    });

    const [json, human] = await Promise.all([
      runCli(['status', '--json', '--max-lag', '1s'], { env }),
      runCli(['status', '--max-lag', '1s'], { env }),
    ]);
    t.equal(json.code, 1, json.stderr);
    const report = JSON.parse(json.stdout) as StatusReport;
    t.match(report, { healthy: false, backlog: 9, maxLagSeconds: 1 });
    t.match(report.problems, [
      /^Delivery lags: a change captured \d+s ago is still not delivered, more than --max-lag 1s \(last error: connect ECONNREFUSED 127\.0\.0\.1:1\); check that the backend at BACKEND_SYNC_URL answers/,
    ]);
    t.equal(human.code, 1);
    t.match(human.stdout, /^healthy +NO$/m);
    t.match(human.stdout, /Problems:\n {2}- Delivery lags: .*ECONNREFUSED/);

    const bad = await runCli(['status', '--max-lag', 'soon'], { env });
    t.equal(bad.code, 2);
    t.match(bad.stderr, /--max-lag must be a duration such as/);
  },
);

t.test('after uninstall: no invented mapping change, notify unknown, the problem says to install', async (t) => {
  const db = await createTestDatabase(t);
  const env = { DATABASE_URL: db.url };
  const dir = mkdtempSync(join(tmpdir(), 'suekk-status-'));
  const config = join(dir, 'suekk-sync.json');
  // The very mapping that was installed.
  writeFileSync(config, JSON.stringify({ source: DEFAULT_SOURCE }));
  const before = await runCli(['--config', config, 'status', '--json'], { env });
  t.match(JSON.parse(before.stdout), { mappingChanged: false });
  const uninstalled = await runCli(['uninstall'], { env });
  t.equal(uninstalled.code, 0, uninstalled.stderr);
  const [json, human] = await Promise.all([
    runCli(['--config', config, 'status', '--json'], { env }),
    runCli(['--config', config, 'status'], { env }),
  ]);
  const report = JSON.parse(json.stdout) as StatusReport;
  t.match(report, { healthy: false, table: null, mappingChanged: null, notify: null });
  t.match(report.problems, [/Capture is not installed on any table \(it was uninstalled\).*suekk-sync install/]);
  t.notMatch(human.stdout, /mapping in the config file differs/);
  t.match(human.stdout, /^notify +—$/m);
});

t.test('a renamed mapped column: status says every write fails, not that capture may', async (t) => {
  const db = await createTestDatabase(t);
  await db.pool.query('alter table users rename column avatar to avatar_url');
  await t.rejects(
    db.pool.query("insert into users (email, username, password) values ('a@example.com', 'a', 'x')"),
    /column "avatar" not found in data type/,
    'every write fails while the trigger reads the old name',
  );
  const res = await runCli(['status', '--json'], { env: { DATABASE_URL: db.url } });
  t.equal(res.code, 1);
  const report = JSON.parse(res.stdout) as StatusReport;
  t.same(report.drift, ['mapping']);
  t.match(report.problems, [
    /^Every write to public\.users fails while its capture trigger reads a column the table no longer has \(source\.columns\.avatar = "avatar" does not work on public\.users: column "avatar" does not exist\); rename the column back, or put its new name in the mapping and run `suekk-sync install`\.$/,
  ]);
  t.notMatch(res.stdout, /may fail/);

  // A renamed soft-delete column stops every write the same way.
  await db.pool.query('alter table users rename column avatar_url to avatar');
  await db.pool.query('alter table users rename column deleted_at to removed_at');
  const softDelete = await status(db);
  t.match(softDelete.problems, [
    /^Every write to public\.users fails while its capture trigger reads a column the table no longer has \(source\.softDeleteColumn/,
  ]);
});

t.test("the README's status example is what status prints today, at the current schema version", async (t) => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const example = /```\n\$ suekk-sync status\n([\s\S]*?)```/.exec(readme.replace(/^ {2}/gm, ''))?.[1];
  t.ok(example, 'the README shows a status');
  t.match(example, new RegExp(`^schema version  ${LATEST_SCHEMA_VERSION} \\(current\\)$`, 'm'));
  const db = await createTestDatabase(t);
  await beat(db);
  const labels = (text: string) =>
    text
      .split('\n')
      .map((line) => /^(\S+(?: \S+)*?) {2,}/.exec(line)?.[1])
      .filter((l) => l !== undefined);
  t.same(labels(example!), labels(formatStatus(await status(db))), 'the same rows in the same order');
});
