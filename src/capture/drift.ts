/**
 * Whether the installed capture is still what `install` made of the state it recorded: the table's
 * primary key, the mapping checked against the table as it is now, and every generated function
 * and trigger compared with what generate.ts makes of that state today.
 *
 * The comparison asks Postgres rather than comparing SQL text: it runs the generated
 * `create or replace function` statements inside a transaction that is always rolled back and
 * compares `pg_get_functiondef` before and after, so a `BEGIN ATOMIC` body (stored parsed, not as
 * text) compares exactly and the check follows generate.ts whatever it generates. Triggers are
 * compared the same way on a temporary copy of the table, so the users table itself is never
 * locked beyond reading its definition.
 */
import type { SourceMapping } from '../config.ts';
import { UsageError } from '../errors.ts';
import { inTransaction, type PoolClient } from '../db/pool.ts';
import { CAPTURE_PINS_VIEW, captureStatements, GENERATED_FUNCTIONS } from './generate.ts';
import { checkMapping } from './mapping.ts';
import { resolveSourceTable, type SourceTable } from './source-table.ts';

export interface CaptureDrift {
  /** False when the comparison could not run; `warnings` says why. */
  checked: boolean;
  /** Generated objects that differ from what install would make now, e.g. `suekk_sync.user_payload`. */
  drifted: string[];
  /** Generated functions that are missing (besides those the caller already reports). */
  missing: string[];
  /** One sentence per drift: what drifted and what to run. */
  problems: string[];
  warnings: string[];
}

interface RecordedState {
  source_table: string | null;
  primary_key: string | null;
  mapping: SourceMapping | null;
  notify: boolean | null;
}

const PROBE_TABLE = 'suekk_sync_drift_probe';
/** The generated functions of the users row that the capture trigger calls on every write. */
const ROW_ACCESSORS = ['user_payload', 'user_key', 'user_is_live'];
const UNDEFINED_COLUMN = '42703';
const REINSTALL = 'run `suekk-sync install` to rebuild it from the recorded mapping';

/** The sentence of a UsageError without its advice, for use inside another sentence. */
function reason(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const cut = message.lastIndexOf('; ');
  return (cut > 0 ? message.slice(0, cut) : message).replace(/\.$/, '');
}

/**
 * Compares the installed capture with what install generates from the recorded state. The caller
 * has made sure the recorded table exists. `client` must not be inside a transaction: the check
 * runs in one of its own, always rolled back, so it changes nothing.
 */
export async function checkCaptureDrift(
  client: PoolClient,
  alreadyMissing: readonly string[] = [],
): Promise<CaptureDrift> {
  const drift: CaptureDrift = { checked: false, drifted: [], missing: [], problems: [], warnings: [] };
  // Always rolled back: planning and comparing create temporary objects.
  return inTransaction(
    client,
    async () => {
      try {
        // A writer that holds the table or an install that holds a function must not make status hang.
        await client.query("set local lock_timeout = '2s'");
        const { rows } = await client.query<RecordedState>(
          'select source_table, primary_key, mapping, notify from suekk_sync.state',
        );
        const state = rows[0];
        if (state?.source_table == null || state.mapping === null) return drift;
        const recordedTable = state.source_table;

        let table: SourceTable;
        try {
          table = await resolveSourceTable(client, recordedTable);
        } catch (err) {
          if (!(err instanceof UsageError)) throw err;
          drift.checked = true;
          drift.drifted.push(recordedTable);
          drift.problems.push(
            `The captured table no longer fits the installed capture (${reason(err)}); restore it as it was, or fix it and run \`suekk-sync install\`.`,
          );
          return drift;
        }
        if (state.primary_key !== null && table.primaryKey !== state.primary_key) {
          drift.drifted.push(`${table.display} primary key`);
          drift.problems.push(
            `The primary key of ${table.display} is now ${table.primaryKey}, but capture was installed keyed on ${state.primary_key}, so user ids no longer match what the backend has; run \`suekk-sync install\` to rebuild capture on the new key, then \`suekk-sync resync --all\`.`,
          );
        }

        const unreadable = await missingColumnRead(client, table);
        let mapping;
        try {
          mapping = await checkMapping(client, table, state.mapping);
        } catch (err) {
          if (!(err instanceof UsageError)) throw err;
          drift.checked = true;
          drift.drifted.push('mapping');
          drift.problems.push(
            unreadable === undefined
              ? `The installed mapping no longer fits ${table.display} (${reason(err)}), so capture may fail or send wrong values; change the column back, or fix the mapping and run \`suekk-sync install\`.`
              : `Every write to ${table.display} fails while its capture trigger reads a column the table no longer has (${reason(err)}); rename the column back, or put its new name in the mapping and run \`suekk-sync install\`.`,
          );
          return drift;
        }
        if (unreadable !== undefined) {
          drift.checked = true;
          drift.drifted.push('mapping');
          drift.problems.push(
            `Every write to ${table.display} fails while its capture trigger reads a column the table no longer has (${unreadable}); rename the column back, or run \`suekk-sync install\` with a mapping that fits the table.`,
          );
          return drift;
        }

        const options = { notify: state.notify ?? true, fireOnReplica: false };
        const generated = captureStatements(table, mapping, options);
        const functions = generated.filter((sql) => /^create or replace function /i.test(sql));
        await compareFunctions(client, functions, alreadyMissing, drift);
        await comparePins(
          client,
          generated.filter((sql) => sql.includes(CAPTURE_PINS_VIEW)),
          drift,
        );

        // The same triggers on a copy of the table: the generated statements name it instead.
        await client.query(`create temporary table ${PROBE_TABLE} (like ${table.qualified})`);
        const probe: SourceTable = { ...table, qualified: `pg_temp.${PROBE_TABLE}`, display: `pg_temp.${PROBE_TABLE}` };
        const triggers = captureStatements(probe, mapping, options).filter((sql) =>
          /^create or replace trigger /i.test(sql),
        );
        await compareTriggers(client, table, triggers, drift);
        drift.checked = true;
        return drift;
      } catch (err) {
        drift.warnings.push(
          `Could not compare the installed capture with what \`suekk-sync install\` generates (${reason(err)}); run \`suekk-sync status\` as the role that ran install to check for drift.`,
        );
        return drift;
      }
    },
    { rollback: true },
  );
}

