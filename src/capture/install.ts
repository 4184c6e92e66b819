/**
 * install / uninstall: one transaction under an advisory lock, so two racing installs apply each
 * migration once, and a mistake anywhere leaves the database exactly as it was.
 */
import type { SourceMapping } from '../config.ts';
import { UsageError } from '../errors.ts';
import { inTransaction, withTransaction, type Pool, type PoolClient } from '../db/pool.ts';
import {
  appliedMigrations,
  installedSchemaVersion,
  LATEST_SCHEMA_VERSION,
  pendingMigrationStatements,
  schemaVersionProblem,
} from '../db/migrations.ts';
import { requireSupportedServer } from '../db/server-version.ts';
import { VERSION } from '../version.ts';
import { CAPTURE_TRIGGERS, RELAY_ALIVE_SECONDS } from '../db/schema.ts';
import { queueGauges } from '../db/outbox-queries.ts';
import { checkMapping } from './mapping.ts';
import {
  CAPTURE_PINS_VIEW,
  captureStatements,
  GENERATED_FUNCTIONS,
  type CaptureOptions,
  type InstalledParts,
} from './generate.ts';
import { quoteLiteral } from '../db/sql.ts';
import { resolveSourceTable } from './source-table.ts';

/** Serialises install/uninstall across processes (an arbitrary constant: "suekk" in ASCII). */
const INSTALL_LOCK_KEY = 0x7375656b6b;

export interface InstallOptions extends Partial<CaptureOptions> {
  source: SourceMapping;
  dryRun?: boolean;
  /** Change the schema even while relays of another version are alive. */
  force?: boolean;
}

export interface InstallResult {
  /** Every statement run (or, with dryRun, that would run), in order. */
  statements: string[];
  fromVersion: number;
  toVersion: number;
  table: string;
  /** Set when capture moved from another table. */
  movedFrom: string | undefined;
  notify: boolean;
  /**
   * Set when this install started capture on the table (not a repeat or an upgrade): the rows
   * already in it were never sent, and after an uninstall nothing changed meanwhile was captured.
   * Not set by a dry run.
   */
  captureStarted?: {
    /** new: first install, or moved to this table; reinstalled: capture was off after an uninstall. */
    kind: 'new' | 'reinstalled';
    /** Rows in the table when capture started. */
    existingRows: number;
  };
}

interface InstalledState {
  source_table: string | null;
  notify: boolean | null;
}

async function readInstalledState(client: PoolClient, schemaVersion: number): Promise<InstalledState | undefined> {
  if (schemaVersion === 0) return undefined;
  const { rows } = await client.query<InstalledState>('select source_table, notify from suekk_sync.state');
  return rows[0];
}

/** Drops whatever the generated functions and triggers were attached to (another table, or this one). */
async function dropCaptureStatements(client: PoolClient, table: string | null): Promise<string[]> {
  const statements: string[] = [];
  if (table !== null) {
    const exists = await client.query<{ oid: number | null }>('select to_regclass($1)::oid as oid', [table]);
    if (exists.rows[0]?.oid != null) {
      for (const trigger of CAPTURE_TRIGGERS) statements.push(`drop trigger if exists ${trigger} on ${table}`);
    }
  }
  statements.push(`drop view if exists ${CAPTURE_PINS_VIEW}`);
  // In GENERATED_FUNCTIONS' order: a function goes before the ones it calls.
  const fns = await client.query<{ signature: string }>(
    `select p.oid::regprocedure::text as signature from pg_proc p
       join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = 'suekk_sync' and p.proname = any($1)
      order by array_position($1, p.proname)`,
    [GENERATED_FUNCTIONS],
  );
  for (const f of fns.rows) statements.push(`drop function if exists ${f.signature}`);
  return statements;
}

/**
 * What an earlier install left that the new statements must replace: user_payload_from functions
 * (another mapping has another signature), and a user_payload returning another type.
 */
async function installedParts(client: PoolClient): Promise<InstalledParts> {
  const { rows } = await client.query<{ signature: string; name: string; returns: string }>(
    `select p.oid::regprocedure::text as signature, p.proname as name, p.prorettype::regtype::text as returns
       from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = 'suekk_sync' and p.proname in ('user_payload_from', 'user_payload')`,
  );
  return {
    payloadHelpers: rows.filter((r) => r.name === 'user_payload_from').map((r) => r.signature),
    payloadReturnsOtherType: rows.some((r) => r.name === 'user_payload' && r.returns !== 'text'),
  };
}

