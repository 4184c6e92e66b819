/**
 * `status`: is capture on, is anything stuck, is a relay alive — in one read-only snapshot, as the
 * `status --json` contract lays it out. `healthy` is false only for states that lose
 * or hold back changes without anyone acting (a backend outage among them); everything else worth
 * knowing is a warning.
 */
import { isDeepStrictEqual } from 'node:util';
import type { SourceMapping } from '../config.ts';
import { describeConnectError, inTransaction, type Pool, type PoolClient } from '../db/pool.ts';
import { installedSchemaVersion, LATEST_SCHEMA_VERSION, schemaVersionProblem } from '../db/migrations.ts';
import { checkCaptureDrift } from '../capture/drift.ts';
import { deliveredWithin, queueGauges, type QueueGauges } from '../db/outbox-queries.ts';
import { CAPTURE_TRIGGER, NOT_INSTALLED, RELAY_ALIVE_SECONDS } from '../db/schema.ts';
import { checkCaptureTriggers } from '../db/source.ts';
import { formatAge, formatDuration } from '../duration.ts';

/** Pending this long with no relay alive is a problem, not a moment's wait. */
const STALE_PENDING_SECONDS = 60;

/**
 * A live change still undelivered this long after capture, with relays running, is an outage
 * (`status --max-lag`): long enough to ride out a round's retries, short enough to page someone.
 */
export const DEFAULT_MAX_LAG_SECONDS = 300;

/** What the trigger calls on every write: one of them missing makes every write to users fail. */
const CAPTURE_FUNCTIONS = ['user_payload', 'user_key', 'user_is_live', 'capture_row', 'capture_truncate'];

export interface RelayInfo {
  host: string;
  pid: number;
  version: string;
  heartbeatAgeSeconds: number;
  alive: boolean;
}

export interface StatusReport extends Omit<QueueGauges, 'oldestLiveSeconds'> {
  healthy: boolean;
  /** Why `healthy` is false, each a sentence saying what to do. */
  problems: string[];
  /** Worth knowing, not unhealthy (paused, no relay yet, mapping edited since install). */
  warnings: string[];
  database: 'reachable';
  /** null when suekk-sync is not installed. */
  schemaVersion: number | null;
  latestSchemaVersion: number;
  /** The captured table, or null when capture is not installed. */
  table: string | null;
  trigger: { installed: boolean; enabled: boolean };
  /** Whether the trigger sends NOTIFY (install --no-notify turns it off); null when not installed. */
  notify: boolean | null;
  /** Capture functions the trigger needs that are missing (a DBA dropped one). */
  missingFunctions: string[];
  /** The config file's mapping differs from the installed one; null when no config file was read. */
  mappingChanged: boolean | null;
  /**
   * What no longer matches what install made of its recorded state (a function or trigger edited
   * by hand, the mapping no longer fitting the table); empty when all matches, null when it could
   * not be checked (not installed, table gone, or not allowed: see warnings).
   */
  drift: string[] | null;
  deliveredLast5m: number;
  relays: RelayInfo[];
  /**
   * The backend as the live relays see it: down while one of them has its breaker open (it then
   * probes on a fixed cadence). Null when no relay is alive to tell.
   */
  backend: BackendState | null;
  /**
   * What the backend answered to the most recent failed round of a user still waiting (an error
   * such as `connect ECONNREFUSED …`, or `HTTP 503`); null when no undelivered event has failed.
   */
  lastError: string | null;
  /** The --max-lag this report was judged by, in seconds. */
  maxLagSeconds: number;
}

/** What only an installed schema can tell: the capture, the outbox, the relays, the backend. */
type NeedsSchema =
  | 'schemaVersion'
  | 'table'
  | 'notify'
  | 'mappingChanged'
  | 'drift'
  | 'paused'
  | 'backlog'
  | 'oldestPendingSeconds'
  | 'failed'
  | 'parkedUsers'
  | 'deliveredLast5m'
  | 'relays'
  | 'backend'
  | 'lastError';

/** A reachable database without suekk-sync: the same keys, null for what it cannot know. */
export type NotInstalledReport = Omit<StatusReport, NeedsSchema | 'healthy'> & { healthy: false } & {
  [K in NeedsSchema]: null;
};

