-- The immutable outbox. A captured event is written once and never updated: what changes as it is
-- delivered lives on its user's stream (a "delivered through" cursor, written once per turn) and in
-- an append-only delivery log. docs/design.md, "The outbox", explains the whole design; this file
-- builds it and moves an earlier schema's events into it.

-- The earlier tables step aside; their rows are copied below and the tables dropped at the end.
alter table suekk_sync.events rename to events_v4;
alter table suekk_sync.streams rename to streams_v4;
drop function if exists suekk_sync.next_events(text, bigint, integer);
-- The relay answers the doorbell inside its claim now.
drop function if exists suekk_sync.answer_doorbell();
alter table suekk_sync.events_v4 drop constraint if exists events_pkey, drop constraint if exists events_webhook_id_key;
drop index if exists suekk_sync.events_pending_by_user, suekk_sync.events_failed_by_user,
  suekk_sync.events_by_created_at, suekk_sync.events_open_by_run, suekk_sync.events_waiting_by_user,
  suekk_sync.streams_due;
alter table suekk_sync.streams_v4 drop constraint if exists streams_pkey;

-- Event ids: capture order. Cache 1 (the default) hands ids out in the order nextval is called, which
-- the ticker relies on (see tick()).
create sequence suekk_sync.event_id as bigint;
select setval('suekk_sync.event_id', coalesce((select max(id) from suekk_sync.events_v4), 0) + 1, false);

-- Retention by partition: events and delivery records go to the partition named by this sequence;
-- a relay moves it on (rotate) and truncates a partition once all of it is settled and old enough.
-- A sequence, because every writer reads it and a change must reach all of them at once, outside
-- their snapshots; setval is not transactional and costs writers no lock.
create sequence suekk_sync.current_part as smallint minvalue 0 maxvalue 5 start 0;
select setval('suekk_sync.current_part', 0, true);

create table suekk_sync.events (
  id               bigint not null default nextval('suekk_sync.event_id'),
  webhook_id       uuid not null default gen_random_uuid(),  -- the receiver's dedup key
  user_id          text not null,                           -- the users row's primary key, as text
  action           text not null,                           -- created | updated | deleted
  body             text not null,                           -- the webhook body, rendered by capture
  source           text not null,                           -- trigger | resync | push
  run_id           bigint,                                  -- the resync run
  created_at       timestamptz not null default clock_timestamp(),
  application_name text,
  part             smallint not null default pg_sequence_last_value('suekk_sync.current_part')::smallint
) partition by list (part);

