/**
 * Checks the column mapping against the real table before install changes anything, and learns
 * which columns the expressions read, so the payload function depends on exactly those.
 */
import { PAYLOAD_FIELDS, type PayloadField, type SourceMapping } from '../config.ts';
import { UsageError } from '../errors.ts';
import type { QueryConfig } from 'pg';
import type { PoolClient } from '../db/pool.ts';
import { quoteIdent } from '../db/sql.ts';
import { findColumn, type SourceTable } from './source-table.ts';

/**
 * A statement sent with the extended protocol (as a prepared statement), which refuses a second
 * statement smuggled into a mapping expression. pg supports the mode; its types do not name it.
 */
function extendedQuery(text: string): QueryConfig {
  return { text, values: [], queryMode: 'extended' } as QueryConfig;
}

const BOOLEAN_OID = 16;

/** A table column the mapping expressions read. */
export interface ReferencedColumn {
  name: string;
  /** Its type as SQL (no type modifier), to declare a function parameter of that type. */
  type: string;
  /** No collation, or the database default: a function parameter of its type behaves the same. */
  defaultCollation: boolean;
}

/** A column whose change can change what capture records: the UPDATE trigger fires on it. */
export interface WatchedColumn {
  name: string;
  /** Its type has no equality operator (json, say): the trigger compares its text form. */
  compareAsText: boolean;
}

export interface CheckedMapping {
  columns: Record<PayloadField, string>;
  /** Table columns the expressions reference, in table order. */
  referencedColumns: ReferencedColumn[];
  /** The key, the soft-delete column and the referenced columns: an UPDATE of none of them captures nothing. */
  watchedColumns: WatchedColumn[];
  softDeleteColumn: string | null;
  updatedAtColumn: string | null;
}

/** The SQL type each field is cast to; the body builder turns NULLs into "" and false. */
export function fieldCast(field: PayloadField): 'text' | 'boolean' {
  return field === 'isActive' ? 'boolean' : 'text';
}

export async function checkMapping(
  client: Pick<PoolClient, 'query'>,
  table: SourceTable,
  mapping: SourceMapping,
): Promise<CheckedMapping> {
  for (const field of PAYLOAD_FIELDS) {
    const expression = mapping.columns[field];
    // Extended protocol (a prepared statement) refuses a second statement smuggled into an
    // expression; the savepoint keeps the transaction usable after a failed check.
    await client.query('savepoint suekk_sync_check');
    try {
      const { fields } = await client.query(extendedQuery(`select (${expression}) from ${table.qualified} limit 0`));
      if (fields.length !== 1) throw new Error('it must be a single expression');
      // Text accepts any type; a text-to-boolean cast would only fail later, on a writer's row. A
      // bare null (a table without the column) has no type of its own and is sent as false.
      if (
        fieldCast(field) === 'boolean' &&
        fields[0]!.dataTypeID !== BOOLEAN_OID &&
        !/^\s*null\s*$/i.test(expression)
      ) {
        throw new Error('it must be a boolean expression');
      }
      await client.query('release savepoint suekk_sync_check');
    } catch (err) {
      await client.query('rollback to savepoint suekk_sync_check');
      throw new UsageError(
        `source.columns.${field} = ${JSON.stringify(expression)} does not work on ${table.display}: ${(err as Error).message}; fix that expression.`,
      );
    }
  }
  const softDeleteColumn =
    mapping.softDeleteColumn === null ? null : findColumn(table, mapping.softDeleteColumn, 'source.softDeleteColumn');
  const updatedAtColumn =
    mapping.updatedAtColumn === null ? null : findColumn(table, mapping.updatedAtColumn, 'source.updatedAtColumn');
  const referenced = await referencedColumns(client, table, mapping);
  const watched = [
    ...new Set([
      table.primaryKey,
      ...(softDeleteColumn === null ? [] : [softDeleteColumn]),
      ...referenced.map((c) => c.name),
    ]),
  ];
  return {
    columns: { ...mapping.columns },
    referencedColumns: referenced,
    watchedColumns: await watchedColumns(client, table, watched),
    softDeleteColumn,
    updatedAtColumn,
  };
}

/**
 * Whether `IS DISTINCT FROM` works on each column as the trigger's WHEN condition will use it:
 * Postgres resolves the operator exactly as it would there, so a type without equality (json) is
 * found by asking, and compared as text instead.
 */
async function watchedColumns(
  client: Pick<PoolClient, 'query'>,
  table: SourceTable,
  names: string[],
): Promise<WatchedColumn[]> {
  const watched: WatchedColumn[] = [];
  for (const name of names) {
    await client.query('savepoint suekk_sync_watch');
    try {
      await client.query(
        `select u.${quoteIdent(name)} is distinct from u.${quoteIdent(name)} from ${table.qualified} u limit 0`,
      );
      await client.query('release savepoint suekk_sync_watch');
      watched.push({ name, compareAsText: false });
    } catch {
      await client.query('rollback to savepoint suekk_sync_watch');
      watched.push({ name, compareAsText: true });
    }
  }
  return watched;
}

/**
 * Postgres itself says which columns an expression reads: a temporary view over the expressions
 * records a pg_depend row per column. The view is rolled back; nothing stays.
 */
async function referencedColumns(
  client: Pick<PoolClient, 'query'>,
  table: SourceTable,
  mapping: SourceMapping,
): Promise<ReferencedColumn[]> {
  const select = PAYLOAD_FIELDS.map((f) => `(${mapping.columns[f]}) as ${quoteIdent(f)}`).join(', ');
  await client.query('savepoint suekk_sync_deps');
  try {
    await client.query(
      extendedQuery(`create temporary view suekk_sync_mapping_deps as select ${select} from ${table.qualified}`),
    );
    const { rows } = await client.query<{ attname: string; type: string; default_collation: boolean }>(
      `select distinct a.attname, a.attnum, format_type(a.atttypid, null) as type,
              a.attcollation in (0, 'default'::regcollation) as default_collation
         from pg_depend d
         join pg_rewrite r on r.oid = d.objid and d.classid = 'pg_rewrite'::regclass
         join pg_attribute a on a.attrelid = d.refobjid and a.attnum = d.refobjsubid
        where r.ev_class = 'suekk_sync_mapping_deps'::regclass
          and d.refobjid = $1 and d.refobjsubid > 0
        order by a.attnum`,
      [table.oid],
    );
    return rows.map((r) => ({ name: r.attname, type: r.type, defaultCollation: r.default_collation }));
  } finally {
    await client.query('rollback to savepoint suekk_sync_deps');
  }
}
