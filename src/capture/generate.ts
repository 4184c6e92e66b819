/**
 * The SQL install generates from the mapping: the payload function (the one definition the
 * trigger, resync and push all use), the key/liveness/updated-at accessors, the triggers, and a
 * view that pins what they read.
 *
 * The payload is rendered here, once, as the webhook body's bytes in the contract's key order:
 * the relay signs and sends the stored text as it is. `user_payload(u)` is that body without its
 * last key (`action`), so the trigger can tell a change that alters nothing sent from one that does.
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
 * transaction that calls it, which cost the trigger more than the rest of its work together.
 */
import { PAYLOAD_FIELDS } from '../config.ts';
import { NOTIFY_CHANNEL, CAPTURE_TRIGGER, PARTITION_COUNT, TRUNCATE_TRIGGER, UPDATE_TRIGGER } from '../db/schema.ts';
import type { CheckedMapping, ReferencedColumn } from './mapping.ts';
import { fieldCast } from './mapping.ts';
import { quoteIdent, quoteLiteral } from '../db/sql.ts';
import type { SourceTable } from './source-table.ts';

/** Pins the columns and functions capture reads (see the header). */
export const CAPTURE_PINS_VIEW = 'suekk_sync.columns_read_by_capture';
/**
 * Every function install generates (all take the users row type, except the trigger functions and
 * user_payload_from). Dropped in this order: user_payload depends on user_payload_from.
 */
export const GENERATED_FUNCTIONS = [
  'user_payload',
  'user_key',
  'user_is_live',
  'user_updated_at',
  'user_payload_from',
  'capture_row',
  'capture_truncate',
] as const;

export interface CaptureOptions {
  notify: boolean;
  fireOnReplica: boolean;
}

/** What install found already in place, which the new statements must replace. */
export interface InstalledParts {
  /** Signatures (`regprocedure`) of user_payload_from functions of an earlier install. */
  payloadHelpers: string[];
  /** An earlier user_payload returns another type (jsonb): create or replace cannot change that. */
  payloadReturnsOtherType: boolean;
}

const NOTHING_INSTALLED: InstalledParts = { payloadHelpers: [], payloadReturnsOtherType: false };

/** `(select (u)."a" as "a", …) as s`: only the referenced fields, under their own names. */
function fieldsOf(columns: ReferencedColumn[]): string {
  if (columns.length === 0) return '(select) as s';
  return `(select ${columns.map((c) => `(u).${quoteIdent(c.name)} as ${quoteIdent(c.name)}`).join(', ')}) as s`;
}

/**
 * The body without its closing `,"action":"…"}`, as one text expression over the mapping's
 * expressions: `{"id":"…","email":"…",…,"isActive":true`. to_json escapes a string exactly as
 * JSON.stringify does (webhook-body.test.ts holds them to it); NULL becomes "" and false, what the
 * reference backend's structs decode anyway.
 */
