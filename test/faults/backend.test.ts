/**
 * Backend faults: an outage longer than several rounds (ridden out without an operator), one past
 * --give-up-after (failed, then `retry --all-failed`), a 50 MB answer and an answer that never
 * comes (bounded time and memory). Each asserts what arrived, by webhook-id and user.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { createTestDatabase } from '../helpers/db.ts';
import { runCli } from '../helpers/cli.ts';
import { startReceiver, waitFor } from '../helpers/receiver.ts';
import { addUsers, eventStatuses, startTestRelay } from '../helpers/relay.ts';
import { captureOrder, firstArrivals, relayProcess, rssKb, sorted } from './fault-helpers.ts';

/** Only the requests answered 2xx, per user in arrival order, each webhook-id once. */
function deliveredPerUser(requests: { webhookId: string; body: Record<string, unknown> }[]) {
  return firstArrivals(requests as never);
}

t.test('backend down for many rounds, then back: everything delivered in order, no operator', async (t) => {
  const db = await createTestDatabase(t);
  let down = true;
  const receiver = await startReceiver(t, () => (down ? { status: 503 } : { status: 200 }));
  const { logs } = await startTestRelay(t, db, receiver.url, {
    settings: { retryScheduleMs: [100, 200], maxAttempts: 2, backoffMs: 10, breakerThreshold: 4 },
  });
  const users = await addUsers(db, 6, 'outage');
  for (let i = 0; i < 3; i++) await db.pool.query("update users set first_name = 'v' || $1::text", [i]);
  // Long enough for several rounds of every head event.
  await waitFor(
    async () => {
      const { rows } = await db.pool.query<{ n: number }>(
        'select coalesce(min(rounds), 0)::int as n from suekk_sync.event_log where id in (select min(id) from suekk_sync.event_log group by user_id)',
      );
      return rows[0]!.n >= 3;
    },
    'three failed rounds for every user',
    20_000,
  );
  t.equal(receiver.delivered.length, 0, 'nothing accepted while down');
  const downIds = new Set(receiver.requests.map((r) => r.webhookId));
  const capture = await captureOrder(db.pool);
  const heads = new Set([...capture.values()].map((ids) => ids[0]!));
  t.same(
    [...downIds].filter((id) => !heads.has(id)),
    [],
    "while down, only each user's first event was tried: later ones wait behind it",
  );
  t.same((await eventStatuses(db)).failed, undefined, 'no event failed during the outage');
  t.ok(
    logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('The backend looks down')),
    'the breaker opened',
  );

  down = false;
  await waitFor(
    async () => (await eventStatuses(db)).delivered === 24,
    'all 24 events delivered after the outage',
    20_000,
    () => receiver.delivered.length,
  );
  t.same(
    sorted(deliveredPerUser(receiver.delivered)),
    sorted(capture),
    'every event delivered once per user, in capture order',
  );
  t.equal(receiver.delivered.length, 24, 'no event accepted twice');
  t.equal(users.length, 6);
});

t.test(
  'backend down past --give-up-after: failed, then retry --all-failed delivers all in order with the same webhook-ids',
  async (t) => {
    const db = await createTestDatabase(t);
    let down = true;
    const receiver = await startReceiver(t, () => (down ? { status: 502 } : { status: 200 }));
    await startTestRelay(t, db, receiver.url, {
      settings: { retryScheduleMs: [100], giveUpAfterMs: 700, maxAttempts: 2, backoffMs: 10 },
    });
    const users = await addUsers(db, 4, 'giveup');
    for (let i = 0; i < 2; i++) await db.pool.query("update users set first_name = 'v' || $1::text", [i]);
    const capture = await captureOrder(db.pool);
    await waitFor(
      async () => (await eventStatuses(db)).failed === 4,
      "each user's head event failed",
      15_000,
      async () => eventStatuses(db),
    );
    const { rows: failed } = await db.pool.query<{ webhook_id: string; user_id: string }>(
      "select 'evt_' || webhook_id as webhook_id, user_id from suekk_sync.event_log where status = 'failed' order by id",
    );
    t.same(
      failed.map((f) => f.webhook_id).sort(),
      [...capture.values()].map((ids) => ids[0]!).sort(),
      "the failed events are the users' first ones",
    );
    const { rows: parked } = await db.pool.query<{ n: number }>(
      'select count(*)::int as n from suekk_sync.streams where parked',
    );
    t.equal(parked[0]!.n, 4, 'every user parked');
    const triedBefore = new Set(receiver.requests.map((r) => r.webhookId));
    await new Promise((r) => setTimeout(r, 400));
    t.equal(
      receiver.requests.filter((r) => !triedBefore.has(r.webhookId)).length,
      0,
      'parked users get nothing further (no later event jumps the failed one)',
    );

    down = false;
    const retried = await runCli(['retry', '--all-failed'], {
      env: { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url },
      timeoutMs: 30_000,
    });
    t.equal(retried.code, 0, `retry exits 0: ${retried.stdout} ${retried.stderr}`);
    await waitFor(
      async () => (await eventStatuses(db)).delivered === 12,
      'all 12 delivered',
      15_000,
      () => receiver.delivered.length,
    );
    t.same(
      sorted(deliveredPerUser(receiver.delivered)),
      sorted(capture),
      'delivered per user in capture order, with the captured webhook-ids',
    );
    for (const f of failed) t.ok(triedBefore.has(f.webhook_id), `${f.webhook_id} kept its webhook-id across the retry`);
    t.equal(receiver.delivered.length, 12, 'each delivered once');
    t.equal(users.length, 4);
  },
);

