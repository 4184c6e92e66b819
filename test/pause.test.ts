/** pause / resume: a running relay stops claiming, events wait in the outbox, resume delivers them. */
import t from 'tap';
import { describePause } from '../src/cli/pause-lines.ts';
import { setPaused } from '../src/ops/pause.ts';
import { UsageError } from '../src/errors.ts';
import { runCli } from './helpers/cli.ts';
import { createTestDatabase } from './helpers/db.ts';
import { startReceiver, waitFor } from './helpers/receiver.ts';
import { addUsers, eventStatuses, startTestRelay } from './helpers/relay.ts';

t.test('pause holds new events back from a running relay; resume delivers them', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  const { relay } = await startTestRelay(t, db, receiver.url);
  await addUsers(db, 2, 'before');
  await waitFor(() => receiver.delivered.length === 2, 'the first two users delivered');

  const paused = await runCli(['pause'], { env: { DATABASE_URL: db.url } });
  t.equal(paused.code, 0, paused.stderr);
  t.equal(
    paused.stdout,
    'Paused: relays finish the users in flight and claim no more until `suekk-sync resume`; changes are still captured (0 events waiting).\n',
  );
  await waitFor(() => relay.paused, 'the relay heard the pause');

  await addUsers(db, 3, 'during');
  // Several poll intervals (250 ms) and NOTIFY wake-ups: a relay that ignored the pause would have sent them.
  await new Promise((r) => setTimeout(r, 800));
  t.equal(receiver.requests.length, 2, 'nothing sent while paused');
  t.same(await eventStatuses(db), { delivered: 2, pending: 3 }, 'the changes wait in the outbox');

  t.equal(describePause(await setPaused(db.pool, true)), 'Already paused; run `suekk-sync resume` to deliver again.');

  const resumed = await runCli(['resume'], { env: { DATABASE_URL: db.url } });
  t.equal(resumed.code, 0, resumed.stderr);
  t.equal(resumed.stdout, 'Resumed: relays deliver the 3 events waiting now.\n');
  await waitFor(() => receiver.delivered.length === 5, 'the waiting users delivered');
  t.same(
    receiver.delivered
      .slice(2)
      .map((r) => r.body.username)
      .sort(),
    ['during1', 'during2', 'during3'],
  );
  await waitFor(async () => (await eventStatuses(db)).delivered === 5, 'all marked delivered');
});

t.test('a relay that misses the NOTIFY still obeys the switch', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  const { relay } = await startTestRelay(t, db, receiver.url, { listen: false });
  const result = await setPaused(db.pool, true);
  t.same(result, { paused: true, changed: true, backlog: 0, relaysAlive: 1 });
  await addUsers(db, 1);
  // The claim query reads the switch itself: no heartbeat needs to pass first.
  await new Promise((r) => setTimeout(r, 600));
  t.equal(receiver.requests.length, 0);
  t.same(await setPaused(db.pool, false), { paused: false, changed: true, backlog: 1, relaysAlive: 1 });
  await waitFor(async () => (await eventStatuses(db)).delivered === 1, 'delivered after resume, found by the poll');
  t.equal(relay.paused, false);
  t.same(await setPaused(db.pool, false), { paused: false, changed: false, backlog: 0, relaysAlive: 1 });
});

t.test('resume with no relay alive says to start one; not installed is a usage error', async (t) => {
  const db = await createTestDatabase(t);
  await setPaused(db.pool, true);
  await addUsers(db, 2);
  t.equal(
    describePause(await setPaused(db.pool, false)),
    'Resumed, but no relay is alive: start `suekk-sync relay` to deliver the 2 events waiting.',
  );
  t.equal(describePause(await setPaused(db.pool, false)), 'Not paused; relays are delivering as usual.');
  const bare = await createTestDatabase(t, 'users');
  await t.rejects(setPaused(bare.pool, true), UsageError);
  await t.rejects(setPaused(bare.pool, true), /not installed.*suekk-sync install/);
});