export interface BackendState {
  state: 'up' | 'down';
  /** Since when the relays have seen it down (ISO); null while it is up. */
  since: string | null;
  /** The relays are trying one waiting user's event every few seconds to see whether it is back. */
  probing: boolean;
}

export interface UnreachableReport {
  healthy: false;
  problems: string[];
  database: 'unreachable';
}

export interface StatusOptions {
  /** The configured mapping, to tell whether install needs running again. */
  source?: SourceMapping;
  /** For the unreachable message (the password is never shown). */
  databaseUrl?: string;
  /** A live change undelivered longer than this is an outage (default DEFAULT_MAX_LAG_SECONDS). */
  maxLagSeconds?: number;
}

export async function getStatus(
  pool: Pool,
  options: StatusOptions = {},
): Promise<StatusReport | NotInstalledReport | UnreachableReport> {
  let client: PoolClient;
  try {
    client = await pool.connect();
  } catch (err) {
    const why = options.databaseUrl
      ? describeConnectError(err, options.databaseUrl).message
      : `Cannot reach the database (${(err as Error).message}); check DATABASE_URL and that PostgreSQL is running.`;
    return { healthy: false, problems: [why], database: 'unreachable' };
  }
  try {
    // One snapshot, so the counts agree with each other.
    const report = await inTransaction(client, () => readStatus(client, options), {
      begin: 'begin isolation level repeatable read read only',
    });
    if (report.schemaVersion === null) return report;
    // Outside the snapshot: comparing needs a transaction that may write (it is rolled back).
    if (report.table !== null && report.schemaVersion === LATEST_SCHEMA_VERSION && report.tableExists) {
      const drift = await checkCaptureDrift(client, report.missingFunctions);
      report.problems.push(...drift.problems);
      report.warnings.push(...drift.warnings);
      report.drift = drift.checked ? drift.drifted : null;
      report.missingFunctions.push(...drift.missing);
      report.healthy = report.problems.length === 0;
    }
    const { tableExists: _, ...rest } = report;
    return rest;
  } finally {
    client.release();
  }
}

function notInstalled(maxLagSeconds: number): NotInstalledReport {
  return {
    healthy: false,
    problems: [NOT_INSTALLED],
    warnings: [],
    database: 'reachable',
    schemaVersion: null,
    latestSchemaVersion: LATEST_SCHEMA_VERSION,
    table: null,
    trigger: { installed: false, enabled: false },
    notify: null,
    missingFunctions: [],
    mappingChanged: null,
    drift: null,
    paused: null,
    backlog: null,
    oldestPendingSeconds: null,
    failed: null,
    parkedUsers: null,
    deliveredLast5m: null,
    relays: null,
    backend: null,
    lastError: null,
    maxLagSeconds,
  };
}

