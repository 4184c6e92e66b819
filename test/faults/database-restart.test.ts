/**
 * PostgreSQL restarts under a running relay and a busy writer: the relay reconnects by itself,
 * LISTEN comes back (the poll is set far beyond the test), and every committed change arrives,
 * each user's in capture order. Runs its own embedded PostgreSQL, never the machine's.
 */
import t from 'tap';
import { startReceiver, waitFor } from '../helpers/receiver.ts';
import { addUsers, eventStatuses } from '../helpers/relay.ts';
import { captureOrder, firstArrivals, ownPostgres, relayProcess, sorted, startWriter } from './fault-helpers.ts';

const LISTEN_APP = 'suekk-sync relay listen';

t.test(
  'restart quick and restart after 10 s down: reconnects, LISTEN back, every committed event delivered in order',
  async (t) => {
    const started = performance.now();
    const pg = await ownPostgres(t);
    const { db } = pg;
    const receiver = await startReceiver(t, () => ({ status: 200, delayMs: 2 }));
    const users = await addUsers(db, 8, 'restart');
    // Poll far longer than the test: prompt delivery after a restart can only come from LISTEN
    // (or the relay's own reconnect drain), never from the backstop.
    const relay = relayProcess(t, { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url }, [
      '--poll-interval-ms',
      '600000',
      '--backoff-ms',
      '20',
      '--retry-schedule',
      '200ms',
      '--lease-ms',
      '3000',
      '--concurrency',
      '8',
    ]);
    await waitFor(() => receiver.delivered.length >= 8, 'the relay delivering the first users', 60_000);
    const writer = startWriter(db.url, users, 5);
    t.teardown(() => writer.stop());

    const listenConnections = async () => {
      try {
        const { rows } = await db.pool.query<{ n: number }>(
          'select count(*)::int as n from pg_stat_activity where application_name = $1',
          [LISTEN_APP],
        );
        return rows[0]!.n;
      } catch {
        return -1;
      }
    };

    for (const downMs of [0, 10_000]) {
      await waitFor(() => writer.count() >= 40, 'the writer committing', 30_000);
      const beforeStop = writer.count();
      await pg.stop();
      await new Promise((r) => setTimeout(r, downMs));
      await pg.start();
      await waitFor(
        () => writer.count() > beforeStop + 30,
        `the writer committing again after a restart (down ${downMs} ms)`,
        60_000,
      );
      await waitFor(async () => (await listenConnections()) === 1, `LISTEN re-established (down ${downMs} ms)`, 30_000);
    }
    await writer.stop();
    t.ok(writer.failures > 0, `the writer saw the database go away (${writer.failures} failed writes retried)`);

    // Everything committed before now arrives without the poll.
    await waitFor(
      async () => {
        const s = await eventStatuses(db);
        return (s.pending ?? 0) === 0 && (s.delivering ?? 0) === 0;
      },
      'every event delivered after the restarts',
      60_000,
      () => receiver.requests.length,
    );

    // LISTEN (not the 10-minute poll) wakes the relay for a change made on an idle relay.
    const wokeAt = performance.now();
    const [late] = await addUsers(db, 1, 'afterrestart');
    await waitFor(
      () => receiver.delivered.some((r) => r.body.id === late),
      'a change after the restarts delivered promptly',
      5_000,
    );
    t.ok(performance.now() - wokeAt < 3_000, 'delivered within 3 s, so by LISTEN');
    // The receiver has the late event a moment before the relay records it as delivered.
    await waitFor(async () => ((await eventStatuses(db)).pending ?? 0) === 0, 'the late delivery recorded', 10_000);

    const statuses = await eventStatuses(db);
    t.same(
      statuses,
      { delivered: Object.values(statuses).reduce((a, b) => a + b, 0) },
      'every event delivered, none failed',
    );
    const capture = await captureOrder(db.pool);
    const capturedIds = new Set([...capture.values()].flat());
    const deliveredIds = new Set(receiver.delivered.map((r) => r.webhookId));
    t.same(
      [...capturedIds].filter((id) => !deliveredIds.has(id)),
      [],
      'no captured event missing at the receiver',
    );
    t.same(
      [...deliveredIds].filter((id) => !capturedIds.has(id)),
      [],
      'nothing delivered that was not captured',
    );
    t.same(sorted(firstArrivals(receiver.requests)), sorted(capture), 'each user in capture order');
    const repeated = receiver.requests.length - new Set(receiver.requests.map((r) => r.webhookId)).size;
    t.ok(repeated <= 16, `repeats only for events in flight at a restart (${repeated})`);

    // Every acknowledged write reached the backend as that user's state, and the last one last.
    for (const [user, values] of writer.committed) {
      const names = receiver.delivered
        .filter((r) => r.body.id === user)
        .map((r) => String(r.body.displayName).split(' ')[0]);
      const missing = values.filter((v) => !names.includes(v));
      t.same(missing, [], `user ${user}: every committed write delivered`);
      t.equal(names.at(-1), values.at(-1), `user ${user}: the latest state arrived last`);
    }
    t.ok(writer.count() > 100, `the writer committed ${writer.count()} changes across the restarts`);

    relay.child.kill('SIGTERM');
    const out = await relay.done;
    t.equal(out.code, 0, out.stderr);
    t.match(out.stdout, /LISTEN connection is back/);
    t.comment(`database-restart took ${Math.round(performance.now() - started)} ms`);
  },
);
