/**
 * What install recorded about the users table, and finding a user by reference: id, then email,
 * then username, tried in that order.
 */
import { UsageError } from '../errors.ts';
import type { Queryable } from './pool.ts';
import { CAPTURE_TRIGGERS } from './schema.ts';
import { quoteIdent } from './sql.ts';

export interface InstalledSource {
  /** Quoted, schema-qualified table name. */
  table: string;
  primaryKey: string;
  mapping: { columns: Record<string, string>; softDeleteColumn: string | null; updatedAtColumn: string | null };
  notify: boolean;
}

export async function installedSource(db: Queryable): Promise<InstalledSource> {
  const { rows } = await db.query<{
    source_table: string | null;
    primary_key: string;
    mapping: InstalledSource['mapping'];
    notify: boolean;
  }>('select source_table, primary_key, mapping, notify from suekk_sync.state');
  const row = rows[0];
  if (!row?.source_table) {
    throw new UsageError('suekk-sync is not installed on any table in this database; run `suekk-sync install` first.');
  }
  return { table: row.source_table, primaryKey: row.primary_key, mapping: row.mapping, notify: row.notify };
}

export interface UserMatch {
  /** The primary key as text: the stream key. */
  userId: string;
  username: string;
  live: boolean;
}

/** The one user a reference names, or a usage error saying there is none or more than one. */
export async function resolveUserRef(db: Queryable, source: InstalledSource, ref: string): Promise<UserMatch> {
  const expr = (field: string) => `(${source.mapping.columns[field] ?? 'null'})::text`;
  const pk = `${quoteIdent(source.primaryKey)}::text`;
  const live =
    source.mapping.softDeleteColumn === null ? 'true' : `${quoteIdent(source.mapping.softDeleteColumn)} is null`;
  for (const [field, match] of [
    ['id', pk],
    ['email', expr('email')],
    ['username', expr('username')],
  ] as const) {
    const { rows } = await db.query<UserMatch>(
      `select ${pk} as "userId", coalesce(${expr('username')}, '') as username, ${live} as live
         from ${source.table} where ${match} = $1 limit 2`,
      [ref],
    );
    if (rows.length === 1) return rows[0]!;
    if (rows.length > 1) {
      throw new UsageError(`"${ref}" matches more than one user by ${field}; use the user's id instead.`);
    }
  }
  throw new UsageError(`No user matches "${ref}" by id, email or username; check the reference.`);
}

export interface CaptureTriggerCheck {
  missing: string[];
  /** Present but not firing for an ordinary writer's change. */
  disabled: string[];
}

/** Which capture triggers are missing on `table`, and which do not fire: the one rule status and the API share. */
export async function checkCaptureTriggers(db: Queryable, table: string): Promise<CaptureTriggerCheck> {
  const { rows } = await db.query<{ tgname: string; tgenabled: string }>(
    'select tgname, tgenabled from pg_trigger where tgrelid = to_regclass($1) and tgname = any($2)',
    [table, [...CAPTURE_TRIGGERS]],
  );
  const found = new Map(rows.map((r) => [r.tgname, r.tgenabled]));
  return {
    missing: CAPTURE_TRIGGERS.filter((name) => !found.has(name)),
    // 'O' fires in normal sessions, 'A' always; 'D' never and 'R' only under replication, so
    // neither captures an ordinary writer's change.
    disabled: [...found].filter(([, mode]) => mode !== 'O' && mode !== 'A').map(([name]) => name),
  };
}
