/**
 * `dev` run as root from a folder the database's own user (postgres) cannot enter, as a clone in
 * root's mode-700 home is: the database is staged in a folder of that user's under the temp
 * folder, named in the banner and reused by the next run; only where no such folder can be had is
 * there an error, one sentence long.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import t, { type Test } from 'tap';
import { embeddedBinaries, freePort, stopEmbeddedPostgres } from '../src/dev/embedded.ts';
import { reachableBinaries, serverUser, stagingDir } from '../src/dev/staging.ts';
import { collect, runCli, startCli, type CliResult } from './helpers/cli.ts';

const isRoot = process.getuid?.() === 0;
const hasPostgresUser = isRoot && spawnSync('id', ['-u', 'postgres']).status === 0;
const skip = !hasPostgresUser && 'runs as root, on a machine with a postgres user';

/** A project folder inside a mode-700 one, which the postgres user cannot pass. */
function closedProject(t: Test): { closed: string; project: string } {
  const closed = mkdtempSync(join(tmpdir(), 'suekk-closed-'));
  chmodSync(closed, 0o700);
  const project = join(closed, 'project');
  mkdirSync(project);
  const staging = stagingDir(project);
  t.teardown(async () => {
    await stopEmbeddedPostgres(join(staging, 'pgdata'));
    rmSync(staging, { recursive: true, force: true });
    rmSync(closed, { recursive: true, force: true });
  });
  return { closed, project };
}

function startDev(t: Test, cwd: string, args: string[], env: Record<string, string | undefined> = {}) {
  const child: ChildProcess = startCli(['dev', ...args], { cwd, env, detached: true });
  child.stdin?.end();
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) process.kill(-child.pid!, 'SIGKILL');
  });
  let stdout = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  const finished: Promise<CliResult> = collect(child, 90_000);
  const ready = new Promise<string>((resolve, reject) => {
    const timer = setInterval(() => {
      if (/Waiting for webhooks/.test(stdout)) {
        clearInterval(timer);
        resolve(stdout);
      }
    }, 50);
    void finished.then((r) => {
      clearInterval(timer);
      reject(new Error(`dev exited (${r.code ?? r.signal}) before it was ready:\n${stdout}\n${r.stderr}`));
    }, reject);
  });
  return { child, finished, ready };
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

t.test('dev as root from a mode-700 folder stages the database, says where, and reuses it', { skip }, async (t) => {
  const { closed, project } = closedProject(t);
  const staging = stagingDir(project);
  const apiPort = await freePort();
  const args = ['--api-port', String(apiPort), '--receiver-port', '0'];

  const first = startDev(t, project, args);
  const banner = await first.ready;
  t.match(banner, `database  embedded PostgreSQL in ${staging}/pgdata, on 127.0.0.1:`);
  t.match(
    banner,
    `staged    the postgres user the database runs as cannot enter ${closed}; kept for the next run:\n            the database in ${staging}\n`,
  );
  const st = lstatSync(staging);
  t.ok(st.isDirectory());
  t.equal(st.uid, serverUser()!.uid, 'the staging folder belongs to the postgres user');
  t.equal(st.mode & 0o777, 0o700, 'and only that user (and root) may enter it');
  t.ok(existsSync(join(project, '.suekk-sync', 'secrets.json')), 'the secrets stay in the project');

  t.equal((await register(`http://127.0.0.1:${apiPort}`, 'staged')).status, 201);
  process.kill(-first.child.pid!, 'SIGINT');
  const result = await first.finished;
  t.equal(result.code, 0, result.stderr);
  t.equal(result.stderr, '');

  const second = startDev(t, project, args);
  t.match(await second.ready, `the database in ${staging}`);
  t.equal(
    (await register(`http://127.0.0.1:${apiPort}`, 'staged')).status,
    409,
    'the user of the first run is still there',
  );
  process.kill(-second.child.pid!, 'SIGINT');
  t.equal((await second.finished).code, 0);
});

t.test('with no folder the postgres user can enter, dev says so in one sentence', { skip }, async (t) => {
  const { closed, project } = closedProject(t);
  const temp = join(closed, 'tmp');
  mkdirSync(temp, { mode: 0o700 });
  const result = await runCli(['dev', '--api-port', '0', '--receiver-port', '0'], {
    cwd: project,
    env: { TMPDIR: temp },
    timeoutMs: 30_000,
  });
  t.equal(result.code, 2);
  t.equal(
    result.stderr,
    `suekk-sync: The embedded PostgreSQL runs as the postgres user, which can enter neither ${closed} (mode 700) nor ${temp} (mode 700) to keep a copy there; set TMPDIR to a folder every user can enter, run from one, or pass --database-url.\n`,
  );
  t.notOk(existsSync(join(temp, 'pgdata')));
});

t.test('a folder planted at the staging path is refused, not used', { skip }, async (t) => {
  const { project } = closedProject(t);
  const staging = stagingDir(project);
  mkdirSync(staging, { mode: 0o755 });
  writeFileSync(join(staging, 'planted'), '');
  const result = await runCli(['dev', '--api-port', '0', '--receiver-port', '0'], { cwd: project, timeoutMs: 30_000 });
  t.equal(result.code, 2);
  t.equal(
    result.stderr,
    `suekk-sync: ${staging} is in the way of the embedded PostgreSQL's staging folder (it is not a folder of the postgres user's); delete it and run again.\n`,
  );
  t.notOk(existsSync(join(staging, 'pgdata')));
});

t.test('binaries the postgres user cannot reach are staged once and reused', { skip }, async (t) => {
  const installed = await embeddedBinaries();
  const closed = mkdtempSync(join(tmpdir(), 'suekk-closed-'));
  chmodSync(closed, 0o700);
  // A copy of the package's install tree in the closed folder, as under root's home.
  const root = dirname(dirname(installed.postgres));
  const copy = join(closed, 'native');
  t.equal(spawnSync('cp', ['-al', root, copy]).status, 0);
  const staging = stagingDir(copy, 'binaries');
  t.teardown(() => {
    rmSync(staging, { recursive: true, force: true });
    rmSync(closed, { recursive: true, force: true });
  });
  const binaries = {
    postgres: installed.postgres.replace(root, copy),
    initdb: installed.initdb.replace(root, copy),
  };
  const user = serverUser()!;

  const first = reachableBinaries(binaries, user);
  t.same(first.staged, { dir: staging, blocked: closed });
  t.ok(first.binaries.postgres.startsWith(`${staging}/`));
  const st = lstatSync(staging);
  t.equal(st.uid, user.uid, 'the staging folder belongs to the postgres user');
  t.equal(st.mode & 0o777, 0o700);
  const version = spawnSync(first.binaries.postgres, ['--version'], { uid: user.uid, gid: user.gid, encoding: 'utf8' });
  t.equal(version.status, 0, `the postgres user runs the staged server: ${version.stderr}`);
  t.match(version.stdout, /^postgres \(PostgreSQL\) \d+/);

  const inode = statSync(first.binaries.postgres).ino;
  const again = reachableBinaries(binaries, user);
  t.same(again, first);
  t.equal(statSync(again.binaries.postgres).ino, inode, 'the copy is reused, not made again');
});
