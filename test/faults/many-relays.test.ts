/** Four relay processes on one database while writers keep changing users: per-user order, no duplicates. */
import t from 'tap';
import { createTestDatabase } from '../helpers/db.ts';
import { startReceiver, waitFor, type ReceivedRequest } from '../helpers/receiver.ts';
import { addUsers, eventStatuses } from '../helpers/relay.ts';
import { captureOrder, firstArrivals, relayProcess, sorted, startWriter } from './fault-helpers.ts';

t.test(
  'four relays under load: every event once, each user in capture order, never two at once for a user',
  async (t) => {
    const db = await createTestDatabase(t);
    const inFlight = new Map<string, number>();
    const overlaps: string[] = [];
    const receiver = await startReceiver(t, async (req: ReceivedRequest) => {
      const user = String(req.body.id);
      const n = (inFlight.get(user) ?? 0) + 1;
      inFlight.set(user, n);
      if (n > 1) overlaps.push(`${user} ${req.webhookId}`);
      await new Promise((r) => setTimeout(r, 3));
      inFlight.set(user, (inFlight.get(user) ?? 1) - 1);
      return { status: 200 };
    });
    const users = await addUsers(db, 40, 'many');
    const env = { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url };
    const relays = Array.from({ length: 4 }, () =>
      relayProcess(t, env, [
        '--concurrency',
        '6',
        '--batch-size',
        '4',
        '--poll-interval-ms',
        '300',
        '--lease-ms',
        '5000',
        '--backoff-ms',
        '20',
      ]),
    );
    await waitFor(
      async () => (await db.pool.query('select 1 from suekk_sync.relays')).rowCount === 4,
      'four relays up',
      90_000,
    );
    const writers = [startWriter(db.url, users.slice(0, 20), 2), startWriter(db.url, users.slice(20), 2)];
    t.teardown(() => Promise.all(writers.map((w) => w.stop())));
    await new Promise((r) => setTimeout(r, 6_000));
    await Promise.all(writers.map((w) => w.stop()));
    const writes = writers.reduce((a, w) => a + w.count(), 0);
    const total = writes + 40;
    await waitFor(
      async () => (await eventStatuses(db)).delivered === total,
      `all ${total} events delivered`,
      30_000,
      () => receiver.requests.length,
    );

    const capture = await captureOrder(db.pool);
    t.same(
      sorted(firstArrivals(receiver.requests)),
      sorted(capture),
      'each user in capture order, every captured webhook-id',
    );
    t.equal(
      receiver.requests.length,
      total,
      `no duplicates (${receiver.requests.length} requests for ${total} events)`,
    );
    t.same(overlaps, [], 'never two requests for one user at once');
    t.ok(writes > 50, `${writes} writes during the run`);
    for (const r of relays) r.child.kill('SIGTERM');
    for (const r of relays) t.equal((await r.done).code, 0);
  },
);
