/**
 * `suekk-sync dev` as a person runs it: in a folder of its own, stopped by Ctrl-C, which a
 * terminal sends to the whole process group. The embedded PostgreSQL must outlive that signal
 * long enough to be stopped last, and must not outlive dev.
 */
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import t, { type Test } from 'tap';
import { freePort, stopEmbeddedPostgres } from '../src/dev/embedded.ts';
import { collect, runCli, startCli, type CliResult } from './helpers/cli.ts';

/** A folder the embedded server's user can reach when the tests run as root. */
function workFolder(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'suekk-dev-test-'));
  chmodSync(dir, 0o755);
  t.teardown(async () => {
    await stopEmbeddedPostgres(join(dir, '.suekk-sync', 'pgdata'));
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

interface RunningDev {
  child: ChildProcess;
  finished: Promise<CliResult>;
  /** Resolves with all stdout so far once it matches. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
}

function startDev(t: Test, cwd: string, args: string[], env: Record<string, string | undefined> = {}): RunningDev {
  const child = startCli(['dev', ...args], { cwd, env, detached: true });
  child.stdin?.end();
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) process.kill(-child.pid!, 'SIGKILL');
  });
  let stdout = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  const finished = collect(child, 60_000);
  return {
    child,
    finished,
    waitFor(pattern, timeoutMs = 40_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (pattern.test(stdout)) {
            clearInterval(timer);
            clearTimeout(timeout);
            resolve(stdout);
          }
        };
        const timer = setInterval(check, 50);
        const timeout = setTimeout(() => {
          clearInterval(timer);
          reject(new Error(`dev did not print ${pattern} within ${timeoutMs} ms; stdout so far:\n${stdout}`));
        }, timeoutMs);
        void finished.then((r) => {
          check();
          clearInterval(timer);
          clearTimeout(timeout);
          reject(new Error(`dev exited (${r.code ?? r.signal}) before printing ${pattern}:\n${stdout}\n${r.stderr}`));
        });
      });
    },
  };
}

function register(apiUrl: string, username: string): Promise<Response> {
  return fetch(`${apiUrl}/api/v1/auth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      email: `${username}@example.com`,
      username,
      password: 'correct-horse',
      firstName: 'Dev',
      lastName: 'Test',
    }),
  });
}

function postmasterPid(dataDir: string): number {
  return Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Processes whose command line names the data folder (Linux; elsewhere nothing to scan). */
function serversFor(dataDir: string): number[] {
  if (!existsSync('/proc')) return [];
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dataDir);
      } catch {
        return false;
      }
    })
    .map(Number);
}

t.test('dev runs the whole loop, stops in order on Ctrl-C, and keeps its data for the next run', async (t) => {
  const cwd = workFolder(t);
  const dataDir = join(cwd, '.suekk-sync', 'pgdata');
  const apiPort = await freePort();
  let receiverPort = await freePort();
  while (receiverPort === apiPort) receiverPort = await freePort();
  const args = ['--api-port', String(apiPort), '--receiver-port', String(receiverPort)];
  const apiUrl = `http://127.0.0.1:${apiPort}`;

  const first = startDev(t, cwd, args);
  const bannerText = await first.waitFor(/Waiting for webhooks/);
  t.match(bannerText, `API       ${apiUrl}`);
  t.match(bannerText, `curl -s ${apiUrl}/api/v1/auth/register`);
  t.match(bannerText, /TOKEN=\$\(curl -s .*\/api\/v1\/auth\/login/);
  t.match(bannerText, /curl -s -X PUT .*\/api\/v1\/users\/profile -H "authorization: Bearer \$TOKEN"/);
  t.match(bannerText, /curl -s -X DELETE .*\/api\/v1\/users\/profile/);
  const secrets = readFileSync(join(cwd, '.suekk-sync', 'secrets.json'), 'utf8');
  const pid = postmasterPid(dataDir);

  t.equal((await register(apiUrl, 'devtester')).status, 201);
  await first.waitFor(/✓ created\s+devtester \([0-9a-f]{8}…\)\s+evt_[0-9a-f-]{36}\s+signature verified/);

  // What a terminal does on Ctrl-C: the signal goes to every process of the foreground group.
  process.kill(-first.child.pid!, 'SIGINT');
  const result = await first.finished;
  t.equal(result.code, 0, result.stderr);
  t.equal(result.stderr, '');
  t.match(result.stdout, /Stopping the API, the relay, the receiver, then PostgreSQL…\nStopped\.\n$/);
  t.notOk(alive(pid), 'the embedded server has exited');
  t.notOk(existsSync(join(dataDir, 'postmaster.pid')), 'it shut down cleanly');
  t.same(serversFor(dataDir), [], 'no process is left for the data folder');
  t.notMatch(result.stdout, /"level"|relay info|api info/, 'no routine logs');
  // Stopped last, PostgreSQL found no session left to cut off.
  const log = readFileSync(join(dataDir, 'postgres.log'), 'utf8');
  t.match(log, /received fast shutdown request[\s\S]*database system is shut down/);
  t.notMatch(log, /terminating connection due to administrator command/);

  // A DATABASE_URL in the environment must not send the demo to a real database.
  const second = startDev(t, cwd, args, { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/not_used' });
  const secondBanner = await second.waitFor(/Waiting for webhooks/);
  t.match(
    secondBanner,
    /^DATABASE_URL is ignored: dev uses its own embedded PostgreSQL unless you pass --database-url\.$/m,
  );
  t.equal((await register(apiUrl, 'devtester')).status, 409, 'the user registered in the first run is still there');
  t.equal(readFileSync(join(cwd, '.suekk-sync', 'secrets.json'), 'utf8'), secrets, 'the secrets are reused');
  const secondPid = postmasterPid(dataDir);
  second.child.kill('SIGTERM');
  const secondResult = await second.finished;
  t.equal(secondResult.code, 0, secondResult.stderr);
  t.notOk(alive(secondPid));
  t.same(serversFor(dataDir), []);

  // A dev killed outright cannot stop its server; the next dev in the folder stops it and carries on.
  const killed = startDev(t, cwd, args);
  await killed.waitFor(/Waiting for webhooks/);
  const leftPid = postmasterPid(dataDir);
  process.kill(-killed.child.pid!, 'SIGKILL');
  await killed.finished;
  t.ok(alive(leftPid), 'the server outlives a dev killed with SIGKILL');
  const next = startDev(t, cwd, args);
  await next.waitFor(/Waiting for webhooks/);
  t.notOk(alive(leftPid), 'the next dev stopped the server left behind');
  t.equal((await register(apiUrl, 'devtester')).status, 409);
  process.kill(-next.child.pid!, 'SIGINT');
  t.equal((await next.finished).code, 0);
  t.same(serversFor(dataDir), []);
});

t.test('dev refuses a port in use before it starts anything', async (t) => {
  const cwd = workFolder(t);
  const busy: Server = createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => busy.close(() => resolve())));
  const port = (busy.address() as { port: number }).port;
  const result = await runCli(['dev', '--api-port', String(port), '--receiver-port', '0'], { cwd, timeoutMs: 20_000 });
  t.equal(result.code, 2);
  t.equal(
    result.stderr,
    `suekk-sync: Port ${port} (--api-port) is already in use on 127.0.0.1; choose another --api-port.\n`,
  );
  t.notOk(existsSync(join(cwd, '.suekk-sync', 'pgdata')), 'no database was created');
});
