/**
 * A database without suekk-sync, as an operator meets it: every command that needs the schema says
 * the same sentence and exits 2, and status, whose job is to report, says it as its problem.
 */
import t from 'tap';
import { loadMigrations } from '../src/db/migrations.ts';
import { runCli } from './helpers/cli.ts';
import { createTestDatabase } from './helpers/db.ts';

const SENTENCE = 'suekk-sync: suekk-sync is not installed in this database; run `suekk-sync install` first.\n';

const COMMANDS = [
  ['relay'],
  ['tail-log'],
  ['pause'],
  ['resume'],
  ['push', 'alice'],
  ['resync', '--all'],
  ['resync', '--all', '--dry-run'],
  ['skip', '--user', 'alice'],
  ['retry', '--all-failed'],
  ['retry', '--waiting', '--dry-run'],
];

t.test('every command that needs the schema: one sentence, exit 2, no stack and no SQL error', async (t) => {
  const db = await createTestDatabase(t, 'users');
  const env = { DATABASE_URL: db.url, BACKEND_SYNC_URL: 'http://127.0.0.1:1/sync' };
  // Two at a time: each is a Node process with a compiler in front of it.
  const queue = [...COMMANDS];
  const run = async () => {
    for (let args = queue.shift(); args !== undefined; args = queue.shift()) {
      const res = await runCli(args, { env });
      t.equal(res.stderr, SENTENCE, `${args.join(' ')}: the sentence`);
      t.equal(res.code, 2, `${args.join(' ')}: exit 2`);
      t.equal(res.stdout, '', `${args.join(' ')}: nothing else`);
    }
  };
  await Promise.all([run(), run()]);

  const { rows } = await db.pool.query<{ schema: boolean }>(
    "select to_regnamespace('suekk_sync') is not null as schema",
  );
  t.same(rows, [{ schema: false }], 'nothing was created');
});

t.test('an older schema: the commands say to upgrade it, naming both versions', async (t) => {
  const db = await createTestDatabase(t, 'users');
  const latest = Math.max(...loadMigrations().map((m) => m.version));
  await db.pool.query('create schema suekk_sync');
  await db.pool.query('create table suekk_sync.migrations (version integer primary key, name text not null)');
  await db.pool.query("insert into suekk_sync.migrations values (1, '001_outbox.sql')");
  const res = await runCli(['retry', '--all-failed'], { env: { DATABASE_URL: db.url } });
  t.equal(res.code, 2);
  t.equal(
    res.stderr,
    `suekk-sync: The suekk_sync schema is at version 1 but this suekk-sync needs ${latest}; run \`suekk-sync install\` to upgrade it.\n`,
  );
});

t.test('a newer schema: every command and install say to upgrade suekk-sync, in the same sentence', async (t) => {
  const db = await createTestDatabase(t);
  const latest = Math.max(...loadMigrations().map((m) => m.version));
  const newer = latest + 1;
  await db.pool.query("insert into suekk_sync.migrations values ($1, 'from-a-newer-suekk-sync.sql')", [newer]);
  const sentence = `suekk-sync: The suekk_sync schema is at version ${newer}, newer than this suekk-sync knows (${latest}); upgrade suekk-sync.\n`;
  for (const args of [['retry', '--all-failed'], ['install']]) {
    const res = await runCli(args, { env: { DATABASE_URL: db.url } });
    t.equal(res.code, 2, `${args.join(' ')}: exit 2`);
    t.equal(res.stderr, sentence, `${args.join(' ')}: the sentence`);
  }
});
