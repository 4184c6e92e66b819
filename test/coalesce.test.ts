/**
 * Coalescing (`relay --coalesce`): a user's run of pending events goes out as one call with the
 * newest state under the newest event's webhook-id; the events it carried are superseded.
 */
import t from 'tap';
import { resync } from '../src/ops/resync.ts';
import { runAction, runLength, withAction } from '../src/relay/coalesce.ts';
import type { WebhookAction } from '../src/webhook/body.ts';
import { runCli } from './helpers/cli.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { startReceiver, waitFor, type ReceivedRequest } from './helpers/receiver.ts';
import { addUsers, eventStatuses, FAST_RELAY, startTestRelay } from './helpers/relay.ts';
import { testSettings } from './helpers/settings.ts';

const COALESCE = { coalesce: true };

function run(...actions: WebhookAction[]) {
  return actions.map((action, i) => ({ action, body: `{"id":"u","n":${i},"action":"${action}"}` }));
}

t.test('runs: where they end and what they carry', async (t) => {
  t.equal(runLength(run('created', 'updated', 'updated')), 3, 'created + updated… is one run');
  t.equal(runAction(run('created', 'updated', 'updated')), 'created');
  t.equal(runAction(run('updated', 'updated')), 'updated');
  t.equal(runAction(run('created', 'updated', 'deleted')), 'deleted', 'a run ending in a delete');
  t.equal(runAction(run('updated', 'deleted')), 'deleted');
  const restore = run('updated', 'deleted', 'created', 'updated');
  t.equal(runLength(restore), 2, 'never across a delete followed by a create');
  t.equal(runAction(restore.slice(0, 2)), 'deleted');
  t.equal(runLength(restore.slice(2)), 2);
  t.equal(runAction(restore.slice(2)), 'created');
  t.equal(runLength(run('deleted', 'created')), 1);
  t.equal(runLength(run('updated')), 1);
  t.equal(
    withAction('{"id":"u","username":"a\\",\\"action\\":\\"x","action":"updated"}', 'created'),
    '{"id":"u","username":"a\\",\\"action\\":\\"x","action":"created"}',
    'only the last action key is replaced',
  );
  t.throws(() => withAction('{"id":"u"}', 'created'), /ends with its action/);
});

/** What the backend received per user, in arrival order: action and displayName. */
function calls(requests: ReceivedRequest[], userId: string) {
  return requests
    .filter((r) => r.body.id === userId)
    .map((r) => ({ action: r.body.action, name: r.body.displayName, webhookId: r.webhookId }));
}

async function logOf(db: TestDatabase, userId: string) {
  const { rows } = await db.pool.query<{
    action: string;
    status: string;
    webhook_id: string;
    superseded_by: string | null;
  }>(
    "select action, status, 'evt_' || webhook_id as webhook_id, 'evt_' || superseded_by as superseded_by from suekk_sync.event_log where user_id = $1 order by id",
    [userId],
  );
  return rows;
}

