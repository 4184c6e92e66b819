/**
 * A second Ctrl-C or SIGTERM while a command stops: the operator's way out of a stop that hangs.
 * The first signal's behaviour is tested with each command; here, what the second one does.
 */
import t from 'tap';
import { createTestDatabase } from './helpers/db.ts';
import { collect, runCli, startCli } from './helpers/cli.ts';
import { addUsers } from './helpers/relay.ts';
import { startReceiver, waitFor } from './helpers/receiver.ts';

t.test('resync: a second Ctrl-C leaves at once with exit 130', async (t) => {
  const db = await createTestDatabase(t);
  await addUsers(db, 3, 'sig');
  const env = { DATABASE_URL: db.url };
  // Paused, the resync waits for its users however long it takes: only the signals end it.
  await runCli(['pause'], { env });
  const child = startCli(['resync', '--all'], {
    env: { ...env, BACKEND_SYNC_URL: 'http://127.0.0.1:9/sync' },
    detached: true,
  });
  const done = collect(child);
  let stderr = '';
  child.stderr!.on('data', (d: string) => (stderr += d));
  await waitFor(() => stderr.includes('Delivery is paused'), 'the paused notice', 15_000);
  process.kill(-child.pid!, 'SIGINT');
  await waitFor(() => stderr.includes('Ctrl-C again to leave at once'), 'the first Ctrl-C acknowledged', 10_000);
  process.kill(-child.pid!, 'SIGINT');
  const res = await done;
  t.equal(res.code, 130, res.stderr);
});

t.test('relay: a second SIGTERM while a delivery hangs exits 1 and says the event is sent again', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t, () => ({ status: 200, delayMs: 30_000 }));
  const env = { DATABASE_URL: db.url, BACKEND_SYNC_URL: receiver.url };
  const child = startCli(['relay', '--timeout-ms', '60s'], { env });
  const done = collect(child, 90_000);
  await addUsers(db, 1, 'hang');
  await waitFor(() => receiver.requests.length === 1, 'a request in flight', 30_000);
  child.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 500));
  child.kill('SIGTERM');
  const res = await done;
  t.equal(res.code, 1, res.stderr);
  t.match(res.stdout, /again: exiting without waiting; events in flight stay pending and are sent again/);
});
