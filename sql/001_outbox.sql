-- The durable outbox. Written in the writer's own transaction by the capture trigger, so an event
-- exists exactly when the change it describes committed.

create table suekk_sync.events (
  id               bigint generated always as identity primary key,  -- capture order
  webhook_id       uuid not null default gen_random_uuid() unique,   -- the receiver's dedup key
  user_id          text not null,                                    -- the users row's primary key
  action           text not null check (action in ('created', 'updated', 'deleted')),
  payload          jsonb not null,
  source           text not null default 'trigger' check (source in ('trigger', 'resync', 'push')),
  run_id           bigint,
  -- An event in flight has no status of its own: it is the head of a stream whose lease a relay
  -- holds. That saves a write per event and cannot be left stale by a relay that died.
  status           text not null default 'pending'
                     check (status in ('pending', 'delivered', 'failed', 'skipped')),
  attempts         integer not null default 0,
  rounds           integer not null default 0,
  next_attempt_at  timestamptz not null default clock_timestamp(),
  created_at       timestamptz not null default clock_timestamp(),
  delivered_at     timestamptz,
  last_status      integer,
  last_error       text,
  last_response    text,
  duration_ms      integer,
  application_name text
);

-- The relay reads a user's pending events in capture order. The predicate matches the relay's
-- query exactly, so even a generic plan walks this index in order and stops after LIMIT rows:
-- a user with ten thousand pending events costs a claim no more than a user with one.
create index events_pending_by_user on suekk_sync.events (user_id, id) where status = 'pending';
-- retry and status find failed events by user.
create index events_failed_by_user on suekk_sync.events (user_id, id) where status = 'failed';
-- resync follows its run's events.
create index events_by_run on suekk_sync.events (run_id) where run_id is not null;
-- tail-log and retention walk delivered events by time.
create index events_by_created_at on suekk_sync.events (created_at);

-- One row per user that has (or recently had) undelivered events: claiming a user costs the same
-- whether it has one pending event or ten thousand.
create table suekk_sync.streams (
  user_id         text primary key,
  -- Bumped by every capture. A relay only marks a stream idle when the generation it read
  -- alongside "no pending events" is still current, which closes the race with a writer that
  -- commits in between.
  gen             bigint not null default 0,
  -- When the head event is due; null while the stream is idle (nothing undelivered).
  next_attempt_at timestamptz,
  priority        smallint not null default 0,   -- 0 live changes, 1 resync
  parked          boolean not null default false, -- a failed event holds the stream
  locked_by       text,
  locked_until    timestamptz
);

create index streams_due on suekk_sync.streams (priority, next_attempt_at)
  where next_attempt_at is not null and not parked;

create table suekk_sync.relays (
  id           text primary key,
  host         text not null,
  pid          integer not null,
  version      text not null,
  started_at   timestamptz not null default now(),
  heartbeat_at timestamptz not null default now()
);

-- Switches every relay obeys, and what install recorded about the capture.
create table suekk_sync.state (
  singleton    boolean primary key default true check (singleton),
  paused       boolean not null default false,
  source_table text,
  primary_key  text,
  mapping      jsonb,
  notify       boolean,
  installed_at timestamptz,
  installed_version text
);
insert into suekk_sync.state default values;

-- resync runs, so an interrupted run can continue from its cursor.
create table suekk_sync.resync_runs (
  id           bigint generated always as identity primary key,
  filter       jsonb not null,  -- {all: true} | {userIds: [...]} | {since: "<iso>"}
  action       text,
  cursor       text,
  enqueued     bigint not null default 0,
  started_at   timestamptz not null default now(),
  finished_at  timestamptz
);

-- The one way an event enters the outbox: the trigger, resync and push all call it, so the event
-- row and its stream are always written together, in the caller's transaction.
create function suekk_sync.record_event(
  p_user_id text, p_action text, p_payload jsonb, p_source text, p_run_id bigint, p_priority smallint
) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  insert into suekk_sync.events (user_id, action, payload, source, run_id, application_name)
  values (p_user_id, p_action, p_payload, p_source, p_run_id, current_setting('application_name', true));

  -- Locks the stream row until commit: a relay deciding the stream is empty skips it meanwhile.
  insert into suekk_sync.streams as s (user_id, next_attempt_at, priority)
  values (p_user_id, clock_timestamp(), p_priority)
  on conflict (user_id) do update
    set gen = s.gen + 1,
        -- A stream waiting for its next round stays waiting: order beats freshness.
        next_attempt_at = coalesce(s.next_attempt_at, excluded.next_attempt_at),
        priority = case when s.next_attempt_at is null then excluded.priority
                        else least(s.priority, excluded.priority) end;
end
$$;

-- A user's next pending events in capture order. Bitmap scans are off inside: under a generic
-- estimate of a few rows per user the planner otherwise reads and sorts a hot user's whole backlog
-- on every fetch, where walking events_pending_by_user in order stops after p_limit rows. PL/pgSQL
-- keeps the plan between calls (about 20 µs a call); a SQL function with SET is never inlined and
-- is planned on every call (about 0.4 ms). ROWS 20 keeps a claim of many users from looking
-- expensive enough to JIT-compile.
create function suekk_sync.next_events(p_user_id text, p_after_id bigint, p_limit integer)
returns setof suekk_sync.events
language plpgsql stable
rows 20
set enable_bitmapscan = off
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
    select * from suekk_sync.events
     where user_id = p_user_id and status = 'pending' and id > p_after_id
     order by id limit p_limit;
end
$$;
