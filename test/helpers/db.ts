/**
 * A real PostgreSQL for every test file: SUEKK_TEST_DATABASE_URL when set, else the machine's
 * server at 127.0.0.1:5432 when it answers, else an embedded one started for the run. Each test
 * gets a fresh database cloned from a template (users table, optionally suekk-sync installed),
 * dropped when the test ends.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import pg from 'pg';
import { install } from '../../src/capture/install.ts';
import { DEFAULT_SOURCE } from '../../src/config.ts';
import { createPool, type Pool } from '../../src/db/pool.ts';
import { serverUrl } from './server-url.ts';

const ROOT = new URL('../../', import.meta.url);

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** Changes to the schema or the generator make new templates, so a stale one is never used. */
function templateHash(): string {
  const hash = createHash('sha256');
  for (const dir of ['sql/', 'sql/examples/', 'src/capture/', 'src/db/']) {
    for (const f of readdirSync(new URL(dir, ROOT)).sort()) {
      if (/\.(sql|ts)$/.test(f)) hash.update(f).update(readFileSync(new URL(dir + f, ROOT)));
    }
  }
  return hash.digest('hex').slice(0, 10);
}

export type TemplateKind = 'users' | 'installed';

async function ensureTemplate(adminUrl: string, kind: TemplateKind): Promise<string> {
  const name = `suekk_tpl_${kind}_${templateHash()}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query('select pg_advisory_lock(hashtext($1))', [name]);
    const exists = await admin.query('select 1 from pg_database where datname = $1', [name]);
    if (exists.rowCount === 0) {
      const building = `${name}_building`;
      await admin.query(`drop database if exists ${building}`);
      await admin.query(`create database ${building}`);
      const url = withDatabase(adminUrl, building);
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      await client.query(readFileSync(new URL('sql/examples/users.sql', ROOT), 'utf8'));
      await client.end();
      if (kind === 'installed') {
        const pool = createPool(url, { max: 1 });
        await install(pool, { source: DEFAULT_SOURCE });
        await pool.end();
      }
      // Renaming publishes the template only once it is complete.
      await admin.query(`alter database ${building} rename to ${name}`);
    }
    await admin.query('select pg_advisory_unlock(hashtext($1))', [name]);
  } finally {
    await admin.end();
  }
  return name;
}

export interface TestDatabase {
  url: string;
  name: string;
  pool: Pool;
}

interface Teardownable {
  teardown(fn: () => unknown): void;
}

/** A fresh database for one test, dropped at its teardown. */
export async function createTestDatabase(t: Teardownable, kind: TemplateKind = 'installed'): Promise<TestDatabase> {
  const adminUrl = await serverUrl();
  const template = await ensureTemplate(adminUrl, kind);
  const name = `suekk_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`create database ${name} template ${template}`);
  } finally {
    await admin.end();
  }
  const url = withDatabase(adminUrl, name);
  const pool = createPool(url, { max: 5, applicationName: 'suekk-sync test' });
  t.teardown(async () => {
    await pool.end();
    const drop = new pg.Client({ connectionString: adminUrl });
    await drop.connect();
    await drop.query(`drop database if exists ${name} with (force)`);
    await drop.end();
  });
  return { url, name, pool };
}