/** A backend whose answer depends on the user: a 50 MB 200 body, or no answer at all. */
async function nastyBackend(t: { teardown(fn: () => unknown): void }) {
  const requests: { webhookId: string; body: Record<string, unknown>; answered: boolean }[] = [];
  const chunk = Buffer.alloc(64 * 1024, 'x');
  const server: Server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(parts).toString('utf8')) as Record<string, unknown>;
      const record = { webhookId: String(req.headers['webhook-id']), body, answered: false };
      requests.push(record);
      const username = String(body.username);
      if (username.startsWith('hang')) return; // never answers
      record.answered = true;
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(50 * 1024 * 1024) });
      let sent = 0;
      const pump = () => {
        while (sent < 50 * 1024 * 1024) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      res.on('error', () => undefined);
      pump();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/internal/users/sync`;
  t.teardown(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return { url, requests };
}

t.test('a 50 MB answer and an answer that never comes: bounded time and memory, right outcome', async (t) => {
  const db = await createTestDatabase(t);
  const backend = await nastyBackend(t);
  const relay = relayProcess(t, { DATABASE_URL: db.url, BACKEND_SYNC_URL: backend.url }, [
    '--timeout-ms',
    '800',
    '--max-attempts',
    '2',
    '--backoff-ms',
    '20',
    '--retry-schedule',
    '200ms',
    '--give-up-after',
    '2s',
    '--poll-interval-ms',
    '200',
    '--concurrency',
    '8',
  ]);
  const pid = relay.child.pid!;
  await waitFor(
    async () => (await db.pool.query('select 1 from suekk_sync.relays')).rowCount === 1,
    'the relay up',
    60_000,
  );
  await new Promise((r) => setTimeout(r, 300));
  const baselineKb = rssKb(pid);
  const huge = await addUsers(db, 4, 'huge');
  const hang = await addUsers(db, 2, 'hang');
  const started = performance.now();
  let peakKb = 0;
  const sampler = setInterval(() => {
    try {
      peakKb = Math.max(peakKb, rssKb(pid));
    } catch {
      // exited
    }
  }, 25);
  t.teardown(() => clearInterval(sampler));
  await waitFor(
    async () => {
      const s = await eventStatuses(db);
      return s.delivered === 4 && s.failed === 2;
    },
    'huge answers delivered, hanging ones failed',
    20_000,
    () => backend.requests.length,
  );
  const elapsed = performance.now() - started;
  clearInterval(sampler);
  t.ok(elapsed < 15_000, `settled in ${Math.round(elapsed)} ms`);

  const { rows } = await db.pool.query<{
    user_id: string;
    webhook_id: string;
    status: string;
    last_status: number | null;
    last_error: string | null;
    attempts: number;
  }>(
    "select user_id, 'evt_' || webhook_id as webhook_id, status, last_status, last_error, attempts from suekk_sync.event_log order by id",
  );
  for (const r of rows) {
    if (huge.includes(r.user_id)) {
      t.equal(r.status, 'delivered', `huge answer for ${r.user_id}: delivered`);
      t.equal(r.last_status, 200);
      t.ok(
        backend.requests.some((q) => q.webhookId === r.webhook_id && q.body.id === r.user_id),
        'its webhook-id reached the backend',
      );
    } else {
      t.ok(hang.includes(r.user_id));
      t.equal(r.status, 'failed', `no answer for ${r.user_id}: failed after give-up-after`);
      t.match(String(r.last_error), /timeout|timed out/i, 'the error says it timed out');
      t.ok(r.attempts >= 2, 'every attempt of its rounds was made');
    }
  }
  const hugeRequests = backend.requests.filter((q) => String(q.body.username).startsWith('huge'));
  t.equal(new Set(hugeRequests.map((q) => q.webhookId)).size, 4, 'four huge-answer events');
  t.equal(hugeRequests.length, 4, 'a 2xx with a huge body counts as delivered the first time: not re-sent');
  const growthMb = (peakKb - baselineKb) / 1024;
  t.ok(
    peakKb > 0 && growthMb < 60,
    `relay RSS grew ${Math.round(growthMb)} MB (from ${Math.round(baselineKb / 1024)} MB), far below the 4 × 50 MB it was offered`,
  );
  relay.child.kill('SIGTERM');
  const out = await relay.done;
  t.equal(out.code, 0, out.stderr);
  t.comment(
    `relay RSS baseline ${Math.round(baselineKb / 1024)} MB, peak ${Math.round(peakKb / 1024)} MB, settled in ${Math.round(elapsed)} ms`,
  );
});
