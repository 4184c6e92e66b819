/**
 * install refuses a PostgreSQL older than 14 in one sentence (exit 2). `npm test` and the matrix
 * on 14 and 18 see the server accepted; `npm run test:pg -- 13 test/server-version.test.ts` (in
 * CI) sees a real 13 refused.
 */
import t from 'tap';
import { UsageError } from '../src/errors.ts';
import { checkServerVersion, OLDEST_SUPPORTED_MAJOR, serverMajor } from '../src/db/server-version.ts';
import { runCli } from './helpers/cli.ts';
import { createTestDatabase } from './helpers/db.ts';
import { isInstalled } from './helpers/install.ts';

t.test('server_version_num: 14 and newer pass, older servers get the one-sentence refusal', async (t) => {
  t.same([90624, 130016, 140000, 140023, 150020, 180004].map(serverMajor), [9, 13, 14, 14, 15, 18]);
  for (const [num, version] of [
    [140000, '14.0'],
    [140023, '14.23'],
    [180004, '18.4'],
  ] as const) {
    t.doesNotThrow(() => checkServerVersion(num, version), `${version} is supported`);
  }
  for (const [num, version] of [
    [130016, '13.16'],
    [90624, '9.6.24'],
  ] as const) {
    t.throws(
      () => checkServerVersion(num, version),
      new UsageError(
        `The database runs PostgreSQL ${version}, and suekk-sync needs PostgreSQL 14 or newer; upgrade the server or install on another one.`,
      ),
      `${version} is refused`,
    );
  }
});

t.test('install on the test server: accepted from 14 on, refused with exit 2 and nothing changed before', async (t) => {
  const db = await createTestDatabase(t, 'users');
  const { rows } = await db.pool.query<{ num: string; version: string }>(
    "select current_setting('server_version_num') as num, current_setting('server_version') as version",
  );
  const major = serverMajor(Number(rows[0]!.num));
  const res = await runCli(['install'], { env: { DATABASE_URL: db.url } });
  if (major >= OLDEST_SUPPORTED_MAJOR) {
    t.equal(res.code, 0, res.stderr);
    t.same(await isInstalled(db), { schema: true, triggers: 3 });
    return;
  }
  t.equal(res.code, 2, `PostgreSQL ${rows[0]!.version} refused`);
  t.equal(
    res.stderr,
    `suekk-sync: The database runs PostgreSQL ${rows[0]!.version.split(' ')[0]}, and suekk-sync needs PostgreSQL 14 or newer; upgrade the server or install on another one.\n`,
  );
  t.same(await isInstalled(db), { schema: false, triggers: 0 });
});
