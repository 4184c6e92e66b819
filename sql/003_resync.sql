-- resync follows its run through the run's undelivered events only. Its progress and its wait
-- count these (pending or failed) and derive "delivered" from the run's enqueued count, so a poll
-- costs the size of the run's backlog, not the size of the run: events_by_run indexed every event
-- of the run and made each poll read up to a million rows. It also cost the relay an index entry
-- per delivered resync event (a delivery changes status, so the update is never HOT); this index
-- drops a row as it is delivered, and trigger events (run_id null) never enter it.
create index events_open_by_run on suekk_sync.events (run_id)
  where run_id is not null and status in ('pending', 'failed');
drop index if exists suekk_sync.events_by_run;

-- Events waiting for their next round (a round that did not deliver). With events_failed_by_user
-- these are the events that hold their user's later events back: resync counts the run's events
-- blocked behind them by probing just these users, and retry --all-failed finds them. Only a
-- rescheduled event enters it (rounds > 0 while still pending): never a new or delivered one.
create index events_waiting_by_user on suekk_sync.events (user_id, id)
  where status = 'pending' and rounds > 0;
