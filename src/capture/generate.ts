/**
 * The SQL install generates from the mapping: the payload function (the one definition the
 * trigger, resync and push all use), the key/liveness/updated-at accessors, the triggers, and a
 * view that pins what they read.
 *
 * The functions that take the users row are plain SQL functions with a string body, and none of
 * them is `BEGIN ATOMIC`: a parsed body that reads a field of the row makes Postgres record a
 * dependency on the table's row type, and Postgres then refuses `ALTER TABLE users ADD COLUMN …
 * DEFAULT …` and every `ALTER COLUMN … TYPE`, even of columns capture never reads, which would
 * break the auth service's own migrations. What they read is pinned instead by the view
 * suekk_sync.columns_read_by_capture, over the key, the soft-delete and updated-at columns and the
 * mapping's expressions: Postgres refuses to drop or retype exactly those columns (or drop a
 * function an expression calls), naming the view, instead of letting every later write to users
 * fail.
 *
 * The functions are written so that the planner inlines them into the trigger's expressions (a
 * single expression, no FROM): a SQL function that is not inlined is planned again in every
 * transaction that calls it, which cost the trigger more than the rest of its work together (see
 * the README).
 */
import { PAYLOAD_FIELDS } from '../config.ts';
import type { CheckedMapping, ReferencedColumn } from './mapping.ts';
import { fieldCast } from './mapping.ts';
import { quoteIdent, quoteLiteral, type SourceTable } from './source-table.ts';

export const CAPTURE_TRIGGER = 'suekk_sync_capture';
export const TRUNCATE_TRIGGER = 'suekk_sync_capture_truncate';
export const NOTIFY_CHANNEL = 'suekk_sync';
/**
 * The advisory lock of the doorbell, in the two-int key space (apart from any bigint key an
 * application uses): writers that leave the bell alone hold it shared until they commit, and a
 * relay that looks takes it exclusively to wait for them.
 */
export const DOORBELL_LOCK = '1937075051, 1';
/** Pins the columns and functions capture reads (see the header). */
export const CAPTURE_PINS_VIEW = 'suekk_sync.columns_read_by_capture';
/**
 * Every function install generates (all take the users row type, except the trigger functions,
 * user_payload_from and answer_doorbell). Dropped in this order: user_payload depends on
 * user_payload_from.
 */
export const GENERATED_FUNCTIONS = [
  'user_payload',
  'user_key',
  'user_is_live',
  'user_updated_at',
  'user_payload_from',
  'capture_row',
  'capture_truncate',
  'answer_doorbell',
] as const;

export interface CaptureOptions {
  notify: boolean;
  fireOnReplica: boolean;
}

/** What install found already in place, which the new statements must replace. */
export interface InstalledParts {
  /** Signatures (`regprocedure`) of user_payload_from functions of an earlier install. */
  payloadHelpers: string[];
}

/** `(select (u)."a" as "a", …) as s`: only the referenced fields, under their own names. */
function fieldsOf(columns: ReferencedColumn[]): string {
  if (columns.length === 0) return '(select) as s';
  return `(select ${columns.map((c) => `(u).${quoteIdent(c.name)} as ${quoteIdent(c.name)}`).join(', ')}) as s`;
}

/**
 * suekk_sync.user_payload(<users row>), the one payload definition.
 *
 * Inlinable form (the usual one): user_payload passes the referenced fields to
 * user_payload_from(<one parameter per referenced column, named after it>), whose body is the
 * mapping's expressions over those parameters. Both are a single expression without FROM, so the
 * planner inlines both into the caller's expression; user_payload still depends on exactly the
 * referenced columns, through `(u).<column>`.
 *
 * A parameter takes the default collation, where a column may have another; when one of the
 * referenced columns does, the payload keeps the original form (a FROM over the selected fields),
 * which keeps each column's collation but is planned on every call.
 */