t.test('a backlog goes out as one call per run, with the newest state and webhook-id', async (t) => {
  const db = await createTestDatabase(t);
  const [fresh, edited, restored, single] = await Promise.all([
    addUsers(db, 1, 'fresh'),
    addUsers(db, 1, 'edited'),
    addUsers(db, 1, 'restored'),
    addUsers(db, 1, 'single'),
  ]).then((ids) => ids.map((x) => x[0]!));
  // Captured before any relay runs: each user has a backlog.
  for (const n of [2, 3]) await db.pool.query('update users set first_name = $2 where id = $1', [fresh, `F${n}`]);
  await db.pool.query("update users set first_name = 'E1' where id = $1", [restored]);
  await db.pool.query('update users set deleted_at = now() where id = $1', [restored]);
  await db.pool.query('update users set deleted_at = null where id = $1', [restored]);
  await db.pool.query("update users set first_name = 'E2' where id = $1", [restored]);
  const receiver = await startReceiver(t);
  // The edited user's creation is delivered alone first; its updates come after.
  const { logs } = await startTestRelay(t, db, receiver.url, { settings: COALESCE });
  await waitFor(() => calls(receiver.delivered, edited!).length === 1, 'the edited user created');
  // In one transaction, so the relay sees the three updates together.
  await db.pool.query([1, 2, 3].map((n) => `update users set first_name = 'U${n}' where id = '${edited}';`).join(' '));
  await waitFor(async () => (await eventStatuses(db)).pending === undefined, 'everything settled');

  const freshLog = await logOf(db, fresh!);
  t.same(
    calls(receiver.delivered, fresh!),
    [{ action: 'created', name: 'F3 Last', webhookId: freshLog[2]!.webhook_id }],
    'created + updated + updated: one created with the newest state',
  );
  t.same(
    freshLog.map((e) => [e.status, e.superseded_by]),
    [
      ['superseded', freshLog[2]!.webhook_id],
      ['superseded', freshLog[2]!.webhook_id],
      ['delivered', null],
    ],
  );

  const editedCalls = calls(receiver.delivered, edited!);
  t.equal(editedCalls.length, 2, 'updated… after a delivered create: one call');
  t.match(editedCalls[1], { action: 'updated', name: 'U3 Last' });

  t.same(
    calls(receiver.delivered, restored!).map((c) => [c.action, c.name]),
    [
      ['deleted', 'E1 Last'],
      ['created', 'E2 Last'],
    ],
    'update, soft delete, restore, update: deleted then created, never merged across the restore',
  );
  const restoredLog = await logOf(db, restored!);
  t.same(
    restoredLog.map((e) => e.status),
    ['superseded', 'superseded', 'delivered', 'superseded', 'delivered'],
  );
  t.equal(restoredLog[3]!.superseded_by, restoredLog[4]!.webhook_id);

  t.same(
    calls(receiver.delivered, single!).map((c) => c.action),
    ['created'],
    'a single event goes as it is',
  );
  t.ok(
    logs.some((l) => l.merged === 3 && l.userId === fresh),
    'the log line says how many events the call carried',
  );

  // tail-log shows them, filters them, and names the call that carried them.
  const env = { DATABASE_URL: db.url };
  const filtered = await runCli(['tail-log', '--status', 'superseded', '--json', '-n', '50'], { env });
  t.equal(filtered.code, 0, filtered.stderr);
  const lines = filtered.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  t.equal(lines.length, 2 + 2 + 3, 'every superseded event, and only those');
  t.ok(
    lines.every(
      (l) =>
        l.status === 'superseded' && typeof l.supersededBy === 'string' && String(l.supersededBy).startsWith('evt_'),
    ),
  );
  t.ok(lines.some((l) => l.userId === fresh && l.supersededBy === freshLog[2]!.webhook_id));
  const human = await runCli(['tail-log', '--user', fresh!, '-n', '5'], { env });
  t.match(human.stdout, new RegExp(`superseded.*carried by ${freshLog[2]!.webhook_id}`));
  const all = await runCli(['tail-log', '--json', '-n', '1'], { env });
  t.equal(
    (JSON.parse(all.stdout) as Record<string, unknown>).supersededBy,
    null,
    'a delivered event: supersededBy is null',
  );
});

t.test('a run merges events the ticker has not read yet: a long backlog between them', async (t) => {
  const db = await createTestDatabase(t);
  const [early] = await addUsers(db, 1, 'early');
  await addUsers(db, 60, 'between'); // far more than one tick reads for a relay with one place
  await db.pool.query("update users set first_name = 'Late' where id = $1", [early]);
  const receiver = await startReceiver(t);
  await startTestRelay(t, db, receiver.url, { settings: { ...COALESCE, concurrency: 1, batchSize: 1 } });
  await waitFor(async () => (await eventStatuses(db)).pending === undefined, 'everything settled');
  t.same(
    calls(receiver.delivered, early!).map((c) => [c.action, c.name]),
    [['created', 'Late Last']],
    'one call with the newest state',
  );
  t.equal(receiver.delivered.length, 61, 'one call per user');
});

