/** The relay's /metrics, /healthz and /readyz against a real relay, database and receiver. */
import { createServer } from 'node:net';
import t from 'tap';
import { setPaused } from '../src/ops/pause.ts';
import { startMetricsServer } from '../src/relay/metrics.ts';
import { collect, settled, startCli } from './helpers/cli.ts';
import { createTestDatabase } from './helpers/db.ts';
import { startReceiver, waitFor } from './helpers/receiver.ts';
import { addUsers, eventStatuses, startTestRelay } from './helpers/relay.ts';

async function get(port: number, path: string): Promise<{ status: number; type: string; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: await res.text() };
}

/** The value of one sample in the exposition text, e.g. `suekk_sync_rounds_total` or `name{a="b"}`. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

t.test('counters, histograms and queue gauges follow real deliveries', async (t) => {
  const db = await createTestDatabase(t);
  // bob1's first round fails with 503 three times; the second round delivers.
  let bobRequests = 0;
  const receiver = await startReceiver(t, (req) =>
    req.body.username === 'carl1'
      ? { status: 400 }
      : req.body.username === 'bob1' && ++bobRequests <= 3
        ? { status: 503 }
        : { status: 200 },
  );
  const { relay } = await startTestRelay(t, db, receiver.url, { settings: { retryScheduleMs: [100] } });
  const metrics = await startMetricsServer({ port: 0, host: '127.0.0.1', relay, pool: db.pool });
  t.teardown(() => metrics.close());

  await addUsers(db, 3, 'ann');
  await addUsers(db, 1, 'bob');
  await waitFor(() => receiver.delivered.length === 4, 'four deliveries');
  await waitFor(async () => (await eventStatuses(db)).delivered === 4, 'all marked delivered');

  const res = await get(metrics.port, '/metrics');
  t.equal(res.status, 200);
  t.match(res.type, /^text\/plain; version=0\.0\.4/);
  const text = res.body;
  t.equal(sample(text, 'suekk_sync_deliveries_total{outcome="delivered",action="created"}'), 4);
  t.equal(sample(text, 'suekk_sync_deliveries_total{outcome="rescheduled",action="created"}'), 1);
  t.equal(sample(text, 'suekk_sync_attempts_total{result="delivered",status_class="2xx"}'), 4);
  t.equal(sample(text, 'suekk_sync_attempts_total{result="retryable",status_class="5xx"}'), 3);
  t.equal(sample(text, 'suekk_sync_rounds_total'), 5);
  t.equal(sample(text, 'suekk_sync_redeliveries_total'), 1, "bob1's second round");
  t.equal(sample(text, 'suekk_sync_delivery_duration_seconds_count{outcome="delivered"}'), 4);
  t.equal(sample(text, 'suekk_sync_delivery_duration_seconds_count{outcome="rescheduled"}'), 1);
  t.equal(sample(text, 'suekk_sync_capture_to_delivery_seconds_count{source="trigger"}'), 4);
  t.ok(sample(text, 'suekk_sync_capture_to_delivery_seconds_bucket{le="+Inf",source="trigger"}') === 4);
  t.equal(sample(text, 'suekk_sync_database_up'), 1);
  t.equal(sample(text, 'suekk_sync_backlog_events'), 0);
  t.equal(sample(text, 'suekk_sync_oldest_pending_seconds'), 0);
  t.equal(sample(text, 'suekk_sync_failed_events'), 0);
  t.equal(sample(text, 'suekk_sync_parked_users'), 0);
  t.equal(sample(text, 'suekk_sync_paused'), 0);
  t.equal(sample(text, 'suekk_sync_listening'), 1);
  t.equal(sample(text, 'suekk_sync_breaker_open'), 0);
  t.ok(sample(text, 'process_resident_memory_bytes')! > 0, 'process metrics too');

  // The queue gauges come from the database, whichever relay's round failed.
  await addUsers(db, 1, 'carl');
  await waitFor(async () => (await eventStatuses(db)).failed === 1, "carl1's event failed");
  const after = (await get(metrics.port, '/metrics')).body;
  t.equal(sample(after, 'suekk_sync_failed_events'), 1);
  t.equal(sample(after, 'suekk_sync_parked_users'), 1);
});

t.test('/healthz always answers; /readyz is 503 while paused and 200 again after resume', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  const { relay, stop } = await startTestRelay(t, db, receiver.url);
  const metrics = await startMetricsServer({ port: 0, host: '127.0.0.1', relay, pool: db.pool });
  t.teardown(() => metrics.close());

  t.same(await get(metrics.port, '/healthz'), { status: 200, type: 'application/json', body: '{"status":"ok"}\n' });
  t.same(await get(metrics.port, '/readyz'), { status: 200, type: 'application/json', body: '{"ready":true}\n' });

  await setPaused(db.pool, true);
  await waitFor(async () => (await get(metrics.port, '/readyz')).status === 503, '/readyz to say not ready');
  const paused = await get(metrics.port, '/readyz');
  t.same(JSON.parse(paused.body), { ready: false, reason: 'delivery is paused; run `suekk-sync resume`' });
  t.equal(sample((await get(metrics.port, '/metrics')).body, 'suekk_sync_paused'), 1);
  t.equal((await get(metrics.port, '/healthz')).status, 200, 'paused is not dead');

  await setPaused(db.pool, false);
  await waitFor(async () => (await get(metrics.port, '/readyz')).status === 200, '/readyz ready again');

  await stop();
  const stopped = await get(metrics.port, '/readyz');
  t.equal(stopped.status, 503);
  t.match(JSON.parse(stopped.body), { ready: false, reason: /LISTEN connection/ });
  t.equal((await get(metrics.port, '/healthz')).status, 200);
  t.equal((await get(metrics.port, '/nope')).status, 404);
  t.equal((await fetch(`http://127.0.0.1:${metrics.port}/metrics`, { method: 'POST' })).status, 405);
});

t.test('relay --metrics-port serves them from the daemon, and a taken port is a usage error', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  const port = await freePort();
  const env = { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url };
  const child = startCli(['relay', '--metrics-port', String(port), '--poll-interval-ms', '200'], { env });
  const done = collect(child, 180_000);
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
    return settled(done);
  });
  await waitFor(
    async () => (await get(port, '/readyz').catch(() => ({ status: 0 }))).status === 200,
    'the daemon ready on its metrics port',
    20_000,
  );
  await addUsers(db, 2);
  await waitFor(
    async () =>
      sample(
        (await get(port, '/metrics')).body,
        'suekk_sync_deliveries_total{outcome="delivered",action="created"}',
      ) === 2,
    'two deliveries counted',
  );

  const taken = await collect(startCli(['relay', '--metrics-port', String(port)], { env }), 120_000);
  t.equal(taken.code, 2);
  t.match(
    taken.stderr,
    new RegExp(`Cannot serve metrics on port ${port} \\(EADDRINUSE\\); choose another --metrics-port`),
  );

  child.kill('SIGTERM');
  t.equal((await done).code, 0);
  await t.rejects(get(port, '/healthz'), 'the server closed with the relay');
});