function payloadStatements(row: string, mapping: CheckedMapping, installed: InstalledParts): string[] {
  const columns = mapping.referencedColumns;
  const build = `jsonb_build_object(
    ${PAYLOAD_FIELDS.map((f) => `'${f}', (${mapping.columns[f]})::${fieldCast(f)}`).join(',\n    ')})`;
  // Not inlinable (it has a FROM), so it may fix its search_path: the expressions then resolve as
  // they did when install checked them, not under the caller's path (the trigger's is pg_catalog).
  const fromForm = `create or replace function suekk_sync.user_payload(u ${row}) returns jsonb
language sql stable set search_path from current
as ${quoteLiteral(`select ${build}\n  from ${fieldsOf(columns)}`)}`;
  const inlinable = columns.every((c) => c.defaultCollation);
  const statements: string[] = [];
  // An earlier user_payload_from can only go once user_payload no longer calls it (and its
  // parameters may have other names, which create or replace cannot change).
  if (installed.payloadHelpers.length > 0 || !inlinable) statements.push(fromForm);
  for (const signature of installed.payloadHelpers) statements.push(`drop function if exists ${signature}`);
  if (inlinable) {
    // user_payload_from reads no table, so it may be BEGIN ATOMIC: parsed once, at install.
    statements.push(
      `create function suekk_sync.user_payload_from(${columns.map((c) => `${quoteIdent(c.name)} ${c.type}`).join(', ')}) returns jsonb
language sql stable
begin atomic
  select ${build};
end`,
      rowFunction(
        'user_payload',
        row,
        'jsonb',
        'stable',
        `suekk_sync.user_payload_from(${columns.map((c) => `(u).${quoteIdent(c.name)}`).join(', ')})`,
      ),
    );
  }
  return statements;
}

/**
 * A function of the users row whose body is one expression over its fields, kept as a string (see
 * the header for why not BEGIN ATOMIC). The expression names only schema-qualified functions and
 * built-in casts, so it means the same under any caller's search_path.
 */
function rowFunction(name: string, row: string, returns: string, volatility: string, expression: string): string {
  return `create or replace function suekk_sync.${name}(u ${row}) returns ${returns}
language sql ${volatility}
as ${quoteLiteral(`select ${expression}`)}`;
}

/**
 * The view that makes Postgres refuse to drop or retype what capture reads. Recreated on every
 * install (create or replace view cannot drop a column of an earlier mapping).
 */
function pinStatements(table: SourceTable, mapping: CheckedMapping): string[] {
  const columns = [
    `${table.primaryKeyQuoted} as captured_key`,
    ...(mapping.softDeleteColumn === null ? [] : [`${quoteIdent(mapping.softDeleteColumn)} as captured_soft_delete`]),
    ...(mapping.updatedAtColumn === null ? [] : [`${quoteIdent(mapping.updatedAtColumn)} as captured_updated_at`]),
    ...PAYLOAD_FIELDS.map((f) => `(${mapping.columns[f]}) as ${quoteIdent(f)}`),
  ];
  return [
    `drop view if exists ${CAPTURE_PINS_VIEW}`,
    `create view ${CAPTURE_PINS_VIEW} as\n  select ${columns.join(',\n         ')}\n  from ${table.qualified}`,
    `comment on view ${CAPTURE_PINS_VIEW} is 'What suekk-sync capture reads from ${table.display.replace(/'/g, "''")}: while it exists, PostgreSQL refuses to drop or retype these columns (run suekk-sync install after changing the mapping). Not meant to be queried.'`,
  ];
}

/**
 * Records one event: the outbox row, and the stream row made due (the generation bump that tells a
 * relay holding the stream that something arrived after its snapshot). With NOTIFY, the upsert also
 * says whether the stream was idle (its due time is the one just written) or held under a lease
 * that has run out: only then does anything need waking (see "NOTIFY only wakes an idle stream" in
 * the README), and then the doorbell decides whether this writer must notify.
 */