-- What each delivery came to, appended in batches by the relays (and by skip): the only place an
-- event's outcome is written, once.
create table suekk_sync.deliveries (
  event_id    bigint not null,
  outcome     text not null,  -- delivered | skipped | superseded (merged into a later event's call)
  attempts    integer not null,
  rounds      integer not null,
  http_status integer,
  duration_ms integer,
  error       text,
  response    text,  -- the backend's answer, kept for pushes (whose operator waits for it)
  superseded_by uuid,  -- superseded: the webhook-id of the call that carried its state
  at          timestamptz not null default clock_timestamp(),
  part        smallint not null default pg_sequence_last_value('suekk_sync.current_part')::smallint
) partition by list (part);

create table suekk_sync.events_p0 partition of suekk_sync.events for values in (0);
create table suekk_sync.events_p1 partition of suekk_sync.events for values in (1);
create table suekk_sync.events_p2 partition of suekk_sync.events for values in (2);
create table suekk_sync.events_p3 partition of suekk_sync.events for values in (3);
create table suekk_sync.events_p4 partition of suekk_sync.events for values in (4);
create table suekk_sync.events_p5 partition of suekk_sync.events for values in (5);
create table suekk_sync.deliveries_p0 partition of suekk_sync.deliveries for values in (0);
create table suekk_sync.deliveries_p1 partition of suekk_sync.deliveries for values in (1);
create table suekk_sync.deliveries_p2 partition of suekk_sync.deliveries for values in (2);
create table suekk_sync.deliveries_p3 partition of suekk_sync.deliveries for values in (3);
create table suekk_sync.deliveries_p4 partition of suekk_sync.deliveries for values in (4);
create table suekk_sync.deliveries_p5 partition of suekk_sync.deliveries for values in (5);

-- When each partition became current and stopped being so; rotation reads and writes it, rarely.
create table suekk_sync.partitions (
  part          smallint primary key,
  current_since timestamptz,
  retired_at    timestamptz
);
insert into suekk_sync.partitions (part, current_since) select p, case when p = 0 then now() end from generate_series(0, 5) p;

-- One row per user with something undelivered (or delivered since the last prune). Every event of
-- the user up to delivered_through is settled; the rest is pending, in id order. Written by the
-- ticker (a user's new events), the relay holding it (once per turn) and the operator commands;
-- never by a writer of the users table.
create table suekk_sync.streams (
  user_id           text primary key,
  delivered_through bigint not null,
  -- The newest event of the user a ticker has seen: more than delivered_through means work is left.
  last_event_id     bigint not null,
  lane              smallint not null default 0,  -- 0 live changes and push, 1 resync
  -- Set while the stream waits in the due set: for its next round, or returned, retried or pushed.
  due_at            timestamptz,
  parked            boolean not null default false,  -- its head event failed
  locked_by         text,
  locked_until      timestamptz,
  -- The head event (the first undelivered) once it has had a round: its attempts, rounds and last
  -- answer, kept here rather than on the event, which is never updated.
  head_id           bigint,
  head_attempts     integer,
  head_rounds       integer,
  head_http_status  integer,
  head_error        text,
  head_response     text,
  head_duration_ms  integer
) with (fillfactor = 70);  -- room for the claim's and the release's updates to stay HOT

-- The due set. Only rare paths enter it (a round that failed, a stop, retry, push, a lease that ran
-- out), so a long-lived snapshot cannot pile dead entries up in front of the claims.
create index streams_due on suekk_sync.streams (lane, due_at) where due_at is not null;

-- Each lane's ticker: which new events it has turned into stream work. Insert-only (the latest row
-- per lane is the state), so an old snapshot held open leaves no dead versions for a tick to step
-- over; old rows are pruned in bulk.
create type suekk_sync.gap_bucket as (
  running xid8[],        -- the transactions that were open when these ids were found missing
  ids     int8multirange -- ids handed out but not visible then: theirs, or never committed
);
create table suekk_sync.ticks (
  lane    smallint not null,
  tick    bigint not null,
  through bigint not null,  -- every id up to here has been read, except the gaps
  gaps    suekk_sync.gap_bucket[] not null default '{}',
  at      timestamptz not null default now(),
  primary key (lane, tick)
);

alter table suekk_sync.resync_runs add column settled bigint not null default 0;

-- Since when this relay has seen the backend down (its breaker open), null while it answers: what
-- status reports as the backend's state, as the relays see it.
alter table suekk_sync.relays add column backend_down_since timestamptz;

-- ---- the earlier schema's events, moved over --------------------------------------------------

insert into suekk_sync.events (id, webhook_id, user_id, action, body, source, run_id, created_at, application_name, part)
select id, webhook_id, user_id, action,
       '{"id":' || to_json(coalesce(payload->>'id', ''))::text ||
       ',"email":' || to_json(coalesce(payload->>'email', ''))::text ||
       ',"username":' || to_json(coalesce(payload->>'username', ''))::text ||
       ',"displayName":' || to_json(coalesce(payload->>'displayName', ''))::text ||
       ',"avatar":' || to_json(coalesce(payload->>'avatar', ''))::text ||
       ',"role":' || to_json(coalesce(payload->>'role', ''))::text ||
       ',"isActive":' || case when coalesce((payload->>'isActive')::boolean, false) then 'true' else 'false' end ||
       ',"action":"' || action || '"}',
       source, run_id, created_at, application_name, 0
  from suekk_sync.events_v4;

insert into suekk_sync.deliveries (event_id, outcome, attempts, rounds, http_status, duration_ms, error, at, part)
select id, status, attempts, rounds, last_status, duration_ms, case when status = 'skipped' then last_error end,
       coalesce(delivered_at, created_at), 0
  from suekk_sync.events_v4 where status in ('delivered', 'skipped');

-- A user with undelivered events gets a stream at its first one; if that one already had a round,
-- its attempts, rounds and answer become the stream's head, waiting for its next round or parked.
insert into suekk_sync.streams (user_id, delivered_through, last_event_id, lane, due_at, parked,
                                head_id, head_attempts, head_rounds, head_http_status, head_error, head_response, head_duration_ms)
select h.user_id, h.id - 1, l.last_id, coalesce(s.priority, 0),
       case when h.status = 'failed' then null when h.rounds > 0 then h.next_attempt_at else now() end,
       h.status = 'failed',
       case when h.rounds > 0 or h.status = 'failed' then h.id end,
       case when h.rounds > 0 or h.status = 'failed' then h.attempts end,
       case when h.rounds > 0 or h.status = 'failed' then h.rounds end,
       case when h.rounds > 0 or h.status = 'failed' then h.last_status end,
       case when h.rounds > 0 or h.status = 'failed' then h.last_error end,
       case when h.rounds > 0 or h.status = 'failed' then h.last_response end,
       case when h.rounds > 0 or h.status = 'failed' then h.duration_ms end
  from (select distinct on (user_id) * from suekk_sync.events_v4
         where status in ('pending', 'failed') order by user_id, id) h
  join (select user_id, max(id) as last_id from suekk_sync.events_v4 group by user_id) l using (user_id)
  left join suekk_sync.streams_v4 s using (user_id);

update suekk_sync.resync_runs r
   set settled = (select count(*) from suekk_sync.events_v4 e where e.run_id = r.id and e.status in ('delivered', 'skipped'));

-- Every moved event is accounted for by the streams above: the tickers start after them.
insert into suekk_sync.ticks (lane, tick, through)
select lane, 0, coalesce((select max(id) from suekk_sync.events_v4), 0) from (values (0::smallint), (1::smallint)) l(lane);

drop table suekk_sync.events_v4;
drop table suekk_sync.streams_v4;

-- The relay reads a user's events in id order from its cursor.
create index events_by_user on suekk_sync.events (user_id, id);
-- The tickers read new events in id order; tail-log and the operator commands find events by id.
create index events_by_id on suekk_sync.events (id);
-- resync counts the run's events that are held back (a handful), by run.
create index events_by_run on suekk_sync.events (run_id) where run_id is not null;
create index deliveries_by_event on suekk_sync.deliveries (event_id);
-- status counts the last minutes' deliveries: block ranges, nearly free to keep on an append-only table.
create index deliveries_by_time on suekk_sync.deliveries using brin (at) with (autosummarize = on);

analyze suekk_sync.events, suekk_sync.deliveries, suekk_sync.streams;

-- ---- the functions the relay and the operator commands share ----------------------------------

-- Below this id every event has been read by both tickers (or will never commit): a user without a
-- stream has nothing pending below it. No SET clause, so the planner inlines it: a SQL function
-- that cannot be inlined is planned again on every call.
create function suekk_sync.ticked_horizon() returns bigint
language sql stable
as $$
  select min(least(t.through + 1, coalesce(g.lowest, t.through + 1)))
    from (values (0::smallint), (1::smallint)) l(lane)
    cross join lateral (select * from suekk_sync.ticks k where k.lane = l.lane order by k.tick desc limit 1) t
    left join lateral (select min(lower(r)) as lowest from unnest(t.gaps) b, unnest(b.ids) r) g on true
$$;

-- Every event with its delivery state, derived from its stream and the delivery log: what tail-log,
-- status and the operator commands read, and the view a DBA can query.
create view suekk_sync.event_log as
select e.id, e.webhook_id, e.user_id, e.action, e.body::json as payload, e.body, e.source, e.run_id,
       e.created_at, e.application_name,
       case
         when d.event_id is not null then d.outcome
         when s.user_id is null then case when e.id < h.horizon then 'delivered' else 'pending' end
         when e.id <= s.delivered_through then 'delivered'
         when s.parked and e.id = s.head_id then 'failed'
         else 'pending'
       end as status,
       case when d.event_id is not null then d.attempts when e.id = s.head_id then s.head_attempts else 0 end as attempts,
       case when d.event_id is not null then d.rounds when e.id = s.head_id then s.head_rounds else 0 end as rounds,
       case when d.event_id is not null then d.http_status when e.id = s.head_id then s.head_http_status end as last_status,
       case when d.event_id is not null then d.error when e.id = s.head_id then s.head_error end as last_error,
       case when d.event_id is not null then d.response when e.id = s.head_id then s.head_response end as last_response,
       case when d.event_id is not null then d.duration_ms when e.id = s.head_id then s.head_duration_ms end as duration_ms,
       case when d.outcome = 'delivered' then d.at end as delivered_at,
       case when d.event_id is null and e.id = s.head_id and s.due_at is not null then s.due_at else e.created_at end as next_attempt_at,
       d.superseded_by
  from suekk_sync.events e
 cross join (select suekk_sync.ticked_horizon() as horizon) h
  left join suekk_sync.streams s on s.user_id = e.user_id
  left join suekk_sync.deliveries d on d.event_id = e.id;

-- One lane's ticker: reads its lane's events committed since its last tick, in id order, and turns
-- them into stream work, leasing up to p_capacity idle users to the calling relay. What it leaves
-- (more users than the relay can take) stays unread: the events table itself is the queue, so a
-- backlog costs no bookkeeping rows and a claim never steps over dead ones. It reads about as many
-- of its events as it can lease users for, walking past the other lane's without reading them.
--
-- Ids are handed out in order but commit out of order, so an id missing below the newest one read
-- may still commit. Those gaps are kept, with the transactions that were open when they were found,
-- and looked at again only when one of those transactions has ended; when all have, what is still
-- missing never committed (or is the other lane's). claim() passes the ids handed out
-- (`allocated`) and the transactions open (`running_now`, taken after it): whoever took an id had
-- its transaction id before (a capture writes the users row, resync and push ask for one before
-- their first event, the TRUNCATE trigger too), so if still open it is among them.
--
-- Live changes and pushes are lane 0, resync lane 1, each with its own ticker, so a million-user
-- resync queued in the table never stands in front of a live change.
--
-- Returns the users leased, each with the highest of its events this tick read: the claim reads
-- their events up to it, a range of a few rows whatever the user's backlog.
create function suekk_sync.tick(p_lane smallint, p_relay text, p_capacity integer, p_lease_until timestamptz, p_read integer,
                                allocated bigint, running_now xid8[],
                                out leased text[], out uppers bigint[], out open_gaps boolean, out more boolean, out busy boolean)
language plpgsql
-- Index lookups only, whatever the statistics say: a relay plans these once per session, often
-- while the outbox is nearly empty, and a plan kept from then would scan a million events per user.
-- No JIT: the disabled scans' costs would cross its threshold and compile every statement.
set enable_seqscan = off
set jit = off
set search_path = pg_catalog, pg_temp
as $tick$
declare
  last suekk_sync.ticks;
  enough integer := greatest(3 * p_capacity, 16);
  lth bigint;
  read_to bigint;
  look_ids int8multirange;
  r_ids bigint[];
  r_users text[];
  over_first bigint;
  cutoff bigint;
  new_through bigint;
  settled int8multirange;
  keep int8multirange;
  buckets suekk_sync.gap_bucket[];
  fresh_gaps int8multirange;
  horizon bigint;
begin
  leased := '{}';
  uppers := '{}';
  open_gaps := false;
  more := false;
  busy := false;
  if p_capacity <= 0 then return; end if;
  if not pg_try_advisory_xact_lock(1937075051, 10 + p_lane) then
    busy := true;
    return;
  end if;
  select * into last from suekk_sync.ticks where lane = p_lane order by tick desc limit 1;
  -- Nothing handed out since, and no gap worth a look: nothing to do (the common case for the lane
  -- that is not busy).
  if allocated <= last.through
     and not exists (select 1 from unnest(last.gaps) g where cardinality(g.running) = 0 or not (g.running <@ running_now)) then
    open_gaps := cardinality(last.gaps) > 0;
    return;
  end if;
  horizon := suekk_sync.ticked_horizon();
  -- Read up to the `enough`-th event of this lane (or all there is), and at most p_read ids further.
  -- Bounded by p_read too: behind a resync's million events, the live lane finds none of its own
  -- and must not walk them all on every tick.
  select e.id into lth from suekk_sync.events e
   where e.id > last.through and e.id <= least(allocated, last.through + p_read)
     and (e.source = 'resync') = (p_lane = 1)
   order by e.id offset enough - 1 limit 1;
  read_to := greatest(last.through, least(coalesce(lth, allocated), last.through + p_read));

  -- A gap is worth a look once one of the transactions open at its finding has ended.
  select range_agg(r) into look_ids
    from unnest(last.gaps) b, unnest(b.ids) r
   where cardinality(b.running) = 0 or not (b.running <@ running_now);

  select coalesce(array_agg(x.id order by x.id), '{}'), coalesce(array_agg(x.user_id order by x.id), '{}')
    into r_ids, r_users
    from (select e.id, e.user_id from suekk_sync.events e
           where e.id > last.through and e.id <= read_to and (e.source = 'resync') = (p_lane = 1)
          union all
          select e.id, e.user_id from unnest(coalesce(look_ids, '{}'::int8multirange)) g
            join suekk_sync.events e on e.id >= lower(g) and e.id < upper(g)
           where (e.source = 'resync') = (p_lane = 1)) x;

  -- The first user past the relay's capacity sets the cutoff: its events and everything after stay
  -- for the next tick.
  select o.first_id into over_first from (
    select u.first_id
      from (select r.user_id, min(r.id) as first_id, max(r.id) as max_id
              from unnest(r_ids, r_users) r(id, user_id) group by r.user_id) u
      left join suekk_sync.streams s on s.user_id = u.user_id
     where s.user_id is null
        or (u.max_id > s.delivered_through and not s.parked and s.due_at is null
            and (s.locked_by is null or s.locked_until < now()))
     order by u.first_id offset p_capacity limit 1) o;
  cutoff := coalesce(over_first - 1, read_to);
  new_through := greatest(last.through, least(cutoff, read_to));

  -- A new stream starts below everything not yet read, and above everything settled: a user has no
  -- stream only once all its events that were read were settled, and those lie below the horizon.
  with u as (
    select r.user_id, max(r.id) as max_id
      from unnest(r_ids, r_users) r(id, user_id)
     where r.id <= cutoff group by r.user_id
  ), up as (
    insert into suekk_sync.streams as s (user_id, delivered_through, last_event_id, lane, locked_by, locked_until)
    select u.user_id, horizon - 1, u.max_id, p_lane, p_relay, p_lease_until from u order by u.user_id
    on conflict (user_id) do update
      set last_event_id = greatest(s.last_event_id, excluded.last_event_id),
          lane = case when excluded.last_event_id > s.delivered_through and not s.parked and s.due_at is null
                            and (s.locked_by is null or s.locked_until < now())
                      then excluded.lane else s.lane end,
          locked_by = case when excluded.last_event_id > s.delivered_through and not s.parked and s.due_at is null
                                 and (s.locked_by is null or s.locked_until < now())
                           then excluded.locked_by else s.locked_by end,
          locked_until = case when excluded.last_event_id > s.delivered_through and not s.parked and s.due_at is null
                                    and (s.locked_by is null or s.locked_until < now())
                              then excluded.locked_until else s.locked_until end
    returning s.user_id, s.locked_by = p_relay and s.locked_until = p_lease_until as leased_now
  )
  select coalesce(array_agg(up.user_id order by up.user_id), '{}'), coalesce(array_agg(u.max_id order by up.user_id), '{}')
    into leased, uppers
    from up join u on u.user_id = up.user_id where up.leased_now;

  -- What was read up to the cutoff leaves the gaps; this lane's events past it stay to be read.
  select coalesce(range_agg(int8range(r.id, r.id, '[]')) filter (where r.id <= cutoff), '{}'),
         coalesce(range_agg(int8range(r.id, r.id, '[]')) filter (where r.id > cutoff), '{}')
    into settled, keep
    from unnest(r_ids) r(id);
  -- Buckets whose transactions have all ended keep only what was seen and not taken; buckets left
  -- with the same transactions merge, so a long one that holds many back costs one bucket.
  select coalesce(array_agg(row(m.running, m.ids)::suekk_sync.gap_bucket), '{}') into buckets
    from (select n.running, range_agg(r) as ids
            from (select case when b.look then array(select x from unnest(b.running) x where x = any(running_now) order by x)
                              else b.running end as running,
                         case when not b.look then b.ids
                              when b.running && running_now then b.ids - settled
                              else (b.ids - settled) * keep end as ids
                    from (select g.*, (cardinality(g.running) = 0 or not (g.running <@ running_now)) as look
                            from unnest(last.gaps) g) b) n,
                 unnest(n.ids) r
           group by n.running) m;
  -- Ids missing from what was just read (or the other lane's). With no transaction open, nobody can
  -- still commit them.
  if new_through > last.through and cardinality(running_now) > 0 then
    fresh_gaps := int8multirange(int8range(last.through + 1, new_through + 1)) - settled;
    if not isempty(fresh_gaps) then
      buckets := buckets || row(array(select x from unnest(running_now) x order by x), fresh_gaps)::suekk_sync.gap_bucket;
    end if;
  end if;

  if new_through <> last.through or buckets is distinct from last.gaps then
    insert into suekk_sync.ticks (lane, tick, through, gaps) values (p_lane, last.tick + 1, new_through, buckets);
  end if;
  open_gaps := cardinality(buckets) > 0;
  more := allocated > new_through;
end
$tick$;

-- A user's next events after its cursor, in id order. Sorting and bitmap scans are off inside:
-- under the estimate of a few rows per user (all a plan for any user can know) the planner would
-- otherwise read and sort a hot user's whole backlog on every call, where walking each partition's
-- (user_id, id) index in order stops after p_limit rows. PL/pgSQL keeps the plan between calls; a
-- SQL function with SET is never inlined and is planned on every call.
create function suekk_sync.next_events(p_user_id text, p_after bigint, p_limit integer)
returns table (id bigint, webhook_id uuid, action text, body text, source text, run_id bigint, created_at timestamptz)
language plpgsql stable
rows 20
set enable_sort = off
set enable_bitmapscan = off
set jit = off
set search_path = pg_catalog, pg_temp
as $next$
begin
  return query
    select e.id, e.webhook_id, e.action, e.body, e.source, e.run_id, e.created_at
      from suekk_sync.events e
     where e.user_id = p_user_id and e.id > p_after
     order by e.id limit p_limit;
end
$next$;

-- One claim: streams whose turn in the due set has come, then each lane's ticker for new work, up
-- to p_limit users leased to the relay; then the first events of each, and a last row (user_id
-- null) saying whether gaps are open, more is left to read, or another relay was ticking.
create function suekk_sync.claim(p_relay text, p_limit integer, p_lease_ms double precision, p_per_stream integer,
                                 p_read integer, p_answer_bell boolean, p_read_ahead boolean default false)
returns table (user_id text, delivered_through bigint, head_id bigint, head_attempts integer, head_rounds integer,
               id bigint, webhook_id uuid, action text, body text, source text, run_id bigint, created_at timestamptz,
               open_gaps boolean, more boolean, busy boolean)
language plpgsql
-- Index lookups only, whatever the statistics say: a relay plans these once per session, often
-- while the outbox is nearly empty, and a plan kept from then would scan a million events per user.
-- No JIT: the disabled scans' costs would cross its threshold and compile every statement.
set enable_seqscan = off
set jit = off
set search_path = pg_catalog, pg_temp
as $claim$
#variable_conflict use_column
declare
  leased text[] := '{}';
  taken text[];
  t record;
  allocated bigint;
  own_xid xid8;
  snap pg_snapshot;
  running_now xid8[];
  ticked text[] := '{}';
  ticked_upper bigint[] := '{}';
  lease_until timestamptz := now() + make_interval(secs => p_lease_ms / 1000);
  gaps boolean := false;
  left_over boolean := false;
  other boolean := false;
begin
  -- The highest event id handed out, then this transaction's own id, then the snapshot, in this
  -- order and before anything else here takes an id for this transaction (setval would): whoever
  -- took an event id up to `allocated` had its transaction id before this one, so if it is still
  -- open it is in the snapshot's running list, or (a snapshot lists none at or above its xmax)
  -- between xmax and this transaction's id, still in progress.
  if pg_current_xact_id_if_assigned() is not null then
    raise exception 'suekk_sync.claim() must run at the start of its own transaction';
  end if;
  allocated := coalesce(pg_sequence_last_value('suekk_sync.event_id'), 0);
  own_xid := pg_current_xact_id();
  snap := pg_current_snapshot();
  running_now := array(
    select pg_snapshot_xip(snap)
    union all
    select x.xid from (select g::text::xid8 as xid
                         from generate_series(pg_snapshot_xmax(snap)::text::bigint, own_xid::text::bigint - 1) g) x
     where pg_xact_status(x.xid) = 'in progress');
  -- Clearing the doorbell: a writer that rings from now on is heard. One that found it still rung
  -- just before took its event id before this, but perhaps after `allocated` was read: if ids were
  -- handed out meanwhile, the relay is told to look again shortly (as for a gap).
  if p_answer_bell then
    perform setval('suekk_sync.wake_pending', 0);
    gaps := coalesce(pg_sequence_last_value('suekk_sync.event_id'), 0) > allocated;
  end if;
  if coalesce((select st.paused from suekk_sync.state st), false) then
    return query select null::text, null::bigint, null::bigint, null::integer, null::integer, null::bigint, null::uuid,
                        null::text, null::text, null::text, null::bigint, null::timestamptz, false, false, false;
    return;
  end if;
  for l in 0..1 loop
    exit when cardinality(leased) >= p_limit;
    with c as (
      select s.user_id from suekk_sync.streams s
       where s.lane = l and s.due_at <= now() and not s.parked
         and (s.locked_by is null or s.locked_until < now())
       order by s.due_at limit p_limit - cardinality(leased)
       for update skip locked
    ), u as (
      update suekk_sync.streams s set locked_by = p_relay, locked_until = lease_until, due_at = null
        from c where s.user_id = c.user_id returning s.user_id
    )
    select coalesce(array_agg(u.user_id), '{}') into taken from u;
    leased := leased || taken;
  end loop;
  for l in 0..1 loop
    exit when cardinality(leased) >= p_limit;
    select * into t from suekk_sync.tick(l::smallint, p_relay, p_limit - cardinality(leased), lease_until, p_read,
                                         allocated, running_now);
    leased := leased || t.leased;
    ticked := ticked || t.leased;
    ticked_upper := ticked_upper || t.uppers;
    gaps := gaps or t.open_gaps;
    left_over := left_over or t.more;
    other := other or t.busy;
  end loop;
  -- A user the ticker leased has its events up to what the tick read: a bounded range, read inline
  -- (a function call per user cost more than the read). One from the due set may have any backlog.
  return query
    select s.user_id, s.delivered_through, s.head_id, s.head_attempts, s.head_rounds,
           e.id, e.webhook_id, e.action, e.body, e.source, e.run_id, e.created_at,
           null::boolean, null::boolean, null::boolean
      -- Both lanes' tickers report a user leased in this claim (its lease is this one): read it once.
      from (select x.user_id, max(x.upper) as upper from unnest(ticked, ticked_upper) x(user_id, upper) group by x.user_id) k
      join suekk_sync.streams s on s.user_id = k.user_id and s.locked_by = p_relay
      left join lateral (
        select ev.id, ev.webhook_id, ev.action, ev.body, ev.source, ev.run_id, ev.created_at
          from suekk_sync.events ev
         -- p_read_ahead (a coalescing relay): every committed event of the user, not only those the
         -- tick read, so that a backlog merges. As safe as the due set's reads: a user's events
         -- commit in id order (each writer holds the user's row while it takes its id).
         where ev.user_id = s.user_id and ev.id > s.delivered_through
           and ev.id <= case when p_read_ahead then allocated else k.upper end
         order by ev.id limit p_per_stream) e on true
    union all
    select s.user_id, s.delivered_through, s.head_id, s.head_attempts, s.head_rounds,
           e.id, e.webhook_id, e.action, e.body, e.source, e.run_id, e.created_at,
           null::boolean, null::boolean, null::boolean
      from suekk_sync.streams s
      left join lateral suekk_sync.next_events(s.user_id, s.delivered_through, p_per_stream) e on true
     where s.user_id = any(leased) and not s.user_id = any(ticked) and s.locked_by = p_relay
     order by 1, 6;
  return query select null::text, null::bigint, null::bigint, null::integer, null::integer, null::bigint, null::uuid,
                      null::text, null::text, null::text, null::bigint, null::timestamptz, gaps, left_over, other;
end
$claim$;
