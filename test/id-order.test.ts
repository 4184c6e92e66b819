/**
 * Event and run ids are bigints sent to JavaScript as text. Ordering must stay numeric where they
 * cross a power of ten ('10' sorts before '9' as text): a push that judged its user's events out
 * of order waited forever, tail-log showed the wrong "last" events, `resync --resume` could pick
 * an older run.
 */
import t from 'tap';
import { recentEntries } from '../src/ops/tail.ts';
import { eventStates } from '../src/db/outbox-queries.ts';
import { resync } from '../src/ops/resync.ts';
import { createTestDatabase } from './helpers/db.ts';
import { addUsers } from './helpers/relay.ts';
import { testSettings } from './helpers/settings.ts';

t.test('ids past 9 keep their numeric order in tail-log, settle and resync --resume', async (t) => {
  const db = await createTestDatabase(t);
  await addUsers(db, 12);
  const recent = await recentEntries(db.pool, {}, 5);
  t.same(
    recent.map((e) => e.id),
    ['8', '9', '10', '11', '12'],
    'tail-log -n 5: the last five, oldest first',
  );
  const states = await eventStates(db.pool, ['10', '2', '9']);
  t.same(
    states.map((s) => s.id),
    ['2', '9', '10'],
    'settle reads events in capture order',
  );

  await db.pool.query(
    `insert into suekk_sync.resync_runs (filter) select '{"userIds": []}'::jsonb from generate_series(1, 10)`,
  );
  const resumed = await resync(db.pool, testSettings(db.url), { resume: true, wait: false });
  t.equal(resumed.runId, '10', 'the latest interrupted run is resumed');
});