function recordEvent(key: string, action: string, payload: string, notify: boolean, indent: string): string {
  const lines = [
    `captured_at := clock_timestamp();`,
    `insert into suekk_sync.events (user_id, action, payload, source, application_name)`,
    `values (${key}, ${action}, ${payload}, 'trigger', current_setting('application_name', true));`,
    `-- Locks the stream row until commit: a relay deciding the stream is empty skips it meanwhile.`,
    `insert into suekk_sync.streams as s (user_id, next_attempt_at, priority)`,
    `values (${key}, captured_at, 0)`,
    `on conflict (user_id) do update`,
    `  set gen = s.gen + 1,`,
    `      -- A stream waiting for its next round stays waiting: order beats freshness.`,
    `      next_attempt_at = coalesce(s.next_attempt_at, excluded.next_attempt_at),`,
    `      priority = 0${notify ? '' : ';'}`,
  ];
  if (notify) {
    lines.push(
      `returning s.next_attempt_at = captured_at or s.locked_until < captured_at into woke;`,
      `if woke then`,
      ...ringDoorbell().map((l) => '  ' + l),
      `end if;`,
    );
  }
  return lines.map((l) => indent + l).join('\n');
}

/**
 * One notification per relay look, not one per woken stream (README, "One ring per look"). A
 * notifying commit holds a server-wide lock through its WAL flush; under load most writers find
 * the bell already rung by a writer that committed (or is committing) since a relay last looked,
 * and stay silent, holding the doorbell lock shared so that the relay's next look waits for their
 * commit. A writer that cannot take the lock (a relay is looking right now), finds nobody rang, or
 * finds the last ringer rolled back (its notification was never sent), rings itself.
 */
function ringDoorbell(): string[] {
  return [
    `if not pg_try_advisory_xact_lock_shared(${DOORBELL_LOCK}) then`,
    `  perform pg_notify('${NOTIFY_CHANNEL}', '');`,
    `else`,
    `  ringer := coalesce(pg_sequence_last_value('suekk_sync.wake_pending'), 0);`,
    `  -- Above this writer's own id: a concurrent ringer (ringing too is harmless), or a value`,
    `  -- restored from another cluster, which txid_status would reject as "in the future".`,
    `  if ringer = 0 or ringer > txid_current() or txid_status(ringer) = 'aborted' then`,
    `    perform setval('suekk_sync.wake_pending', txid_current());`,
    `    -- A constant payload: Postgres folds identical notifications into one per transaction.`,
    `    perform pg_notify('${NOTIFY_CHANNEL}', '');`,
    `  end if;`,
    `end if;`,
  ];
}

/**
 * What a relay runs before it relies on being rung: clear the bell, so the next writer that wakes a
 * stream rings, then wait for the writers that stayed silent while it was rung (they hold the
 * doorbell lock shared until they commit), so the claim that follows sees their streams. A long
 * writer transaction is not waited out: after the lock timeout the relay claims anyway and looks
 * again a little later.
 */
function answerDoorbellStatement(): string {
  return `create or replace function suekk_sync.answer_doorbell() returns boolean
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $doorbell$
begin
  perform setval('suekk_sync.wake_pending', 0);
  perform set_config('lock_timeout', '50ms', true);
  begin
    perform pg_advisory_xact_lock(${DOORBELL_LOCK});
  exception when lock_not_available then
    return false;
  end;
  return true;
end
$doorbell$`;
}

