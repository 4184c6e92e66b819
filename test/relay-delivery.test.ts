/** The relay against a real database and a real receiver on loopback: what arrives, and when not. */
import pg from 'pg';
import t from 'tap';
import { Webhook } from 'standardwebhooks';
import { generateSecret } from '../src/webhook/signature.ts';
import { createTestDatabase } from './helpers/db.ts';
import { startReceiver, waitFor } from './helpers/receiver.ts';
import { addUsers, eventStatuses, startTestRelay } from './helpers/relay.ts';
import { rotatePartitions } from '../src/db/retention.ts';

t.test('created, updated and deleted arrive signed, with the exact body and headers', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  const oldSecret = generateSecret();
  const newSecret = generateSecret();
  const { relay, logs } = await startTestRelay(t, db, receiver.url, {
    secrets: [oldSecret, newSecret],
    token: 'tok-123',
  });
  const [id] = await addUsers(db, 1, 'alice');
  await db.pool.query("update users set first_name = 'Alicia', avatar = 'https://example.com/a.png' where id = $1", [
    id,
  ]);
  await db.pool.query('update users set deleted_at = now() where id = $1', [id]);
  await waitFor(() => receiver.delivered.length === 3, '3 deliveries');

  const [created, updated, deleted] = receiver.delivered;
  t.equal(
    created!.rawBody,
    `{"id":"${id}","email":"alice1@example.com","username":"alice1","displayName":"First Last","avatar":"","role":"user","isActive":true,"action":"created"}`,
  );
  t.equal(updated!.body.action, 'updated');
  t.equal(updated!.body.displayName, 'Alicia Last');
  t.equal(updated!.body.avatar, 'https://example.com/a.png');
  t.equal(deleted!.body.action, 'deleted');
  for (const req of receiver.delivered) {
    t.equal(req.headers['content-type'], 'application/json');
    t.match(req.headers['user-agent'], /^suekk-sync\/\d+\.\d+\.\d+/);
    t.equal(req.headers.authorization, 'Bearer tok-123');
    t.match(req.webhookId, /^evt_[0-9a-f-]{36}$/);
    t.equal(String(req.headers['webhook-signature']).split(' ').length, 2, 'one signature per secret');
    // Either secret alone verifies: the receiver may be on the old or the new one during rotation.
    for (const secret of [oldSecret, newSecret]) {
      t.doesNotThrow(() => new Webhook(secret).verify(req.rawBody, req.headers as Record<string, string>));
    }
    t.throws(() => new Webhook(generateSecret()).verify(req.rawBody, req.headers as Record<string, string>));
  }
  await waitFor(async () => (await eventStatuses(db)).delivered === 3, 'all three marked delivered');
  const { rows } = await db.pool.query<{
    webhook_id: string;
    status: string;
    attempts: number;
    rounds: number;
    last_status: number;
  }>('select webhook_id::text, status, attempts, rounds, last_status from suekk_sync.event_log order by id');
  t.same(
    rows.map((r) => `evt_${r.webhook_id}`),
    receiver.delivered.map((r) => r.webhookId),
    "webhook-id is the event's",
  );
  t.same(
    rows.map((r) => [r.status, r.attempts, r.rounds, r.last_status]),
    Array(3).fill(['delivered', 1, 1, 200]),
  );

  const synced = logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('User alice1 synced to backend'));
  t.same(
    synced.map((l) => l.msg),
    [
      'User alice1 synced to backend (action: created)',
      'User alice1 synced to backend (action: updated)',
      'User alice1 synced to backend (action: deleted)',
    ],
  );
  for (const key of ['eventId', 'webhookId', 'userId', 'action', 'attempt', 'round', 'status', 'durationMs']) {
    t.ok(key in synced[0]!, `log line has ${key}`);
  }
  const allLogs = JSON.stringify(logs);
  for (const secret of [
    oldSecret,
    newSecret,
    oldSecret.slice(6),
    'tok-123',
    String(created!.headers['webhook-signature']),
  ]) {
    t.notOk(allLogs.includes(secret), 'no secret, token or signature in the logs');
  }
  await waitFor(() => relay.inFlight === 0, 'the stream released');
});

