/**
 * Reads what install needs to know about the users table from the catalog, so names with schemas,
 * quotes or mixed case resolve exactly as Postgres resolves them.
 */
import { UsageError } from '../errors.ts';
import type { Queryable } from '../db/pool.ts';
import { quoteIdent } from '../db/sql.ts';

export interface SourceTable {
  oid: number;
  /** Quoted and schema-qualified, safe to splice into SQL. */
  qualified: string;
  /** Display form: schema.name. */
  display: string;
  primaryKey: string;
  primaryKeyQuoted: string;
  columns: Map<string, string>; // column name → type
}

export async function resolveSourceTable(client: Queryable, table: string): Promise<SourceTable> {
  let oid: number | null;
  try {
    const found = await client.query<{ oid: number | null }>('select to_regclass($1)::oid as oid', [table]);
    oid = found.rows[0]?.oid ?? null;
  } catch (err) {
    throw new UsageError(
      `source.table ${JSON.stringify(table)} is not a valid table name (${(err as Error).message}); fix source.table.`,
    );
  }
  if (oid === null) {
    throw new UsageError(
      `The users table ${JSON.stringify(table)} does not exist in this database; fix source.table (or --table), quoting mixed-case names as in SQL.`,
    );
  }
  const rel = await client.query<{ qualified: string; display: string; relkind: string }>(
    `select format('%I.%I', n.nspname, c.relname) as qualified, n.nspname || '.' || c.relname as display, c.relkind
       from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = $1`,
    [oid],
  );
  const info = rel.rows[0]!;
  if (info.relkind !== 'r' && info.relkind !== 'p') {
    throw new UsageError(`${info.display} is not an ordinary table; point source.table at the users table itself.`);
  }
  const pk = await client.query<{ attname: string }>(
    `select a.attname from pg_index i
       join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
      where i.indrelid = $1 and i.indisprimary`,
    [oid],
  );
  if (pk.rows.length !== 1) {
    throw new UsageError(
      `${info.display} needs a single-column primary key to identify users (it has ${pk.rows.length === 0 ? 'none' : 'a composite one'}); add one before installing.`,
    );
  }
  const cols = await client.query<{ attname: string; type: string }>(
    `select attname, format_type(atttypid, atttypmod) as type from pg_attribute
      where attrelid = $1 and attnum > 0 and not attisdropped order by attnum`,
    [oid],
  );
  const primaryKey = pk.rows[0]!.attname;
  return {
    oid,
    qualified: info.qualified,
    display: info.display,
    primaryKey,
    primaryKeyQuoted: quoteIdent(primaryKey),
    columns: new Map(cols.rows.map((r) => [r.attname, r.type])),
  };
}

/** A configured column name, as written or in SQL's double-quoted form. */
export function findColumn(table: SourceTable, configured: string, setting: string): string {
  const unquoted = /^".*"$/.test(configured) ? configured.slice(1, -1).replace(/""/g, '"') : configured;
  if (table.columns.has(unquoted)) return unquoted;
  if (table.columns.has(unquoted.toLowerCase())) return unquoted.toLowerCase();
  throw new UsageError(
    `${setting} names column ${JSON.stringify(configured)}, which ${table.display} does not have; fix ${setting} (or set it to null).`,
  );
}