async function readStatus(
  db: PoolClient,
  options: StatusOptions,
): Promise<NotInstalledReport | (StatusReport & { tableExists: boolean })> {
  const maxLagSeconds = options.maxLagSeconds ?? DEFAULT_MAX_LAG_SECONDS;
  const schemaVersion = await installedSchemaVersion(db);
  if (schemaVersion === 0) return notInstalled(maxLagSeconds);
  const problems: string[] = [];
  const warnings: string[] = [];
  const versionProblem = schemaVersionProblem(schemaVersion);
  if (versionProblem !== undefined) problems.push(versionProblem);

  const { rows: stateRows } = await db.query<{
    table: string | null;
    exists: boolean;
    notify: boolean | null;
    mapping: (SourceMapping & Record<string, unknown>) | null;
  }>(
    `select source_table as table, to_regclass(source_table) is not null as exists, notify, mapping
       from suekk_sync.state`,
  );
  const state = stateRows[0]!;
  const table = state.table;

  const trigger = { installed: false, enabled: false };
  // Where the capture trigger is now: the recorded table, or the name it was renamed to.
  let capturedOn: string | null = null;
  if (table === null) {
    problems.push(
      'Capture is not installed on any table (it was uninstalled), so changes are not captured; run `suekk-sync install`.',
    );
  } else if (!state.exists) {
    const { rows } = await db.query<{ qualified: string }>(
      `select format('%I.%I', n.nspname, c.relname) as qualified
         from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
        where t.tgname = $1 and t.tgfoid = to_regprocedure('suekk_sync.capture_row()')`,
      [CAPTURE_TRIGGER],
    );
    capturedOn = rows[0]?.qualified ?? null;
    if (capturedOn !== null) {
      problems.push(
        `The captured table ${table} was renamed or moved to ${capturedOn}, so TRUNCATE on it fails and resync, push and retry look for the old name; set source.table to ${capturedOn} and run \`suekk-sync install\`, or rename it back.`,
      );
    } else {
      problems.push(
        `The captured table ${table} no longer exists, so changes are not captured; restore it, or point source.table at the users table and run \`suekk-sync install\`.`,
      );
    }
  } else {
    capturedOn = table;
  }
  if (capturedOn !== null) {
    const { missing, disabled } = await checkCaptureTriggers(db, capturedOn);
    trigger.installed = missing.length === 0;
    trigger.enabled = trigger.installed && disabled.length === 0;
    if (missing.length > 0) {
      problems.push(
        `The capture trigger${plural(missing.length)} ${missing.join(' and ')} ${missing.length === 1 ? 'is' : 'are'} missing on ${capturedOn}, so changes are not captured; run \`suekk-sync install\`.`,
      );
    }
    for (const name of disabled) {
      problems.push(
        `The capture trigger ${name} on ${capturedOn} is disabled, so changes are not captured; run \`alter table ${capturedOn} enable trigger ${name}\` (or \`suekk-sync install\`).`,
      );
    }
  }

  const { rows: fnRows } = await db.query<{ proname: string }>(
    `select p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = 'suekk_sync' and p.proname = any($1)`,
    [CAPTURE_FUNCTIONS],
  );
  const present = new Set(fnRows.map((r) => r.proname));
  const missingFunctions =
    table === null ? [] : CAPTURE_FUNCTIONS.filter((f) => !present.has(f)).map((f) => `suekk_sync.${f}`);
  if (missingFunctions.length > 0) {
    problems.push(
      `The capture function${plural(missingFunctions.length)} ${missingFunctions.join(', ')} ${missingFunctions.length === 1 ? 'is' : 'are'} missing, so every write to ${table} fails; run \`suekk-sync install\` to rebuild ${missingFunctions.length === 1 ? 'it' : 'them'}.`,
    );
  }

  let mappingChanged: boolean | null = null;
  // After an uninstall the mapping stays recorded, but nothing is installed to differ from.
  if (options.source !== undefined && state.mapping !== null && table !== null) {
    const { table: configuredTable, ...configured } = options.source;
    const { table: _installedTable, ...installed } = state.mapping;
    mappingChanged = (await resolveTable(db, configuredTable)) !== table || !isDeepStrictEqual(configured, installed);
    if (mappingChanged) {
      warnings.push(
        'The source mapping in the config file differs from the one installed; run `suekk-sync install` to apply it.',
      );
    }
  }

  const gauges = await queueGauges(db);
  const deliveredLast5m = await deliveredWithin(db, 300);
  const { rows: relayRows } = await db.query<{
    host: string;
    pid: number;
    version: string;
    age: number;
    down_since: Date | null;
  }>(
    `select host, pid, version, greatest(0, extract(epoch from now() - heartbeat_at))::float8 as age,
            backend_down_since as down_since
       from suekk_sync.relays order by heartbeat_at desc`,
  );
  const relays = relayRows.map((r) => ({
    host: r.host,
    pid: r.pid,
    version: r.version,
    heartbeatAgeSeconds: Math.round(r.age * 10) / 10,
    alive: r.age < RELAY_ALIVE_SECONDS,
  }));
  const alive = relays.filter((r) => r.alive).length;
  const downSince = relayRows
    .filter((r) => r.age < RELAY_ALIVE_SECONDS && r.down_since !== null)
    .map((r) => r.down_since!.getTime());
  const backend: BackendState | null =
    alive === 0
      ? null
      : downSince.length > 0
        ? { state: 'down', since: new Date(Math.min(...downSince)).toISOString(), probing: true }
        : { state: 'up', since: null, probing: false };
  const lastError = await lastDeliveryError(db);
  const lastErrorNote = lastError === null ? '' : ` (last error: ${lastError})`;
  if (backend?.state === 'down') {
    problems.push(
      `The backend looks down to the relays since ${backend.since}${lastErrorNote}; they probe it every few seconds and deliver the backlog as soon as it answers, so check the backend at BACKEND_SYNC_URL.`,
    );
  } else if (alive > 0 && !gauges.paused) {
    // Relays that never open their breaker (errors spaced out, a backend that answers too slowly)
    // still hold changes back: the age of the oldest live change is what tells.
    const lag = gauges.oldestLiveSeconds;
    if (lag !== null && lag > maxLagSeconds) {
      problems.push(
        `Delivery lags: a change captured ${formatAge(lag)} ago is still not delivered, more than --max-lag ${formatDuration(maxLagSeconds * 1000)}${lastErrorNote}; check that the backend at BACKEND_SYNC_URL answers, and the relays' logs.`,
      );
    }
  }

  if (gauges.failed > 0) {
    problems.push(
      `${count(gauges.failed, 'event')} failed and ${count(gauges.parkedUsers, 'user')} ${gauges.parkedUsers === 1 ? 'is' : 'are'} parked behind them; see why with \`suekk-sync tail-log --status failed\`, then \`suekk-sync retry --all-failed\` or \`suekk-sync skip --user <ref>\`.`,
    );
  }
  const oldest = gauges.oldestPendingSeconds;
  if (alive === 0 && oldest !== null && oldest > Math.min(STALE_PENDING_SECONDS, maxLagSeconds)) {
    problems.push(
      `${count(gauges.backlog, 'event')} ${gauges.backlog === 1 ? 'waits' : 'wait'} (the oldest for ${formatAge(oldest)}) and no relay is alive; start \`suekk-sync relay\`.`,
    );
  } else if (alive === 0) {
    warnings.push('No relay is alive; changes wait in the outbox until `suekk-sync relay` runs.');
  }
  if (gauges.paused) {
    warnings.push(
      `Delivery is paused${gauges.backlog > 0 ? ` with ${count(gauges.backlog, 'event')} waiting` : ''}; run \`suekk-sync resume\` to deliver again.`,
    );
  }

  return {
    healthy: problems.length === 0,
    problems,
    warnings,
    database: 'reachable',
    schemaVersion,
    latestSchemaVersion: LATEST_SCHEMA_VERSION,
    table,
    trigger,
    notify: table === null ? null : state.notify,
    missingFunctions,
    mappingChanged,
    drift: null,
    tableExists: state.exists,
    paused: gauges.paused,
    backlog: gauges.backlog,
    oldestPendingSeconds: oldest === null ? null : Math.round(oldest * 10) / 10,
    failed: gauges.failed,
    parkedUsers: gauges.parkedUsers,
    deliveredLast5m,
    relays,
    backend,
    lastError,
    maxLagSeconds,
  };
}

