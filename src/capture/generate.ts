/**
 * The SQL install generates from the mapping: the payload function (the one definition the
 * trigger, resync and push all use), the key/liveness/updated-at accessors, and the triggers.
 *
 * The accessors are `BEGIN ATOMIC` SQL functions that select only the fields they need, so
 * Postgres records a dependency on exactly those columns: dropping or retyping one of them is
 * refused with an error naming the function, instead of breaking every later write to users.
 */
import { PAYLOAD_FIELDS } from '../config.ts';
import type { CheckedMapping } from './mapping.ts';
import { fieldCast } from './mapping.ts';
import { quoteIdent, type SourceTable } from './source-table.ts';

export const CAPTURE_TRIGGER = 'suekk_sync_capture';
export const TRUNCATE_TRIGGER = 'suekk_sync_capture_truncate';
export const NOTIFY_CHANNEL = 'suekk_sync';
/** Every function install generates (all take the users row type, except the trigger functions). */
export const GENERATED_FUNCTIONS = [
  'user_payload',
  'user_key',
  'user_is_live',
  'user_updated_at',
  'capture_row',
  'capture_truncate',
] as const;

export interface CaptureOptions {
  notify: boolean;
  fireOnReplica: boolean;
}

/** `(select (u)."a" as "a", …) as s`: only the referenced fields, under their own names. */
function fieldsOf(columns: string[]): string {
  if (columns.length === 0) return '(select) as s';
  return `(select ${columns.map((c) => `(u).${quoteIdent(c)} as ${quoteIdent(c)}`).join(', ')}) as s`;
}

export function captureStatements(table: SourceTable, mapping: CheckedMapping, options: CaptureOptions): string[] {
  const row = table.qualified;
  const payloadArgs = PAYLOAD_FIELDS.map(
    (f) => `'${f}', (${mapping.columns[f]})::${fieldCast(f)}`,
  ).join(',\n    ');
  const live = mapping.softDeleteColumn === null ? null : quoteIdent(mapping.softDeleteColumn);
  // A constant payload: Postgres folds identical notifications into one per transaction.
  const notify = options.notify ? `perform pg_notify('${NOTIFY_CHANNEL}', '');` : 'null;';

  const statements = [
    `create or replace function suekk_sync.user_payload(u ${row}) returns jsonb
language sql stable
begin atomic
  select jsonb_build_object(
    ${payloadArgs})
  from ${fieldsOf(mapping.referencedColumns)};
end`,
    `create or replace function suekk_sync.user_key(u ${row}) returns text
language sql immutable
begin atomic
  select (u).${table.primaryKeyQuoted}::text;
end`,
    `create or replace function suekk_sync.user_is_live(u ${row}) returns boolean
language sql immutable
begin atomic
  select ${live === null ? 'true' : `(u).${live} is null`};
end`,
  ];
  if (mapping.updatedAtColumn !== null) {
    statements.push(`create or replace function suekk_sync.user_updated_at(u ${row}) returns timestamptz
language sql stable
begin atomic
  select (u).${quoteIdent(mapping.updatedAtColumn)}::timestamptz;
end`);
  }
  statements.push(
    `create or replace function suekk_sync.capture_row() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $capture$
declare
  old_key text;
  new_key text;
  old_live boolean;
  new_live boolean;
  new_payload jsonb;
  captured boolean := false;
begin
  if tg_op = 'INSERT' then
    if suekk_sync.user_is_live(new) then
      perform suekk_sync.record_event(suekk_sync.user_key(new), 'created', suekk_sync.user_payload(new), 'trigger', null, 0::smallint);
      captured := true;
    end if;
  elsif tg_op = 'DELETE' then
    if suekk_sync.user_is_live(old) then
      perform suekk_sync.record_event(suekk_sync.user_key(old), 'deleted', suekk_sync.user_payload(old), 'trigger', null, 0::smallint);
      captured := true;
    end if;
  else
    old_key := suekk_sync.user_key(old);
    new_key := suekk_sync.user_key(new);
    old_live := suekk_sync.user_is_live(old);
    new_live := suekk_sync.user_is_live(new);
    if old_key is distinct from new_key then
      -- Two ids, two streams: the old id is gone, the new one appears.
      if old_live then
        perform suekk_sync.record_event(old_key, 'deleted', suekk_sync.user_payload(old), 'trigger', null, 0::smallint);
        captured := true;
      end if;
      if new_live then
        perform suekk_sync.record_event(new_key, 'created', suekk_sync.user_payload(new), 'trigger', null, 0::smallint);
        captured := true;
      end if;
    elsif old_live and new_live then
      new_payload := suekk_sync.user_payload(new);
      if new_payload is distinct from suekk_sync.user_payload(old) then
        perform suekk_sync.record_event(new_key, 'updated', new_payload, 'trigger', null, 0::smallint);
        captured := true;
      end if;
    elsif old_live then
      perform suekk_sync.record_event(new_key, 'deleted', suekk_sync.user_payload(new), 'trigger', null, 0::smallint);
      captured := true;
    elsif new_live then
      perform suekk_sync.record_event(new_key, 'created', suekk_sync.user_payload(new), 'trigger', null, 0::smallint);
      captured := true;
    end if;
  end if;
  if captured then
    ${notify}
  end if;
  return null;
end
$capture$`,
    `create or replace function suekk_sync.capture_truncate() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $capture$
declare
  captured boolean := false;
begin
  -- BEFORE TRUNCATE still sees the rows: every live one is deleted.
  perform suekk_sync.record_event(suekk_sync.user_key(u), 'deleted', suekk_sync.user_payload(u), 'trigger', null, 0::smallint)
     from ${row} as u
    where suekk_sync.user_is_live(u)
    order by u.${table.primaryKeyQuoted};
  if found then
    ${notify}
  end if;
  return null;
end
$capture$`,
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
