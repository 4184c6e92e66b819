/**
 * `suekk-sync uninstall` under a running relay, as an operator does it: the relay says once, in one
 * line, that suekk-sync is gone, stays quiet while it is, and delivers again after an install.
 */
import t from 'tap';
import { collect, runCli, settled, startCli } from './helpers/cli.ts';
import { createTestDatabase } from './helpers/db.ts';
import { startReceiver, waitFor } from './helpers/receiver.ts';
import { addUsers } from './helpers/relay.ts';

t.test(
  'uninstall --drop-events under a running relay: one line, then quiet, then delivering after install',
  async (t) => {
    const db = await createTestDatabase(t);
    let delayMs = 0;
    const receiver = await startReceiver(t, () => ({ status: 200, delayMs }));
    const env = { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url };
    // A long attempt timeout: the request held in flight below must outlast the uninstall command's start, however slow.
    const child = startCli(
      ['relay', '--poll-interval-ms', '200', '--backoff-ms', '20', '--timeout-ms', '60s', '--metrics-port', '0'],
      { env },
    );
    const done = collect(child, 120_000);
    t.teardown(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await settled(done);
    });
    const lines: Record<string, unknown>[] = [];
    child.stdout!.on('data', (chunk: string) => {
      for (const line of chunk.split('\n'))
        if (line.trim() !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
    });
    const said = (pattern: RegExp) => lines.filter((l) => pattern.test(String(l.msg)));
    await waitFor(() => said(/^Relay .* starting/).length === 1, 'the relay started', 30_000);
    await waitFor(() => lines.some((l) => typeof l.metricsPort === 'number'), 'the metrics port', 30_000);
    const metricsPort = lines.find((l) => typeof l.metricsPort === 'number')!.metricsPort as number;
    const readyz = async () => {
      const res = await fetch(`http://127.0.0.1:${metricsPort}/readyz`);
      return { status: res.status, body: (await res.json()) as { ready: boolean; reason?: string } };
    };

    await addUsers(db, 1, 'before');
    await waitFor(() => receiver.delivered.length === 1, 'delivered while installed');

    // A request in flight when the schema goes: its outcome has nowhere to be recorded.
    // Long enough to outlast starting the uninstall command on a busy machine.
    delayMs = 20_000;
    await addUsers(db, 1, 'inflight');
    await waitFor(() => receiver.requests.length === 2, 'the second request in flight');
    const uninstalled = await runCli(['uninstall', '--drop-events', '--force'], { env });
    t.equal(uninstalled.code, 0, uninstalled.stderr);
    t.match(uninstalled.stdout, /Discarded 1 undelivered event/);
    await waitFor(() => said(/no longer installed/).length > 0, 'the relay noticed', 15_000);
    // Long enough for every timer of the relay (claims, sweeps, renewals, heartbeats) to run a few times.
    await new Promise((r) => setTimeout(r, 3_000));
    const gone = said(/no longer installed/);
    t.equal(gone.length, 1, 'said once');
    t.equal(
      gone[0]!.msg,
      'suekk-sync is no longer installed in this database (`suekk-sync uninstall --drop-events` dropped the suekk_sync schema): this relay delivers nothing and waits for `suekk-sync install`; stop it if suekk-sync is gone for good',
    );
    t.same(
      lines.filter((l) => Number(l.level) >= 40 && l !== gone[0]).map((l) => l.msg),
      [],
      'no other warning or error: no "does not exist", no database error per timer',
    );
    t.equal(child.exitCode, null, 'still running, waiting for an install');
    const notReady = await readyz();
    t.equal(notReady.status, 503, '/readyz: not ready while suekk-sync is not installed');
    t.match(notReady.body.reason, /no longer installed/);

    const installed = await runCli(['install'], { env });
    t.equal(installed.code, 0, installed.stderr);
    await waitFor(
      () => said(/^suekk-sync is installed again; delivering$/).length === 1,
      'the relay saw the install',
      15_000,
    );
    t.equal((await readyz()).status, 200, '/readyz: ready again after the install');
    delayMs = 0;
    const before = receiver.delivered.length;
    const [id] = await addUsers(db, 1, 'after');
    await waitFor(() => receiver.delivered.slice(before).some((r) => r.body.id === id), 'delivered after the install');
    const { rows } = await db.pool.query<{ n: number }>('select count(*)::int as n from suekk_sync.relays');
    t.same(rows, [{ n: 1 }], 'the relay registered again and shows in status');

    child.kill('SIGTERM');
    const result = await done;
    t.equal(result.code, 0, result.stderr);
  },
);

t.test('uninstall keeping the events: the relay says capture is off, once, and delivers what was kept', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  const env = { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url };
  await addUsers(db, 2);
  const uninstalled = await runCli(['uninstall', '--force'], { env });
  t.match(uninstalled.stdout, /Kept 2 undelivered events: a running relay still delivers them\./);
  const child = startCli(['relay', '--poll-interval-ms', '200'], { env });
  const done = collect(child, 60_000);
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await settled(done);
  });
  await waitFor(() => receiver.delivered.length === 2, 'the kept events delivered', 30_000);
  child.kill('SIGTERM');
  const result = await done;
  t.equal(result.code, 0, result.stderr);
  const msgs = result.stdout
    .trim()
    .split('\n')
    .map((l) => String((JSON.parse(l) as { msg: unknown }).msg));
  t.equal(msgs.filter((m) => /^Capture is not installed/.test(m)).length, 1, 'said once');
});