function payloadText(mapping: CheckedMapping): string {
  return PAYLOAD_FIELDS.map((f, i) => {
    const key = `${i === 0 ? '{' : ','}"${f}":`;
    const value =
      fieldCast(f) === 'boolean'
        ? `case when (${mapping.columns[f]})::boolean then 'true' else 'false' end`
        : `to_json(coalesce((${mapping.columns[f]})::text, ''))::text`;
    return `'${key}' || ${value}`;
  }).join('\n    || ');
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
  const build = payloadText(mapping);
  // Not inlinable (it has a FROM), so it may fix its search_path: the expressions then resolve as
  // they did when install checked them, not under the caller's path (the trigger's is pg_catalog).
  const fromForm = `create or replace function suekk_sync.user_payload(u ${row}) returns text
language sql stable set search_path from current
as ${quoteLiteral(`select ${build}\n  from ${fieldsOf(columns)}`)}`;
  const inlinable = columns.every((c) => c.defaultCollation);
  const statements: string[] = [];
  if (installed.payloadReturnsOtherType) statements.push(`drop function suekk_sync.user_payload(${row})`);
  // An earlier user_payload_from can only go once user_payload no longer calls it (and its
  // parameters may have other names, which create or replace cannot change).
  if (installed.payloadHelpers.length > 0 || !inlinable) statements.push(fromForm);
  for (const signature of installed.payloadHelpers) statements.push(`drop function if exists ${signature}`);
  if (inlinable) {
    // user_payload_from reads no table, so it may be BEGIN ATOMIC: parsed once, at install.
    statements.push(
      `create function suekk_sync.user_payload_from(${columns.map((c) => `${quoteIdent(c.name)} ${c.type}`).join(', ')}) returns text
language sql stable
begin atomic
  select ${build};
end`,
      rowFunction(
        'user_payload',
        row,
        'text',
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
 * Records one event, and nothing else: the outbox row goes straight into the current partition
 * (routing a row through the partitioned parent cost a single-row insert a third more), and the
 * relays find it by its id (see suekk_sync.tick); no stream row is written in the writer's
 * transaction. With NOTIFY, the doorbell decides whether this writer must notify.
 */
function recordEvent(key: string, action: string, body: string, notify: boolean, indent: string): string {
  const values = `(${key}, ${action}, ${body}, 'trigger', current_setting('application_name', true), part)`;
  const columns = '(user_id, action, body, source, application_name, part)';
  const lines = [`part := pg_sequence_last_value('suekk_sync.current_part');`, `case part`];
  for (let p = 0; p < PARTITION_COUNT; p++) {
    lines.push(`  when ${p} then insert into suekk_sync.events_p${p} ${columns} values ${values};`);
  }
  lines.push(`  else insert into suekk_sync.events ${columns} values ${values};`, `end case;`);
  if (notify) lines.push(...ringDoorbell());
  return lines.map((l) => indent + l).join('\n');
}

/**
 * One notification per relay look, not one per captured write. A notifying commit holds a
 * server-wide lock through its WAL flush; under load most writers find the bell already rung by a
 * writer that committed (or is committing) since a relay last looked, and stay silent: the relay
 * reads every event by id whatever woke it, and looks again while ids it has seen handed out are
 * still uncommitted. A writer that finds nobody rang, or that the last ringer rolled back (its
 * notification was never sent), rings itself.
 */
function ringDoorbell(): string[] {
  return [
    `ringer := coalesce(pg_sequence_last_value('suekk_sync.wake_pending'), 0);`,
    `-- Above this writer's own id: a concurrent ringer (ringing too is harmless), or a value`,
    `-- restored from another cluster, which txid_status would reject as "in the future".`,
    `if ringer = 0 or ringer > txid_current() or txid_status(ringer) = 'aborted' then`,
    `  perform setval('suekk_sync.wake_pending', txid_current());`,
    `  -- A constant payload: Postgres folds identical notifications into one per transaction.`,
    `  perform pg_notify('${NOTIFY_CHANNEL}', '');`,
    `end if;`,
  ];
}

/**
 * The UPDATE trigger's condition: some column capture reads changed. An update of anything else
 * (a login's last_login_at, a password, updated_at) never calls the capture function at all.
 */
function updateCondition(mapping: CheckedMapping): string {
  return mapping.watchedColumns
    .map((c) => {
      const name = quoteIdent(c.name);
      return c.compareAsText
        ? `old.${name}::text is distinct from new.${name}::text`
        : `old.${name} is distinct from new.${name}`;
    })
    .join(' or ');
}

const withAction = (payload: string, action: string) => `${payload} || ',"action":"' || ${action} || '"}'`;

export function captureStatements(
  table: SourceTable,
  mapping: CheckedMapping,
  options: CaptureOptions,
  installed: InstalledParts = NOTHING_INSTALLED,
): string[] {
  const row = table.qualified;
  const live = mapping.softDeleteColumn === null ? null : quoteIdent(mapping.softDeleteColumn);
  const ringer = options.notify ? '\n  ringer bigint;' : '';

  const statements = [
    ...payloadStatements(row, mapping, installed),
    rowFunction('user_key', row, 'text', 'immutable', `(u).${table.primaryKeyQuoted}::text`),
    rowFunction('user_is_live', row, 'boolean', 'immutable', live === null ? 'true' : `(u).${live} is null`),
  ];
  if (mapping.updatedAtColumn !== null) {
    statements.push(
      rowFunction(
        'user_updated_at',
        row,
        'timestamptz',
        'stable',
        `(u).${quoteIdent(mapping.updatedAtColumn)}::timestamptz`,
      ),
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
  ev_payload text;
  part bigint;${ringer}
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
${recordEvent('old_key', "'deleted'", withAction('suekk_sync.user_payload(old)', "'deleted'"), options.notify, '        ')}
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
${recordEvent('ev_key', 'ev_action', withAction('ev_payload', 'ev_action'), options.notify, '    ')}
  end if;
  return null;
end
$capture$`,
    `create or replace function suekk_sync.capture_truncate() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $capture$
declare${ringer || '\n  -- (no doorbell: installed with --no-notify)'}
begin
  -- The transaction's id before any event id: the relays' tickers count on every transaction
  -- that takes an event id having one already (see suekk_sync.tick).
  perform pg_current_xact_id();
  -- BEFORE TRUNCATE still sees the rows: every live one is deleted, in key order, in one statement.
  insert into suekk_sync.events (user_id, action, body, source, application_name)
  select suekk_sync.user_key(u), 'deleted', ${withAction('suekk_sync.user_payload(u)', "'deleted'")}, 'trigger',
         current_setting('application_name', true)
    from ${row} as u
   where suekk_sync.user_is_live(u)
   order by u.${table.primaryKeyQuoted};${
     options.notify
       ? `
  if found then
${ringDoorbell()
  .map((l) => '    ' + l)
  .join('\n')}
  end if;`
       : ''
   }
  return null;
end
$capture$`,
    `create or replace trigger ${CAPTURE_TRIGGER}
  after insert or delete on ${row}
  for each row execute function suekk_sync.capture_row()`,
    `create or replace trigger ${UPDATE_TRIGGER}
  after update on ${row}
  for each row when (${updateCondition(mapping)})
  execute function suekk_sync.capture_row()`,
    `create or replace trigger ${TRUNCATE_TRIGGER}
  before truncate on ${row}
  for each statement execute function suekk_sync.capture_truncate()`,
  );
  const enable = options.fireOnReplica ? 'enable always' : 'enable';
  for (const trigger of [CAPTURE_TRIGGER, UPDATE_TRIGGER, TRUNCATE_TRIGGER]) {
    statements.push(`alter table ${row} ${enable} trigger ${trigger}`);
  }
  // The writer's role needs nothing on suekk_sync: the trigger functions run as their owner.
  statements.push('revoke all on schema suekk_sync from public');
  return statements;
}