/**
 * A relay of another version delivering while its tables are rebuilt under it would fail, or worse,
 * act on a schema it does not know: a schema change waits until those relays are stopped.
 */
async function refuseUnderOtherRelays(client: PoolClient): Promise<void> {
  const { rows } = await client.query<{ version: string; n: number }>(
    `select version, count(*)::int as n from suekk_sync.relays
      where heartbeat_at > now() - make_interval(secs => $1) and version <> $2 group by version order by version`,
    [RELAY_ALIVE_SECONDS, VERSION],
  );
  if (rows.length === 0) return;
  const total = rows.reduce((n, r) => n + r.n, 0);
  const running = rows.map((r) => `${r.n} relay${r.n === 1 ? '' : 's'} of version ${r.version}`).join(' and ');
  throw new UsageError(
    `This install changes the suekk_sync schema while ${running} ${total === 1 ? 'is' : 'are'} still running against it; stop ${total === 1 ? 'it' : 'them'} first (${total === 1 ? 'it resumes' : 'they resume'} where ${total === 1 ? 'it' : 'they'} left off once upgraded), or pass --force.`,
  );
}

export async function install(pool: Pool, options: InstallOptions): Promise<InstallResult> {
  const client = await pool.connect();
  const dryRun = options.dryRun ?? false;
  const statements: string[] = [];
  const run = async (sql: string) => {
    statements.push(sql);
    if (!dryRun) await client.query(sql);
  };
  // The table capture began on: its rows are counted once the transaction commits, since counting
  // inside would keep writers waiting on the new triggers' lock.
  let startedOn: { table: string; kind: 'new' | 'reinstalled' } | undefined;
  try {
    const result = await inTransaction(
      client,
      async (): Promise<InstallResult> => {
        await requireSupportedServer(client);
        await client.query('select pg_advisory_xact_lock($1)', [INSTALL_LOCK_KEY]);
        const table = await resolveSourceTable(client, options.source.table);
        const mapping = await checkMapping(client, table, options.source);

        const applied = await appliedMigrations(client);
        const fromVersion = Math.max(0, ...applied);
        // An older schema is what install upgrades; a newer one only a newer suekk-sync can.
        if (fromVersion > LATEST_SCHEMA_VERSION) throw new UsageError(schemaVersionProblem(fromVersion));
        const previous = await readInstalledState(client, fromVersion);
        const notify = options.notify ?? true;
        const migrations = pendingMigrationStatements(applied);
        if (fromVersion > 0 && migrations.length > 0 && !options.force) await refuseUnderOtherRelays(client);
        for (const sql of migrations) await run(sql);

        // Generated parts are rebuilt every time; only the old table's triggers need dropping first
        // (create or replace handles the same table without a gap in capture).
        const movedFrom =
          previous?.source_table != null && previous.source_table !== table.qualified
            ? previous.source_table
            : undefined;
        if (movedFrom !== undefined) {
          for (const sql of await dropCaptureStatements(client, movedFrom)) await run(sql);
        } else if (previous?.source_table != null && mapping.updatedAtColumn === null) {
          await run('drop function if exists suekk_sync.user_updated_at(' + table.qualified + ')');
        }
        const installed: InstalledParts =
          movedFrom === undefined
            ? await installedParts(client)
            : { payloadHelpers: [], payloadReturnsOtherType: false };
        const capture = { notify, fireOnReplica: options.fireOnReplica ?? false };
        for (const sql of captureStatements(table, mapping, capture, installed)) await run(sql);
        await run(
          `update suekk_sync.state set source_table = ${quoteLiteral(table.qualified)}, primary_key = ${quoteLiteral(table.primaryKey)},
  mapping = ${quoteLiteral(JSON.stringify(options.source))}::jsonb, notify = ${notify},
  installed_at = now(), installed_version = ${quoteLiteral(VERSION)}`,
        );
        if (previous?.source_table == null || movedFrom !== undefined) {
          startedOn = {
            table: table.qualified,
            kind: previous === undefined || movedFrom !== undefined ? 'new' : 'reinstalled',
          };
        }
        return { statements, fromVersion, toVersion: LATEST_SCHEMA_VERSION, table: table.display, movedFrom, notify };
      },
      { rollback: dryRun },
    );
    if (startedOn !== undefined && !dryRun) {
      const { rows } = await client.query<{ n: string }>(`select count(*) as n from ${startedOn.table}`);
      result.captureStarted = { kind: startedOn.kind, existingRows: Number(rows[0]!.n) };
    }
    return result;
  } finally {
    client.release();
  }
}