/**
 * What PostgreSQL says when the installed accessors are planned against the table as it is now:
 * they read columns by name, so a column renamed under them fails every trigger call (and so every
 * write) with "column … not found in data type …". Undefined when they all plan.
 */
async function missingColumnRead(client: PoolClient, table: SourceTable): Promise<string | undefined> {
  const { rows } = await client.query<{ name: string }>(
    `select p.proname as name from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = 'suekk_sync' and p.proname = any($1) order by array_position($1, p.proname::text)`,
    [ROW_ACCESSORS],
  );
  for (const { name } of rows) {
    await client.query('savepoint suekk_sync_accessor');
    try {
      await client.query(`select suekk_sync.${name}(u) from ${table.qualified} u limit 0`);
      await client.query('release savepoint suekk_sync_accessor');
    } catch (err) {
      await client.query('rollback to savepoint suekk_sync_accessor');
      // Anything else (a permission, say) is not a missing column; the comparison below judges it.
      if ((err as { code?: string }).code === UNDEFINED_COLUMN) return (err as Error).message;
    }
  }
  return undefined;
}

async function functionDefinitions(client: PoolClient): Promise<Map<string, string>> {
  const { rows } = await client.query<{ name: string; def: string }>(
    `select 'suekk_sync.' || p.proname as name, pg_get_functiondef(p.oid) as def
       from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = 'suekk_sync' and p.proname = any($1)
      order by array_position($1, p.proname::text)`,
    [GENERATED_FUNCTIONS],
  );
  return new Map(rows.map((r) => [r.name, r.def]));
}

async function compareFunctions(
  client: PoolClient,
  statements: string[],
  alreadyMissing: readonly string[],
  drift: CaptureDrift,
): Promise<void> {
  const installed = await functionDefinitions(client);
  await client.query('savepoint suekk_sync_drift');
  for (const sql of statements) await client.query(sql);
  const generated = await functionDefinitions(client);
  await client.query('rollback to savepoint suekk_sync_drift');
  for (const [name, def] of generated) {
    const now = installed.get(name);
    if (now === undefined) {
      if (alreadyMissing.includes(name)) continue;
      drift.missing.push(name);
      drift.drifted.push(name);
      drift.problems.push(`The capture function ${name} is missing; ${REINSTALL}.`);
    } else if (now !== def) {
      drift.drifted.push(name);
      drift.problems.push(
        `The capture function ${name} differs from what \`suekk-sync install\` generates from the recorded mapping (edited by hand, or installed by another version), so changes may be captured wrongly; ${REINSTALL}.`,
      );
    }
  }
}

/** The view that pins what capture reads: gone or changed, a column capture needs can be dropped. */
async function comparePins(client: PoolClient, statements: string[], drift: CaptureDrift): Promise<void> {
  const definition = async () =>
    (await client.query<{ def: string | null }>('select pg_get_viewdef(to_regclass($1)) as def', [CAPTURE_PINS_VIEW]))
      .rows[0]!.def;
  const installed = await definition();
  await client.query('savepoint suekk_sync_drift');
  for (const sql of statements) await client.query(sql);
  const generated = await definition();
  await client.query('rollback to savepoint suekk_sync_drift');
  if (installed === generated) return;
  drift.drifted.push(CAPTURE_PINS_VIEW);
  drift.problems.push(
    `The view ${CAPTURE_PINS_VIEW} is ${installed === null ? 'missing' : 'not what `suekk-sync install` creates'}, so PostgreSQL no longer refuses to drop or retype a column capture reads (which would make every write to the table fail); ${REINSTALL}.`,
  );
}

async function compareTriggers(
  client: PoolClient,
  table: SourceTable,
  statements: string[],
  drift: CaptureDrift,
): Promise<void> {
  for (const sql of statements) await client.query(sql);
  // pg_get_triggerdef names the table schema-qualified, a temporary one as pg_temp.<name> from
  // PostgreSQL 15 on and by its session's own schema (pg_temp_3.<name>) on 14; the table is left
  // out of the comparison.
  const { rows } = await client.query<{ name: string; probe: boolean; def: string }>(
    `select t.tgname as name, t.tgrelid <> $1::oid as probe,
            replace(replace(pg_get_triggerdef(t.oid),
                    ' ON ' || format('%I.%I', n.nspname, c.relname) || ' ', ' ON <table> '),
                    ' ON ' || format('%I.%I', 'pg_temp', c.relname) || ' ', ' ON <table> ') as def
       from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
      where t.tgrelid in ($1::oid, $2::regclass) and not t.tgisinternal`,
    [table.oid, `pg_temp.${PROBE_TABLE}`],
  );
  const installed = new Map(rows.filter((r) => !r.probe).map((r) => [r.name, r.def]));
  for (const expected of rows.filter((r) => r.probe)) {
    const now = installed.get(expected.name);
    // A missing trigger is reported by status itself.
    if (now !== undefined && now !== expected.def) {
      drift.drifted.push(`trigger ${expected.name}`);
      drift.problems.push(
        `The capture trigger ${expected.name} on ${table.display} differs from what \`suekk-sync install\` creates (edited by hand?), so some changes may not be captured; run \`suekk-sync install\` to recreate it.`,
      );
    }
  }
}