t.test('a fresh timestamp and signature on every attempt, the same webhook-id', async (t) => {
  const db = await createTestDatabase(t);
  const secret = generateSecret();
  const receiver = await startReceiver(t, (req) => (req.n < 3 ? { status: 503 } : { status: 200 }));
  await startTestRelay(t, db, receiver.url, { secrets: [secret], settings: { backoffMs: 1_100 } });
  await addUsers(db, 1);
  await waitFor(() => receiver.delivered.length === 1, 'delivery on the third attempt');
  t.equal(receiver.requests.length, 3);
  t.equal(new Set(receiver.requests.map((r) => r.webhookId)).size, 1);
  t.equal(
    new Set(receiver.requests.map((r) => r.headers['webhook-timestamp'])).size,
    3,
    'fresh timestamp each attempt',
  );
  t.equal(new Set(receiver.requests.map((r) => r.headers['webhook-signature'])).size, 3);
  t.doesNotThrow(() =>
    new Webhook(secret).verify(
      receiver.delivered[0]!.rawBody,
      receiver.delivered[0]!.headers as Record<string, string>,
    ),
  );
});

t.test('500: three attempts, rescheduled, delivered in its next round once the backend recovers', async (t) => {
  const db = await createTestDatabase(t);
  let healthy = false;
  const receiver = await startReceiver(t, () => (healthy ? { status: 200 } : { status: 500 }));
  const { logs } = await startTestRelay(t, db, receiver.url, { settings: { retryScheduleMs: [600] } });
  await addUsers(db, 1, 'bob');
  await waitFor(() => receiver.requests.length === 3, 'three attempts');
  await waitFor(async () => {
    const { rows } = await db.pool.query('select rounds from suekk_sync.event_log');
    return rows[0]?.rounds === 1;
  }, 'the round recorded');
  const { rows } = await db.pool.query<{
    status: string;
    attempts: number;
    rounds: number;
    last_status: number;
    last_error: string;
    later: boolean;
  }>(
    `select status, attempts, rounds, last_status, last_error, next_attempt_at > now() as later from suekk_sync.event_log`,
  );
  t.same(rows[0], {
    status: 'pending',
    attempts: 3,
    rounds: 1,
    last_status: 500,
    last_error: rows[0]!.last_error,
    later: true,
  });
  t.match(rows[0]!.last_error, /500/);
  await new Promise((r) => setTimeout(r, 100));
  t.equal(receiver.requests.length, 3, 'nothing more until the next round');
  healthy = true;
  await waitFor(() => receiver.delivered.length === 1, 'delivery in round 2');
  t.equal(new Set(receiver.requests.map((r) => r.webhookId)).size, 1);
  const msgs = logs.map((l) => l.msg);
  t.ok(msgs.includes('Retrying sync in 0.02s (attempt 2/3)'));
  t.ok(msgs.includes('Retrying sync in 0.04s (attempt 3/3)'));
  t.ok(msgs.includes('Failed to sync user bob1 after 3 attempts'));
  t.ok(msgs.some((m) => typeof m === 'string' && m.startsWith('Failed to sync user bob1 to backend: HTTP 500')));
  t.ok(msgs.some((m) => typeof m === 'string' && m.startsWith('Next round for user bob1 in 1s')));
  await waitFor(async () => (await eventStatuses(db)).delivered === 1, 'marked delivered');
});

t.test('400: one attempt, failed, its user parked while other users flow', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t, (req) =>
    req.body.username === 'bad1' ? { status: 400, body: '{"error":"Invalid payload"}' } : { status: 200 },
  );
  const { logs } = await startTestRelay(t, db, receiver.url);
  const [bad] = await addUsers(db, 1, 'bad');
  await db.pool.query("update users set first_name = 'later' where id = $1", [bad]);
  await addUsers(db, 5, 'good');
  await waitFor(() => receiver.delivered.length === 5, 'the good users');
  await waitFor(async () => (await eventStatuses(db)).failed === 1, 'one failed event');
  t.equal(
    receiver.requests.filter((r) => r.body.username === 'bad1').length,
    1,
    'a 4xx is not retried, and the later event waits',
  );
  const { rows } = await db.pool.query<{ action: string; status: string; last_status: number; last_response: string }>(
    'select action, status, last_status, last_response from suekk_sync.event_log where user_id = $1 order by id',
    [bad],
  );
  t.same(
    rows.map((r) => [r.action, r.status]),
    [
      ['created', 'failed'],
      ['updated', 'pending'],
    ],
  );
  t.equal(rows[0]!.last_status, 400);
  t.match(rows[0]!.last_response, /Invalid payload/);
  const stream = await db.pool.query('select parked, locked_by from suekk_sync.streams where user_id = $1', [bad]);
  t.same(stream.rows, [{ parked: true, locked_by: null }]);
  t.ok(
    logs.some(
      (l) =>
        typeof l.msg === 'string' &&
        /now failed because the backend rejected it \(HTTP 400\).*retry --user/.test(l.msg),
    ),
  );
});