export function captureStatements(
  table: SourceTable,
  mapping: CheckedMapping,
  options: CaptureOptions,
  installed: InstalledParts = { payloadHelpers: [] },
): string[] {
  const row = table.qualified;
  const live = mapping.softDeleteColumn === null ? null : quoteIdent(mapping.softDeleteColumn);
  const woke = options.notify ? '\n  woke boolean;\n  ringer bigint;' : '';

  const statements = [
    ...payloadStatements(row, mapping, installed),
    rowFunction('user_key', row, 'text', 'immutable', `(u).${table.primaryKeyQuoted}::text`),
    rowFunction('user_is_live', row, 'boolean', 'immutable', live === null ? 'true' : `(u).${live} is null`),
  ];
  if (mapping.updatedAtColumn !== null) {
    statements.push(
      rowFunction('user_updated_at', row, 'timestamptz', 'stable', `(u).${quoteIdent(mapping.updatedAtColumn)}::timestamptz`),
    );
  }
  statements.push(...pinStatements(table, mapping));
  statements.push(
    `create or replace function suekk_sync.capture_row() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $capture$
declare
  old_key text;
  new_key text;
  old_live boolean;
  new_live boolean;
  -- The event to record, if any.
  ev_key text;
  ev_action text;
  ev_payload jsonb;
  captured_at timestamptz;${woke}
begin
  -- UPDATE first: the common case is tested first.
  if tg_op = 'UPDATE' then
    old_key := suekk_sync.user_key(old);
    new_key := suekk_sync.user_key(new);
    old_live := suekk_sync.user_is_live(old);
    new_live := suekk_sync.user_is_live(new);
    if old_key is distinct from new_key then
      -- Two ids, two streams: the old id is gone (recorded here, first), the new one appears.
      if old_live then
${recordEvent('old_key', "'deleted'", 'suekk_sync.user_payload(old)', options.notify, '        ')}
      end if;
      if new_live then
        ev_key := new_key;
        ev_action := 'created';
        ev_payload := suekk_sync.user_payload(new);
      end if;
    elsif old_live and new_live then
      ev_payload := suekk_sync.user_payload(new);
      if ev_payload is distinct from suekk_sync.user_payload(old) then
        ev_key := new_key;
        ev_action := 'updated';
      end if;
    elsif old_live then
      ev_key := new_key;
      ev_action := 'deleted';
      ev_payload := suekk_sync.user_payload(new);
    elsif new_live then
      ev_key := new_key;
      ev_action := 'created';
      ev_payload := suekk_sync.user_payload(new);
    end if;
  elsif tg_op = 'INSERT' then
    if suekk_sync.user_is_live(new) then
      ev_key := suekk_sync.user_key(new);
      ev_action := 'created';
      ev_payload := suekk_sync.user_payload(new);
    end if;
  elsif suekk_sync.user_is_live(old) then
    -- DELETE
    ev_key := suekk_sync.user_key(old);
    ev_action := 'deleted';
    ev_payload := suekk_sync.user_payload(old);
  end if;
  if ev_key is not null then
${recordEvent('ev_key', 'ev_action', 'ev_payload', options.notify, '    ')}
  end if;
  return null;
end
$capture$`,
    `create or replace function suekk_sync.capture_truncate() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $capture$
declare
  captured_at timestamptz := clock_timestamp();${woke}
begin
  -- BEFORE TRUNCATE still sees the rows: every live one is deleted, in key order, in one statement.
  with e as (
    insert into suekk_sync.events (user_id, action, payload, source, application_name)
    select suekk_sync.user_key(u), 'deleted', suekk_sync.user_payload(u), 'trigger', current_setting('application_name', true)
      from ${row} as u
     where suekk_sync.user_is_live(u)
     order by u.${table.primaryKeyQuoted}
    returning user_id
  )${
    options.notify
      ? `, streams as (
    insert into suekk_sync.streams as s (user_id, next_attempt_at, priority)
    select user_id, captured_at, 0 from e
    on conflict (user_id) do update
      set gen = s.gen + 1,
          next_attempt_at = coalesce(s.next_attempt_at, excluded.next_attempt_at),
          priority = 0
    returning s.next_attempt_at = captured_at or s.locked_until < captured_at as woke
  )
  select coalesce(bool_or(streams.woke), false) into woke from streams;
  if woke then
    perform pg_notify('${NOTIFY_CHANNEL}', '');
  end if;`
      : `
  insert into suekk_sync.streams as s (user_id, next_attempt_at, priority)
  select user_id, captured_at, 0 from e
  on conflict (user_id) do update
    set gen = s.gen + 1,
        next_attempt_at = coalesce(s.next_attempt_at, excluded.next_attempt_at),
        priority = 0;`
  }
  return null;
end
$capture$`,
    answerDoorbellStatement(),
    `create or replace trigger ${CAPTURE_TRIGGER}
  after insert or update or delete on ${row}
  for each row execute function suekk_sync.capture_row()`,
    `create or replace trigger ${TRUNCATE_TRIGGER}
  before truncate on ${row}
  for each statement execute function suekk_sync.capture_truncate()`,
  );
  const enable = options.fireOnReplica ? 'enable always' : 'enable';
  statements.push(
    `alter table ${row} ${enable} trigger ${CAPTURE_TRIGGER}`,
    `alter table ${row} ${enable} trigger ${TRUNCATE_TRIGGER}`,
  );
  // The writer's role needs nothing on suekk_sync: the trigger functions run as their owner.
  statements.push('revoke all on schema suekk_sync from public');
  return statements;
}
