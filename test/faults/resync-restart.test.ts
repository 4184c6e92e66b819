/**
 * A resync of an existing users table (suekk-sync just installed) meets every interruption at
 * once: the relay delivering it is killed (SIGKILL) mid-delivery, the resync is stopped by Ctrl-C
 * mid-enqueue, its first `--resume` is killed in the middle of a batch, and writers keep changing
 * users throughout. A second relay and a second `--resume` finish the job. Checked by webhook-id
 * and user: every user arrives with its final state, each user's events in capture order, one
 * resync event per user, and the only duplicates are events the killed relay had in flight.
 *
 * The interruptions land mid-way on purpose, not by timing: an uncommitted update holds a user's
 * row, and the resync's `FOR SHARE` batch waits on it, so the test knows where enqueueing stands.
 */
import pg from 'pg';
import t from 'tap';
import { install } from '../../src/capture/install.ts';
import { DEFAULT_SOURCE } from '../../src/config.ts';
import { createPool } from '../../src/db/pool.ts';
import { collect, startCli } from '../helpers/cli.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { startReceiver, waitFor } from '../helpers/receiver.ts';
import { addUsers, eventStatuses } from '../helpers/relay.ts';
import { captureOrder, firstArrivals, relayProcess, sorted, startWriter } from './fault-helpers.ts';

const USERS = 2_000;
const RELAY_FLAGS = [
  '--concurrency',
  '8',
  '--batch-size',
  '16',
  '--poll-interval-ms',
  '200',
  '--lease-ms',
  '3000',
  '--backoff-ms',
  '20',
  '--retry-schedule',
  '200ms',
];

/** An open transaction holding one user's row with an uncommitted change, until released. */
async function holdRow(t: { teardown(fn: () => unknown): void }, db: TestDatabase, userId: string, firstName: string) {
  const client = new pg.Client({ connectionString: db.url, application_name: 'suekk-sync test row holder' });
  await client.connect();
  t.teardown(() => client.end().catch(() => undefined));
  const { rows } = await client.query<{ pid: number }>('select pg_backend_pid() as pid');
  await client.query('begin');
  await client.query('update users set first_name = $1 where id = $2', [firstName, userId]);
  return { pid: rows[0]!.pid, release: () => client.query('commit') };
}

/**
 * The resync's batch waits for the held row: enqueueing stands still exactly there. (Waits on a
 * relay's claim or a writer are brief and do not count.)
 */
async function resyncWaitsOn(db: TestDatabase, holder: { pid: number }): Promise<boolean> {
  const { rows } = await db.pool.query<{ n: number }>(
    `select count(*)::int as n from pg_stat_activity
      where datname = current_database() and application_name = 'suekk-sync cli' and $1 = any(pg_blocking_pids(pid))`,
    [holder.pid],
  );
  return rows[0]!.n > 0;
}

async function runState(db: TestDatabase) {
  const { rows } = await db.pool.query<{ id: string; enqueued: number; cursor: string | null; finished: boolean }>(
    'select id::text, enqueued::int, cursor, finished_at is not null as finished from suekk_sync.resync_runs order by resync_runs.id',
  );
  return rows;
}