t.test('429 with Retry-After: the next attempt waits as asked', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t, (req) =>
    req.n === 1 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 200 },
  );
  await startTestRelay(t, db, receiver.url);
  await addUsers(db, 1);
  await waitFor(() => receiver.delivered.length === 1, 'delivery after the wait');
  const gap = receiver.requests[1]!.at - receiver.requests[0]!.at;
  t.ok(gap >= 950, `waited ${Math.round(gap)} ms for Retry-After: 1 (the backoff alone is 20 ms)`);
});

t.test('a backend that hangs, refuses or redirects: bounded attempts, the right outcome', async (t) => {
  t.test('hangs: each attempt times out, the event is rescheduled', async (t) => {
    const db = await createTestDatabase(t);
    const receiver = await startReceiver(t, () => ({ hang: true }));
    await startTestRelay(t, db, receiver.url, { settings: { timeoutMs: 200, retryScheduleMs: [30_000] } });
    await addUsers(db, 1);
    await waitFor(async () => {
      const { rows } = await db.pool.query('select rounds from suekk_sync.event_log');
      return rows[0]?.rounds === 1;
    }, 'one round of timeouts');
    const { rows } = await db.pool.query('select status, attempts, last_error from suekk_sync.event_log');
    t.equal(rows[0].status, 'pending');
    t.equal(rows[0].attempts, 3);
    t.match(rows[0].last_error, /timed out/);
  });
  t.test('refuses connections: rescheduled, not lost', async (t) => {
    const db = await createTestDatabase(t);
    const closed = await startReceiver(t);
    await closed.close();
    await startTestRelay(t, db, closed.url, { settings: { retryScheduleMs: [30_000] } });
    await addUsers(db, 1);
    await waitFor(async () => {
      const { rows } = await db.pool.query('select rounds from suekk_sync.event_log');
      return rows[0]?.rounds === 1;
    }, 'one round of refused connections');
    const { rows } = await db.pool.query('select status, attempts, last_status, last_error from suekk_sync.event_log');
    t.same([rows[0].status, rows[0].attempts, rows[0].last_status], ['pending', 3, null]);
    t.match(rows[0].last_error, /ECONNREFUSED/);
  });
  t.test('redirects: not followed, the event fails', async (t) => {
    const db = await createTestDatabase(t);
    const elsewhere = await startReceiver(t);
    const receiver = await startReceiver(t, () => ({ status: 307, headers: { location: elsewhere.url } }));
    await startTestRelay(t, db, receiver.url);
    await addUsers(db, 1);
    await waitFor(async () => (await eventStatuses(db)).failed === 1, 'failed');
    t.equal(receiver.requests.length, 1);
    t.equal(elsewhere.requests.length, 0, 'the redirect target got nothing');
  });
});

t.test('an event still failing after --give-up-after fails and parks its user', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t, () => ({ status: 503 }));
  await startTestRelay(t, db, receiver.url, {
    settings: { retryScheduleMs: [100], giveUpAfterMs: 350, maxAttempts: 1 },
  });
  await addUsers(db, 1);
  await waitFor(async () => (await eventStatuses(db)).failed === 1, 'failed after give-up-after', 10_000);
  const { rows } = await db.pool.query('select rounds from suekk_sync.event_log');
  t.ok(rows[0].rounds >= 2, `it had ${rows[0].rounds} rounds first`);
  const stream = await db.pool.query('select parked from suekk_sync.streams');
  t.same(stream.rows, [{ parked: true }]);
});

