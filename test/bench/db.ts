/**
 * The bench's databases. Every scenario run gets a fresh database cloned from a template (CREATE
 * DATABASE … TEMPLATE copies files: a fraction of a second), so no run inherits another's bloat,
 * dead tuples or statistics. Names are `suekk_bench_<pid>_<random>_…`; all of them are dropped at
 * the end, on failure too, and a later run drops those left by a bench process that no longer
 * exists (killed with SIGKILL, say).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { install } from '../../src/capture/install.ts';
import { DEFAULT_SOURCE } from '../../src/config.ts';
import { createPool } from '../../src/db/pool.ts';

const ROOT = new URL('../../', import.meta.url);
export const BENCH_PREFIX = 'suekk_bench_';

export type TemplateKind =
  /** The reference users table only. */
  | 'users'
  /** users + `suekk-sync install` (NOTIFY on). */
  | 'suekk'
  /** users + `suekk-sync install --no-notify`. */
  | 'suekk_no_notify'
  /** users + graphile-worker's schema + a trigger function that adds a job per change. */
  | 'peer';

export function databaseUrl(adminUrl: string, name: string): string {
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  return u.toString();
}

/** Runs `work` on one short-lived connection. */
export async function withClient<T>(url: string, work: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, application_name: 'suekk-bench setup' });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

export class BenchDatabases {
  readonly prefix: string;
  private readonly templates = new Map<TemplateKind, Promise<string>>();
  private clones = 0;

  constructor(readonly adminUrl: string) {
    this.prefix = `${BENCH_PREFIX}${process.pid}_${randomBytes(3).toString('hex')}_`;
  }

  /** Drops databases of earlier bench processes that are gone (their pid is in the name). */
  async dropAbandoned(): Promise<string[]> {
    return withClient(this.adminUrl, async (c) => {
      const { rows } = await c.query<{ datname: string }>(`select datname from pg_database where datname like $1`, [
        `${BENCH_PREFIX}%`,
      ]);
      const dropped: string[] = [];
      for (const { datname } of rows) {
        const pid = Number(/^suekk_bench_(\d+)_/.exec(datname)?.[1]);
        if (!Number.isInteger(pid) || pid === process.pid || processAlive(pid)) continue;
        await c.query(`drop database if exists ${quoteIdent(datname)} with (force)`);
        dropped.push(datname);
      }
      return dropped;
    });
  }

  /** Every database this run created, templates included. */
  async dropAll(): Promise<void> {
    await withClient(this.adminUrl, async (c) => {
      const { rows } = await c.query<{ datname: string }>(
        `select datname from pg_database where datname like $1 order by datistemplate`,
        [`${this.prefix}%`],
      );
      for (const { datname } of rows) {
        await c.query(`alter database ${quoteIdent(datname)} is_template false`).catch(() => undefined);
        await c.query(`drop database if exists ${quoteIdent(datname)} with (force)`);
      }
    });
  }

  async drop(name: string): Promise<void> {
    await withClient(this.adminUrl, (c) => c.query(`drop database if exists ${quoteIdent(name)} with (force)`));
  }

  private template(kind: TemplateKind): Promise<string> {
    let made = this.templates.get(kind);
    if (!made) {
      made = this.buildTemplate(kind);
      this.templates.set(kind, made);
    }
    return made;
  }

  private async buildTemplate(kind: TemplateKind): Promise<string> {
    const name = `${this.prefix}tpl_${kind}`;
    await withClient(this.adminUrl, (c) => c.query(`create database ${quoteIdent(name)}`));
    const url = databaseUrl(this.adminUrl, name);
    await withClient(url, (c) => c.query(readFileSync(new URL('sql/examples/users.sql', ROOT), 'utf8')));
    if (kind === 'suekk' || kind === 'suekk_no_notify') {
      const pool = createPool(url, { max: 1, applicationName: 'suekk-bench setup' });
      try {
        await install(pool, { source: DEFAULT_SOURCE, notify: kind === 'suekk' });
      } finally {
        await pool.end();
      }
    } else if (kind === 'peer') {
      // Loaded only when the peer runs: the other scenarios work without graphile-worker installed.
      const { preparePeerDatabase } = await import('./peer-setup.ts');
      await preparePeerDatabase(url);
    }
    return name;
  }

  /** A fresh database from the template of `kind`; `label` names it for pg_stat_activity. */
  async clone(kind: TemplateKind, label: string): Promise<{ name: string; url: string }> {
    const template = await this.template(kind);
    const name = `${this.prefix}${label}_${++this.clones}`;
    await withClient(this.adminUrl, (c) =>
      c.query(`create database ${quoteIdent(name)} template ${quoteIdent(template)}`),
    );
    return { name, url: databaseUrl(this.adminUrl, name) };
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

// ---- seeding ----

/**
 * Inserts users `u<from>`…`u<to>` in one set-based statement. With `capture`, the trigger writes
 * a `created` event per user, as any writer's INSERT would. Without it the session runs as a
 * replica (`session_replication_role`), which the capture trigger (and the peer's) skips: the way
 * to have a million users without a million events to deliver first.
 */
export async function seedUsers(url: string, from: number, to: number, capture: boolean): Promise<void> {
  await withClient(url, async (c) => {
    if (!capture) await c.query('set session_replication_role = replica');
    await c.query(
      `insert into users (email, username, password, first_name, last_name, role)
       select 'u' || g || '@bench.test', 'u' || g, 'x', 'f', 'l', 'user' from generate_series($1::int, $2::int) g`,
      [from, to],
    );
    await c.query('analyze users');
  });
}

/** One payload-changing UPDATE of every user in [from, to]: one `updated` event each. */
export async function updateUsers(url: string, from: number, to: number, round: number): Promise<void> {
  await withClient(url, (c) =>
    c.query(
      `update users set first_name = 'v' || $3::int, updated_at = now()
        where lower(username) in (select 'u' || g from generate_series($1::int, $2::int) g)`,
      [from, to, round],
    ),
  );
}

/** Refreshes the planner's statistics after a bulk load, as autovacuum would soon after. */
export async function analyze(url: string, tables: string[]): Promise<void> {
  await withClient(url, async (c) => {
    for (const t of tables) await c.query(`vacuum analyze ${t}`);
  });
}