/**
 * What the backend answered to the most recent failed round of a user still waiting: rounds are
 * recorded on the stream's head, and the one due latest was rescheduled last. A parked user's
 * refusal counts only when no user waits for a round.
 */
async function lastDeliveryError(db: PoolClient): Promise<string | null> {
  const { rows } = await db.query<{ error: string | null; status: number | null }>(
    `select head_error as error, head_http_status as status from suekk_sync.streams
      where head_id is not null and (head_error is not null or head_http_status is not null)
      order by parked, due_at desc nulls last limit 1`,
  );
  const row = rows[0];
  if (row === undefined) return null;
  return row.error ?? (row.status === null ? null : `HTTP ${row.status}`);
}

/** The table a configured name means, spelled as install records it; null when there is none. */
async function resolveTable(db: PoolClient, name: string): Promise<string | null> {
  // to_regclass raises on a malformed name; the savepoint keeps the snapshot's transaction usable.
  await db.query('savepoint suekk_sync_table');
  try {
    const { rows } = await db.query<{ qualified: string | null }>(
      `select format('%I.%I', n.nspname, c.relname) as qualified from pg_class c
         join pg_namespace n on n.oid = c.relnamespace where c.oid = to_regclass($1)`,
      [name],
    );
    await db.query('release savepoint suekk_sync_table');
    return rows[0]?.qualified ?? null;
  } catch {
    await db.query('rollback to savepoint suekk_sync_table');
    return null;
  }
}

function plural(n: number): string {
  return n === 1 ? '' : 's';
}

function count(n: number, noun: string): string {
  return `${n} ${noun}${plural(n)}`;
}