t.test('an outage shorter than the schedule loses nothing and needs no operator', async (t) => {
  const db = await createTestDatabase(t);
  let down = true;
  const receiver = await startReceiver(t, () => (down ? { status: 502 } : { status: 200 }));
  await startTestRelay(t, db, receiver.url, { settings: { retryScheduleMs: [100, 200, 300], maxAttempts: 2 } });
  const ids = await addUsers(db, 20);
  for (const id of ids.slice(0, 10)) await db.pool.query("update users set first_name = 'v2' where id = $1", [id]);
  await waitFor(() => receiver.requests.length >= 40, 'failing rounds');
  down = false;
  await waitFor(
    async () => (await eventStatuses(db)).delivered === 30,
    'everything delivered',
    15_000,
    () => receiver.delivered.length,
  );
  const perUser = new Map<string, string[]>();
  for (const r of receiver.delivered)
    perUser.set(String(r.body.id), [...(perUser.get(String(r.body.id)) ?? []), String(r.body.action)]);
  for (const id of ids.slice(0, 10)) t.same(perUser.get(id), ['created', 'updated'], 'in order');
  t.equal(new Set(receiver.delivered.map((r) => r.webhookId)).size, 30, 'no duplicate deliveries');
});

t.test('while the backend is clearly down the relay probes with one user at a time', async (t) => {
  const db = await createTestDatabase(t);
  let down = true;
  let concurrent = 0;
  let maxConcurrentWhileDown = 0;
  const receiver = await startReceiver(t, async () => {
    concurrent++;
    if (down) maxConcurrentWhileDown = Math.max(maxConcurrentWhileDown, concurrent);
    await new Promise((r) => setTimeout(r, 10));
    concurrent--;
    return down ? { status: 503 } : { status: 200 };
  });
  const { relay, logs } = await startTestRelay(t, db, receiver.url, {
    settings: { breakerThreshold: 5, maxAttempts: 1, retryScheduleMs: [50], concurrency: 8 },
  });
  await addUsers(db, 30);
  await waitFor(() => relay.breakerOpen, 'the breaker to open');
  const before = receiver.requests.length;
  maxConcurrentWhileDown = 0;
  await new Promise((r) => setTimeout(r, 400));
  t.ok(maxConcurrentWhileDown <= 1 + 8, 'in-flight rounds finish');
  t.ok(
    receiver.requests.length - before < 30,
    `probing, not hammering (${receiver.requests.length - before} requests in 400 ms)`,
  );
  down = false;
  await waitFor(async () => (await eventStatuses(db)).delivered === 30, 'all delivered after recovery');
  t.notOk(relay.breakerOpen);
  t.ok(logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('The backend looks down')));
});

t.test('--max-rps spaces requests out for a fragile backend', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  await startTestRelay(t, db, receiver.url, { settings: { maxRps: 20, concurrency: 8 } });
  await addUsers(db, 12);
  await waitFor(() => receiver.delivered.length === 12, 'all delivered', 20_000);
  // 12 requests at 20 a second start 550 ms apart end to end; arrival jitter takes a little off.
  const span = receiver.requests[11]!.at - receiver.requests[0]!.at;
  t.ok(span >= 440, `12 requests spread over ${Math.round(span)} ms (unlimited, they arrive within a few ms)`);
});