t.test('without --coalesce, one call per change', async (t) => {
  const db = await createTestDatabase(t);
  const [id] = await addUsers(db, 1);
  for (const n of [2, 3]) await db.pool.query('update users set first_name = $2 where id = $1', [id, `F${n}`]);
  const receiver = await startReceiver(t);
  await startTestRelay(t, db, receiver.url);
  await waitFor(() => receiver.delivered.length === 3, 'three calls');
  // The receiver has the third call before the relay has recorded its outcome.
  await waitFor(async () => (await eventStatuses(db)).pending === undefined, 'everything settled');
  t.same(
    calls(receiver.delivered, id!).map((c) => c.action),
    ['created', 'updated', 'updated'],
  );
  t.same(await eventStatuses(db), { delivered: 3 });
});

t.test('an event whose round failed is merged into its successors at its next round', async (t) => {
  const db = await createTestDatabase(t);
  let down = true;
  const receiver = await startReceiver(t, () => (down ? { status: 503 } : { status: 200 }));
  await startTestRelay(t, db, receiver.url, { settings: { ...COALESCE, maxAttempts: 1, retryScheduleMs: [300] } });
  const [id] = await addUsers(db, 1);
  await waitFor(
    async () => (await logOf(db, id!))[0] !== undefined && receiver.requests.length >= 1,
    'the create refused once',
  );
  await db.pool.query("update users set first_name = 'Later' where id = $1", [id]);
  down = false;
  await waitFor(async () => (await eventStatuses(db)).pending === undefined, 'settled');
  const log = await logOf(db, id!);
  t.same(
    calls(receiver.delivered, id!).map((c) => [c.action, c.name, c.webhookId]),
    [['created', 'Later Last', log[1]!.webhook_id]],
  );
  t.same(
    log.map((e) => e.status),
    ['superseded', 'delivered'],
  );
  const { rows } = await db.pool.query<{ attempts: number; rounds: number }>(
    'select attempts, rounds from suekk_sync.event_log where user_id = $1 order by id limit 1',
    [id],
  );
  t.ok(rows[0]!.attempts >= 1, 'the superseded event keeps the attempts its own rounds made');
});

t.test('resync with coalescing: superseded resync events count as settled', async (t) => {
  const db = await createTestDatabase(t);
  const ids = await addUsers(db, 30);
  const users = (await db.pool.query<{ n: number }>('select count(*)::int as n from users')).rows[0]!.n;
  let down = true;
  const receiver = await startReceiver(t, () => (down ? { status: 503 } : { status: 200 }));
  await startTestRelay(t, db, receiver.url, { settings: { ...COALESCE, maxAttempts: 1, retryScheduleMs: [200] } });
  const settings = testSettings(db.url, receiver.url, { relay: { ...FAST_RELAY, ...COALESCE } });
  const running = resync(db.pool, settings, { scope: { all: true }, batchSize: 10 });
  await waitFor(async () => {
    const { rows } = await db.pool.query<{ n: number }>(
      "select count(*)::int as n from suekk_sync.events where source = 'resync'",
    );
    return rows[0]!.n === users;
  }, 'the resync enqueued');
  // A newer state for every user, captured behind the resync event, while the backend refuses.
  await db.pool.query("update users set first_name = 'Newest'");
  down = false;
  const result = await running;
  t.equal(result.enqueued, users);
  t.equal(result.delivered, users, 'the run settles although its events were carried by later ones');
  await waitFor(async () => (await eventStatuses(db)).pending === undefined, 'everything settled');
  const { rows } = await db.pool.query<{ status: string; n: number }>(
    "select status, count(*)::int as n from suekk_sync.event_log where source = 'resync' group by status",
  );
  const by = Object.fromEntries(rows.map((r) => [r.status, r.n]));
  // A round already under way when the backend came back may carry a resync event read before the update.
  t.ok(
    (by.superseded ?? 0) > users / 2,
    `most resync events were carried by the newer state (${by.superseded} of ${users})`,
  );
  t.equal((by.superseded ?? 0) + (by.delivered ?? 0), users, 'every resync event settled, superseded or delivered');
  for (const id of ids) t.equal(calls(receiver.delivered, id).at(-1)?.name, 'Newest Last');
});
