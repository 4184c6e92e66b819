-- The doorbell that keeps NOTIFY off the writers' path under load (README, "One ring per look").
-- It holds the transaction id of the writer that rang last (0 or never set: nobody rang since a
-- relay last looked). A sequence, because both sides must see a change at once, outside their
-- snapshots and whatever their transactions do afterwards: setval is not transactional.
create sequence suekk_sync.wake_pending as bigint minvalue 0 start 0;
