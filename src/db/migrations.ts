/**
 * Numbered migrations in sql/ (`NNN_name.sql`), each applied once and recorded in
 * suekk_sync.migrations. The caller holds the install advisory lock, so two racing installs apply
 * each file exactly once.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { UsageError } from '../errors.ts';
import type { PoolClient, Queryable } from './pool.ts';
import { NOT_INSTALLED } from './schema.ts';

const SQL_DIR = new URL('../../sql/', import.meta.url);

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export function loadMigrations(): Migration[] {
  return readdirSync(SQL_DIR)
    .filter((f) => /^\d{3}_[\w-]+\.sql$/.test(f))
    .sort()
    .map((file) => ({
      version: Number(file.slice(0, 3)),
      name: file,
      sql: readFileSync(new URL(file, SQL_DIR), 'utf8'),
    }));
}

export const LATEST_SCHEMA_VERSION = Math.max(0, ...loadMigrations().map((m) => m.version));

export const BOOTSTRAP_SQL = [
  'create schema if not exists suekk_sync',
  `create table if not exists suekk_sync.migrations (
  version integer primary key,
  name text not null,
  applied_at timestamptz not null default now()
)`,
];

/** The schema version installed, or 0 when suekk_sync is not installed. */
export async function installedSchemaVersion(client: Pick<PoolClient, 'query'>): Promise<number> {
  const { rows } = await client.query<{ exists: boolean }>(
    "select to_regclass('suekk_sync.migrations') is not null as exists",
  );
  if (!rows[0]?.exists) return 0;
  const version = await client.query<{ v: number | null }>('select max(version) as v from suekk_sync.migrations');
  return version.rows[0]?.v ?? 0;
}

/** The versions recorded as applied (none when suekk_sync is not installed). */
export async function appliedMigrations(client: Pick<PoolClient, 'query'>): Promise<Set<number>> {
  if ((await installedSchemaVersion(client)) === 0) return new Set();
  const { rows } = await client.query<{ version: number }>('select version from suekk_sync.migrations');
  return new Set(rows.map((r) => r.version));
}

/**
 * The statements that apply every migration not yet recorded, in version order. Every one, not
 * only those above the highest applied: a migration merged after a later one was installed still
 * runs.
 */
export function pendingMigrationStatements(applied: ReadonlySet<number>): string[] {
  const statements: string[] = [];
  if (applied.size === 0) statements.push(...BOOTSTRAP_SQL);
  for (const m of loadMigrations()) {
    if (applied.has(m.version)) continue;
    statements.push(m.sql.trim());
    statements.push(
      `insert into suekk_sync.migrations (version, name) values (${m.version}, '${m.name.replace(/'/g, "''")}')`,
    );
  }
  return statements;
}

/** What is wrong with an installed schema of this version for this suekk-sync, if anything. */
export function schemaVersionProblem(version: number): string | undefined {
  if (version < LATEST_SCHEMA_VERSION) {
    return `The suekk_sync schema is at version ${version} but this suekk-sync needs ${LATEST_SCHEMA_VERSION}; run \`suekk-sync install\` to upgrade it.`;
  }
  if (version > LATEST_SCHEMA_VERSION) {
    return `The suekk_sync schema is at version ${version}, newer than this suekk-sync knows (${LATEST_SCHEMA_VERSION}); upgrade suekk-sync.`;
  }
  return undefined;
}

/**
 * Refuses (a usage error, exit 2) unless the schema this suekk-sync was built for is installed: the
 * one check every command that reads or writes suekk_sync makes before it does, so none of them
 * fails later on a missing relation or a column another version does not have.
 */
export async function requireSchema(db: Queryable): Promise<void> {
  const version = await installedSchemaVersion(db);
  if (version === 0) throw new UsageError(NOT_INSTALLED);
  const problem = schemaVersionProblem(version);
  if (problem !== undefined) throw new UsageError(problem);
}