t.test(
  'relay killed and resync interrupted twice mid-way, then resumed: every user once, in order, with its final state',
  async (t) => {
    const started = performance.now();
    // An auth database that had users before suekk-sync: nothing captured for them until a resync.
    const db = await createTestDatabase(t, 'users');
    const users = await addUsers(db, USERS, 'rs');
    const installPool = createPool(db.url, { max: 1 });
    await install(installPool, { source: DEFAULT_SOURCE });
    await installPool.end();
    const { rows: ordered } = await db.pool.query<{ id: string }>('select id::text from users order by users.id');
    const byKey = ordered.map((r) => r.id);

    let delayMs = 25;
    let answering = 0;
    const receiver = await startReceiver(t, async () => {
      answering++;
      await new Promise((r) => setTimeout(r, delayMs));
      answering--;
      return { status: 200 };
    });
    const env = { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url };
    // Without a backend URL the resync can never deliver by itself (it does when it finds no relay
    // alive): only the relay processes deliver, so only their kill explains a repeat.
    const resyncEnv = { DATABASE_URL: db.url };
    const relayUp = (pid: number) => async () =>
      (await db.pool.query('select 1 from suekk_sync.relays where pid = $1', [pid])).rowCount === 1;
    const relayA = relayProcess(t, env, RELAY_FLAGS);
    await waitFor(relayUp(relayA.child.pid!), 'relay A up', 60_000);

    // Writers change users the whole time, some of them in the stretch the resync has not reached.
    const writer = startWriter(db.url, [...byKey.slice(0, 10), ...byKey.slice(-10)], 40);
    t.teardown(() => writer.stop());

    const holdFirst = await holdRow(t, db, byKey[Math.floor(USERS * 0.3)]!, 'held-first');
    const holdSecond = await holdRow(t, db, byKey[Math.floor(USERS * 0.65)]!, 'held-second');

    // 1. resync --all, stopped by Ctrl-C while its batch waits at 30%.
    const first = startCli(['resync', '--all', '--batch-size', '50', '--no-wait'], { env: resyncEnv });
    const firstDone = collect(first, 120_000);
    await waitFor(() => resyncWaitsOn(db, holdFirst), 'the resync reaching the first held row', 60_000);
    const [run] = await runState(db);
    t.ok(
      run!.enqueued > USERS * 0.3 - 50 && run!.enqueued <= USERS * 0.3,
      `enqueued ${run!.enqueued}, up to the batch with the held row`,
    );

    // 2. Relay A killed while it delivers what was enqueued: it has requests in flight.
    await waitFor(
      () => receiver.requests.length >= 60 && answering > 0,
      'relay A in the middle of delivering the resync',
      60_000,
    );
    relayA.child.kill('SIGKILL');
    const relayAOut = await relayA.done;
    // What the killed relay had sent may still be on its way into the receiver, and a commit it had
    // sent still lands server-side: both settle before the marks are read.
    let seen = -1;
    await waitFor(
      async () => {
        const now = receiver.requests.length;
        const settled = now === seen;
        seen = now;
        if (!settled) await new Promise((r) => setTimeout(r, 500));
        return settled;
      },
      'the receiver quiet after the kill',
      30_000,
    );
    const receivedBeforeKill = new Set(receiver.requests.map((r) => r.webhookId));
    const { rows: markedRows } = await db.pool.query<{ id: string }>(
      "select 'evt_' || webhook_id as id from suekk_sync.event_log where status = 'delivered'",
    );
    const marked = new Set(markedRows.map((r) => r.id));
    // Sent (perhaps even answered) but not recorded as delivered: these may arrive again.
    const inFlight = new Set([...receivedBeforeKill].filter((id) => !marked.has(id)));

    first.kill('SIGINT');
    await new Promise((r) => setTimeout(r, 200));
    await holdFirst.release();
    const firstOut = await firstDone;
    t.equal(firstOut.code, 1, 'an interrupted resync exits 1');
    t.match(firstOut.stdout, /Interrupted: run 1 enqueued \d+ of 2000; continue with `suekk-sync resync --resume`\./);
    t.match(firstOut.stderr, /Stopping after the current batch/);
    const [afterInterrupt] = await runState(db);
    t.equal(afterInterrupt!.finished, false, 'the run is left open for --resume');

    // 3. A new relay; --resume, killed (SIGKILL) in the middle of a batch waiting at 65%.
    delayMs = 2;
    const relayB = relayProcess(t, env, [...RELAY_FLAGS, '--concurrency', '16']);
    const second = startCli(['resync', '--resume', '--batch-size', '50', '--no-wait'], { env: resyncEnv });
    const secondDone = collect(second, 120_000);
    await waitFor(() => resyncWaitsOn(db, holdSecond), 'the resumed resync reaching the second held row', 60_000);
    const [beforeCrash] = await runState(db);
    t.ok(
      beforeCrash!.enqueued > USERS * 0.65 - 50 && beforeCrash!.enqueued <= USERS * 0.65,
      `the resume went on from the cursor to the held row (${beforeCrash!.enqueued})`,
    );
    second.kill('SIGKILL');
    t.equal((await secondDone).signal, 'SIGKILL');
    await holdSecond.release();
    // The killed batch's statement ends server-side, one way or the other.
    await waitFor(
      async () => {
        const { rows } = await db.pool.query(
          "select 1 from pg_stat_activity where datname = current_database() and application_name = 'suekk-sync cli'",
        );
        return rows.length === 0;
      },
      'the killed batch gone',
      30_000,
    );
    const [afterCrash] = await runState(db);
    // A batch is one statement: killed mid-way, the server either rolls it back or, once the row
    // is free, finishes it whole. Either way the run's count and cursor match what is in the outbox.
    const { rows: runEvents } = await db.pool.query<{ n: number }>(
      "select count(*)::int as n from suekk_sync.event_log where run_id = 1 and source = 'resync'",
    );
    t.ok(
      afterCrash!.enqueued === beforeCrash!.enqueued || afterCrash!.enqueued === beforeCrash!.enqueued + 50,
      `the killed batch landed whole or not at all (${beforeCrash!.enqueued} → ${afterCrash!.enqueued})`,
    );
    t.equal(runEvents[0]!.n, afterCrash!.enqueued, "the run's count is what its events in the outbox say");

    // 4. --resume again, to the end, waiting for delivery by the new relay.
    await waitFor(relayUp(relayB.child.pid!), 'relay B up', 60_000);
    const third = startCli(['resync', '--resume', '--batch-size', '50', '--json'], { env: resyncEnv });
    const thirdOut = await collect(third, 120_000);
    t.equal(thirdOut.code, 0, thirdOut.stderr);
    const summary = JSON.parse(thirdOut.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
    t.match(summary, { runId: '1', total: USERS, enqueued: USERS, delivered: USERS, failed: 0, interrupted: false });
    await writer.stop();

    await waitFor(
      async () => {
        const s = await eventStatuses(db);
        return Object.keys(s).length === 1 && s.delivered !== undefined;
      },
      'every event delivered',
      60_000,
      () => receiver.requests.length,
    );
    relayB.child.kill('SIGTERM');
    const relayBOut = await relayB.done;
    t.equal(relayBOut.code, 0, relayBOut.stderr);
    // A relay that cannot renew its lease in time (a starved machine) aborts its request, and the
    // event goes again: by design, and said in its log.
    const lostLease = new Set(
      `${relayAOut.stdout}\n${relayBOut.stdout}`
        .split('\n')
        .filter((l) => l.includes('Could not renew the lease in time'))
        .map((l) => String((JSON.parse(l) as { userId?: string }).userId)),
    );

    // One resync event per user: neither the interruption nor the killed batch enqueued anyone twice.
    const { rows: perUser } = await db.pool.query<{ user_id: string; n: number }>(
      "select user_id, count(*)::int as n from suekk_sync.event_log where source = 'resync' group by user_id",
    );
    t.equal(perUser.length, USERS, 'every user resynced');
    t.same(
      perUser.filter((r) => r.n !== 1),
      [],
      'each exactly once',
    );

    // By webhook-id and user, against what was captured.
    const capture = await captureOrder(db.pool);
    t.same(
      sorted(firstArrivals(receiver.requests)),
      sorted(capture),
      'every captured event arrived, each user in capture order',
    );
    const counts = new Map<string, number>();
    for (const r of receiver.requests) counts.set(r.webhookId, (counts.get(r.webhookId) ?? 0) + 1);
    const userOf = new Map(receiver.requests.map((r) => [r.webhookId, String(r.body.id)]));
    const repeated = [...counts].filter(([, n]) => n > 1).map(([id]) => id);
    t.same(
      repeated.filter((id) => !inFlight.has(id) && !lostLease.has(userOf.get(id)!)),
      [],
      `duplicates only of events in flight at the kill (${repeated.length} repeated, ${inFlight.size} in flight, ${lostLease.size} users' leases lost)`,
    );
    t.ok(inFlight.size > 0, `the kill cut ${inFlight.size} deliveries short`);

    // The last thing each user's backend copy heard is the user's final state.
    const { rows: finals } = await db.pool.query<{ id: string; display: string }>(
      "select id::text, coalesce((suekk_sync.user_payload(u) || '}')::json->>'displayName', '') as display from users u",
    );
    const last = new Map<string, string>();
    for (const r of receiver.requests) last.set(String(r.body.id), String(r.body.displayName));
    const stale = finals
      .filter((f) => last.get(f.id) !== f.display)
      .map((f) => `${f.id}: ${last.get(f.id)} != ${f.display}`);
    t.same(stale, [], 'every user last received its final state');
    t.ok(writer.count() > 20, `${writer.count()} writes during the run`);
    t.equal(users.length, USERS);
    t.comment(
      `resync-restart took ${Math.round(performance.now() - started)} ms, ${receiver.requests.length} requests`,
    );
  },
);