t.test(
  'retention empties whole partitions once settled and old enough, and moves what is undelivered along',
  async (t) => {
    const db = await createTestDatabase(t);
    const receiver = await startReceiver(t, (req) =>
      String(req.body.username).startsWith('bad') ? { status: 400 } : { status: 200 },
    );
    const { stop } = await startTestRelay(t, db, receiver.url);
    await addUsers(db, 3, 'ok');
    const [bad] = await addUsers(db, 1, 'bad');
    await db.pool.query("update users set first_name = 'later' where id = $1", [bad]);
    await waitFor(async () => {
      const s = await eventStatuses(db);
      return s.delivered === 3 && s.failed === 1;
    }, 'three delivered, the bad user parked');
    await stop();
    const { rows: undelivered } = await db.pool.query<{ id: string; webhook_id: string; body: string; status: string }>(
      "select id::text, webhook_id::text, body, status from suekk_sync.event_log where status <> 'delivered' order by id",
    );
    t.same(
      undelivered.map((e) => e.status),
      ['failed', 'pending'],
    );

    const retentionMs = 600;
    const partOf = async () =>
      (
        await db.pool.query<{ part: number; n: number }>(
          'select part, count(*)::int as n from suekk_sync.events group by part order by part',
        )
      ).rows;
    t.same(await partOf(), [{ part: 0, n: 5 }], 'everything so far in partition 0');
    // The relay calls this from its maintenance; here it runs every 40 ms with a short retention.
    const started = Date.now();
    const rotated: number[] = [];
    let emptiedAfter: number | undefined;
    while (Date.now() - started < 5_000 && emptiedAfter === undefined) {
      const report = await rotatePartitions(db.pool, retentionMs);
      if (report.rotatedTo !== null) rotated.push(report.rotatedTo);
      if (report.truncated.includes(0)) emptiedAfter = Date.now() - started;
      await new Promise((r) => setTimeout(r, 40));
    }
    t.ok(rotated.length >= 1 && rotated[0] === 1, `moved on to partition 1, then ${rotated.slice(1).join(', ')}`);
    t.ok(
      emptiedAfter !== undefined && emptiedAfter >= retentionMs,
      `partition 0 emptied ${emptiedAfter} ms in: retired, then kept for the retention`,
    );
    const { rows: kept } = await db.pool.query<{
      id: string;
      webhook_id: string;
      body: string;
      status: string;
      part: number;
    }>(
      'select l.id::text, l.webhook_id::text, l.body, l.status, e.part from suekk_sync.event_log l join suekk_sync.events e using (id) order by l.id',
    );
    // Events the tickers' horizon has not passed yet count as unsettled and move too (a transaction
    // open elsewhere in the cluster holds the horizon back): more kept, never fewer.
    t.same(
      kept.filter((e) => e.status !== 'delivered').map(({ part: _, ...e }) => e),
      undelivered,
      'the undelivered events kept, ids, webhook-ids and bodies intact',
    );
    t.notOk(
      kept.some((e) => e.part === 0),
      'moved out of the emptied partition',
    );
    const { rows: log } = await db.pool.query('select count(*)::int as n from suekk_sync.deliveries_p0');
    t.same(log, [{ n: 0 }], 'their delivery records went with it');
    // The parked user still delivers in order once the backend takes it.
    const again = await startReceiver(t);
    await startTestRelay(t, db, again.url);
    await db.pool.query('update suekk_sync.streams set parked = false, due_at = now() where user_id = $1', [bad]);
    await waitFor(() => again.delivered.length === 2, 'the moved events delivered');
    t.same(
      again.delivered.map((r) => r.webhookId),
      undelivered.map((e) => `evt_${e.webhook_id}`),
      'in capture order',
    );
  },
);

t.test(
  'the relay prepares no statement: a plan kept from a near-empty outbox would stall it once the outbox grows',
  async (t) => {
    const db = await createTestDatabase(t);
    const receiver = await startReceiver(t, (req) => ({ status: req.body.username === 'fails1' ? 500 : 200 }));
    const named: string[] = [];
    const original = pg.Client.prototype.query;
    pg.Client.prototype.query = function (this: pg.Client, config: unknown, ...rest: unknown[]) {
      const name = (config as { name?: unknown } | null)?.name;
      if (typeof name === 'string') named.push(name);
      return (original as (...args: unknown[]) => unknown).call(this, config, ...rest);
    } as typeof original;
    t.teardown(() => {
      pg.Client.prototype.query = original;
    });
    await startTestRelay(t, db, receiver.url, { settings: { concurrency: 2, batchSize: 2 } });
    // Many small batches (more than the five after which Postgres would switch a prepared statement
    // to its generic plan), deliveries and a failing round, so every hot-path statement runs often.
    await addUsers(db, 12, 'user');
    await addUsers(db, 1, 'fails');
    await waitFor(async () => ((await eventStatuses(db)).delivered ?? 0) === 12, '12 delivered');
    await waitFor(() => receiver.requests.some((r) => r.body.username === 'fails1'), 'the failing round');
    t.same(named, [], 'no named statement');
  },
);
