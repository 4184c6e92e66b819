/**
 * A relay whose database stalls past its lease must stop sending before another relay takes its
 * users: relay A has a request in flight to a slow backend when the streams table is locked for
 * longer than the lease, so A cannot renew. A aborts its request before the lease ends; relay B
 * takes the user afterwards. The backend never sees two requests for one user at once, and the
 * only event sent twice is the one whose request A had started.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import t from 'tap';
import { createPool } from '../../src/db/pool.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { waitFor } from '../helpers/receiver.ts';
import { addUsers, eventStatuses, startTestRelay } from '../helpers/relay.ts';
import { captureOrder, firstArrivals, sorted } from './fault-helpers.ts';

interface Seen {
  webhookId: string;
  body: Record<string, unknown>;
  at: number;
  closedAt?: number;
  answered: boolean;
}

t.test('a stalled relay aborts its request before its lease ends; no concurrent sends for a user', async (t) => {
  const db = await createTestDatabase(t);
  const requests: Seen[] = [];
  const open = new Map<string, number>();
  const overlaps: string[] = [];
  let slowFirst = true;
  const server: Server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(parts).toString('utf8')) as Record<string, unknown>;
      const seen: Seen = { webhookId: String(req.headers['webhook-id']), body, at: performance.now(), answered: false };
      requests.push(seen);
      const user = String(body.id);
      if ((open.get(user) ?? 0) > 0) overlaps.push(`${user} ${seen.webhookId}`);
      open.set(user, (open.get(user) ?? 0) + 1);
      let closed = false;
      const close = (): void => {
        if (closed) return;
        closed = true;
        seen.closedAt = performance.now();
        open.set(user, open.get(user)! - 1);
      };
      res.on('close', close);
      const delay = slowFirst ? 15_000 : 5;
      slowFirst = false;
      setTimeout(() => {
        if (res.destroyed) return;
        seen.answered = true;
        // Answered is over for this check: the response's 'close' event can come after the
        // relay, already holding the answer, has sent the user's next request.
        close();
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"success":true}');
      }, delay);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/internal/users/sync`;

  // Long enough that its margin (a fifth) outlasts event-loop lag on a loaded 2-core machine.
  const leaseMs = 3_000;
  const settings = { leaseMs, timeoutMs: 20_000, pollIntervalMs: 200 };
  // Each relay with a pool of its own, as separate processes would have.
  const poolA = createPool(db.url, { max: 4 });
  const poolB = createPool(db.url, { max: 4 });
  t.teardown(async () => {
    await poolA.end().catch(() => undefined);
    await poolB.end().catch(() => undefined);
  });
  const a = await startTestRelay(t, { ...db, pool: poolA }, url, { settings });
  const [user] = await addUsers(db, 1, 'lease');
  await db.pool.query("update users set first_name = 'second' where id = $1", [user]);
  await db.pool.query("update users set first_name = 'third' where id = $1", [user]);
  await waitFor(() => requests.length === 1, 'relay A sending the first event to the slow backend', 10_000);
  const b = await startTestRelay(t, { ...db, pool: poolB }, url, { settings });
  await new Promise((r) => setTimeout(r, 100));
  t.equal(requests.length, 1, 'relay B leaves the user to A while A holds the lease');

  // Stall the database for A (and everyone) for longer than the lease.
  const locker = new pg.Client({ connectionString: db.url });
  await locker.connect();
  t.teardown(() => locker.end().catch(() => undefined));
  await locker.query('begin');
  await locker.query('lock table suekk_sync.streams in access exclusive mode');
  const lockedAt = performance.now();
  await waitFor(() => requests[0]!.closedAt !== undefined, 'A aborting its in-flight request', leaseMs + 1_000);
  const abortedAfter = requests[0]!.closedAt! - lockedAt;
  await new Promise((r) => setTimeout(r, Math.max(0, leaseMs + 1_000 - (performance.now() - lockedAt))));
  await locker.query('commit');

  await waitFor(
    async () => (await eventStatuses(db)).delivered === 3,
    'all three events delivered after the stall',
    15_000,
    () => requests.length,
  );
  t.same(overlaps, [], 'never two requests for the user at once');
  t.notOk(requests[0]!.answered, "A's request was cut off, not answered");
  t.ok(
    abortedAfter < leaseMs,
    `A aborted ${Math.round(abortedAfter)} ms into the stall, before its ${leaseMs} ms lease could end`,
  );
  t.ok(
    a.logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('Could not renew the lease in time')),
    'A says it could not renew the lease',
  );
  const capture = await captureOrder(db.pool);
  t.same(sorted(firstArrivals(requests as never)), sorted(capture), 'in capture order, every captured webhook-id');
  const counts = new Map<string, number>();
  for (const r of requests) counts.set(r.webhookId, (counts.get(r.webhookId) ?? 0) + 1);
  const first = capture.get(user!)![0]!;
  t.same(
    [...counts].filter(([, n]) => n > 1).map(([id]) => id),
    [first],
    'the only event sent twice is the one whose request A had started',
  );
  t.equal(counts.get(first), 2, 'and it was sent exactly twice');
  const later = requests.slice(1);
  t.ok(
    later.every((r) => r.at > requests[0]!.closedAt!),
    "every later request started after A's request ended",
  );
  await a.stop();
  await b.stop();
});

t.test(
  'a dropped database connection stops the requests in flight at once; the event is sent again, same webhook-id',
  async (t) => {
    // The relay commits asynchronously, so a crash may lose its newest leases: it must not keep a
    // request open that another relay could duplicate once the server is back.
    const db = await createTestDatabase(t);
    const requests: Seen[] = [];
    let first = true;
    const server: Server = createServer((req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (c: Buffer) => parts.push(c));
      req.on('end', () => {
        const seen: Seen = {
          webhookId: String(req.headers['webhook-id']),
          body: JSON.parse(Buffer.concat(parts).toString('utf8')),
          at: performance.now(),
          answered: false,
        };
        requests.push(seen);
        res.on('close', () => (seen.closedAt ??= performance.now()));
        const delay = first ? 8_000 : 5;
        first = false;
        setTimeout(() => {
          if (res.destroyed) return;
          seen.answered = true;
          res.writeHead(200).end('{}');
        }, delay);
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    t.teardown(
      () =>
        new Promise<void>((r) => {
          server.closeAllConnections();
          server.close(() => r());
        }),
    );
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/internal/users/sync`;
    const relay = await startTestRelay(t, db, url, {
      settings: { leaseMs: 30_000, timeoutMs: 20_000, pollIntervalMs: 200 },
    });
    const [user] = await addUsers(db, 1, 'dropped');
    await waitFor(() => requests.length === 1, 'the first request reaching the slow backend', 10_000);
    const killedAt = performance.now();
    await db.pool.query(
      "select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'suekk-sync relay listen' and datname = current_database()",
    );
    await waitFor(() => requests[0]!.closedAt !== undefined, 'the request in flight cut off', 5_000);
    t.ok(
      requests[0]!.closedAt! - killedAt < 2_000,
      `cut off ${Math.round(requests[0]!.closedAt! - killedAt)} ms after the connection dropped, not at its 8 s answer or 30 s lease`,
    );
    t.notOk(requests[0]!.answered, 'not answered');
    await waitFor(
      async () => (await eventStatuses(db)).delivered === 1,
      'the event delivered after all',
      15_000,
      () => requests.length,
    );
    t.equal(new Set(requests.map((r) => r.webhookId)).size, 1, 'every request carried the one webhook-id');
    t.ok(
      requests.every((r) => r.body.id === user),
      'all for the one user',
    );
    t.ok(
      relay.logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('A database connection dropped')),
      'the relay says why it stopped the request',
    );
    await relay.stop();
  },
);