/** Before the immutable outbox (schema 5), each event kept its own status. */
async function undeliveredBefore5(client: PoolClient): Promise<Undelivered> {
  const { rows } = await client.query<{ pending: number; failed: number }>(
    `select count(*) filter (where status = 'pending')::int as pending, count(*) filter (where status = 'failed')::int as failed
       from suekk_sync.events where status in ('pending', 'failed')`,
  );
  return rows[0]!;
}

interface Undelivered {
  pending: number;
  failed: number;
}

function events(n: number): string {
  return `${n} event${n === 1 ? '' : 's'}`;
}

/**
 * Why uninstall refuses, and what works instead: a relay delivers what is pending, and failed
 * events need retry or skip (skip takes only failed ones).
 */
function refusal({ pending, failed }: Undelivered): string {
  const total = pending + failed;
  const them = (n: number) => (n === 1 ? 'it' : 'them');
  const what =
    failed === 0
      ? `let a relay deliver ${them(pending)} (\`suekk-sync status\` shows the backlog)`
      : pending === 0
        ? `${failed === 1 ? 'it' : 'they'} failed: retry or skip ${them(failed)} (\`suekk-sync tail-log --status failed\` lists ${them(failed)})`
        : `${pending} pending, ${failed} failed: let a relay deliver the pending ones, and retry or skip the failed ones (\`suekk-sync tail-log --status failed\` lists them)`;
  return `${events(total)} ${total === 1 ? 'is' : 'are'} not delivered yet; ${what}, or pass --force to uninstall anyway (the events are kept for a relay to deliver, or discarded with --drop-events).`;
}

export interface UninstallOptions {
  dropEvents?: boolean;
  force?: boolean;
  dryRun?: boolean;
}

export interface UninstallResult {
  statements: string[];
  /** Pending and failed events: kept, or with dropEvents discarded. */
  undelivered: number;
  installed: boolean;
  /** A dry run that --force would be needed for: the sentence the real run would refuse with. */
  refusedWithoutForce?: string;
}

async function undeliveredCounts(client: PoolClient): Promise<Undelivered> {
  const gauges = await queueGauges(client);
  return { pending: gauges.backlog, failed: gauges.failed };
}

export async function uninstall(pool: Pool, options: UninstallOptions = {}): Promise<UninstallResult> {
  const statements: string[] = [];
  return withTransaction(
    pool,
    async (client) => {
      await client.query('select pg_advisory_xact_lock($1)', [INSTALL_LOCK_KEY]);
      const version = await installedSchemaVersion(client);
      if (version === 0) return { statements, undelivered: 0, installed: false };
      const counts = version >= 5 ? await undeliveredCounts(client) : await undeliveredBefore5(client);
      const undelivered = counts.pending + counts.failed;
      // A dry run changes nothing, so it needs no --force: it says what the real run would refuse.
      const refusedWithoutForce = undelivered > 0 && !options.force ? refusal(counts) : undefined;
      if (refusedWithoutForce !== undefined && !options.dryRun) throw new UsageError(refusedWithoutForce);
      const state = await readInstalledState(client, version);
      statements.push(...(await dropCaptureStatements(client, state?.source_table ?? null)));
      if (options.dropEvents) statements.push('drop schema suekk_sync cascade');
      else statements.push('update suekk_sync.state set source_table = null, installed_at = null');
      if (!options.dryRun) for (const sql of statements) await client.query(sql);
      return {
        statements,
        undelivered,
        installed: true,
        ...(refusedWithoutForce === undefined ? {} : { refusedWithoutForce }),
      };
    },
    { rollback: options.dryRun },
  );
}
