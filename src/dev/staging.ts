/**
 * Where the embedded PostgreSQL keeps its programs and its data when it runs as another user.
 * PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user, which often
 * cannot enter the project (a clone in root's mode-700 home) nor the node_modules holding its
 * binaries. Then what it needs is staged in a folder of that user's under the system temp folder:
 * the binaries per install, the data per project. Each is reused by the next run.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { UsageError } from '../errors.ts';

export interface Binaries {
  postgres: string;
  initdb: string;
}

export interface RunAs {
  uid: number;
  gid: number;
}

/** As root the server runs as the `postgres` OS user; otherwise as whoever runs this. */
export function serverUser(): RunAs | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  try {
    const uid = Number(
      execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim(),
    );
    const gid = Number(
      execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim(),
    );
    if (Number.isInteger(uid) && Number.isInteger(gid)) return { uid, gid };
  } catch {
    // Reported below.
  }
  throw new UsageError(
    'PostgreSQL will not run as root and this machine has no postgres user to run it as; create one (useradd --system --user-group postgres), run as another user, or pass --database-url.',
  );
}

/**
 * Whether `user` may enter `dir`. Node drops supplementary groups when it switches user for a
 * child, so the server has exactly its uid and primary gid: the mode bits for those decide.
 */
function canEnter(dir: string, user: RunAs): boolean {
  const st = statSync(dir);
  if (st.uid === user.uid) return (st.mode & 0o100) !== 0;
  if (st.gid === user.gid) return (st.mode & 0o010) !== 0;
  return (st.mode & 0o001) !== 0;
}

/** The first folder from `dir` up to the root that `user` cannot enter, with its mode. */
export function blockedFolder(dir: string, user: RunAs): { dir: string; mode: string } | undefined {
  for (let at = dir; ; at = dirname(at)) {
    if (!canEnter(at, user)) return { dir: at, mode: (statSync(at).mode & 0o777).toString(8) };
    if (dirname(at) === at) return undefined;
  }
}

/** The staging folder for `key` (a project's or an install's path): the same on every run. */
export function stagingDir(key: string, kind: 'data' | 'binaries' = 'data', base = tmpdir()): string {
  const hash = createHash('sha256').update(realpathSync(key)).digest('hex').slice(0, 16);
  return join(base, `suekk-sync-${kind === 'data' ? '' : 'pg-'}${hash}`);
}

/**
 * The staging folder for `key`, created for the server's user with mode 700, or checked to be
 * that: anyone may create names in the temp folder, and a folder or link planted there must not
 * receive the database. One sentence when the server's user cannot reach the temp folder either.
 */
function stagingFolder(
  key: string,
  kind: 'data' | 'binaries',
  user: RunAs,
  blocked: { dir: string; mode: string },
): string {
  const dir = stagingDir(key, kind);
  const tempBlocked = blockedFolder(dirname(dir), user);
  if (tempBlocked !== undefined) {
    throw new UsageError(
      `The embedded PostgreSQL runs as the postgres user, which can enter neither ${blocked.dir} (mode ${blocked.mode}) nor ${tempBlocked.dir} (mode ${tempBlocked.mode}) to keep a copy there; set TMPDIR to a folder every user can enter, run from one, or pass --database-url.`,
    );
  }
  if (!existsSync(dir)) {
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const made = lstatSync(dir);
    if (made.isDirectory() && made.uid === process.getuid?.()) chownSync(dir, user.uid, user.gid);
  }
  const st = lstatSync(dir);
  if (!st.isDirectory() || st.uid !== user.uid) {
    throw new UsageError(
      `${dir} is in the way of the embedded PostgreSQL's staging folder (it is not a folder of the postgres user's); delete it and run again.`,
    );
  }
  chmodSync(dir, 0o700);
  return dir;
}

/**
 * Where a project's database lives: `dataDir` when the server's user can reach it, otherwise
 * `pgdata` in the project's staging folder (`stagedIn`), entered through `blocked`.
 */
export function placeDataDir(
  projectDir: string,
  dataDir: string,
): { dataDir: string; stagedIn?: string; blocked?: string } {
  const user = serverUser();
  if (user === undefined) return { dataDir };
  mkdirSync(dirname(dataDir), { recursive: true });
  const blocked = blockedFolder(dirname(dataDir), user);
  if (blocked === undefined) return { dataDir };
  const dir = stagingFolder(projectDir, 'data', user, blocked);
  return { dataDir: join(dir, 'pgdata'), stagedIn: dir, blocked: blocked.dir };
}

/**
 * Binaries the server's user can run: `bin` itself when it can reach them, otherwise a copy of
 * their install tree in a staging folder of that install's, made once and reused.
 */
export function reachableBinaries(
  bin: Binaries,
  user: RunAs | undefined,
): { binaries: Binaries; staged?: { dir: string; blocked: string } } {
  const blocked = user && blockedFolder(dirname(bin.postgres), user);
  if (user === undefined || blocked === undefined) return { binaries: bin };
  // The install tree (bin/, lib/, share/): the server finds its libraries and files relative to
  // its own path, so they move together.
  const binDir = dirname(bin.postgres);
  const root = basename(binDir) === 'bin' ? dirname(binDir) : binDir;
  const dir = stagingFolder(root, 'binaries', user, blocked);
  const target = join(dir, 'postgresql');
  const stampFile = join(dir, 'postgresql.stamp');
  const wanted = stamp(bin);
  const moved = (file: string) => join(target, relative(root, file));
  const current = existsSync(stampFile) ? readFileSync(stampFile, 'utf8') : undefined;
  if (current !== wanted || !existsSync(moved(bin.postgres))) {
    // Made under another name and renamed, so a run killed halfway leaves no half copy that the
    // next run would take for a whole one.
    const partial = `${target}.partial-${randomBytes(4).toString('hex')}`;
    try {
      copyTree(root, partial);
      rmSync(target, { recursive: true, force: true });
      renameSync(partial, target);
    } finally {
      rmSync(partial, { recursive: true, force: true });
    }
    writeFileSync(stampFile, wanted);
  }
  return {
    binaries: { postgres: moved(bin.postgres), initdb: moved(bin.initdb) },
    staged: { dir, blocked: blocked.dir },
  };
}

/** What a staged copy was made from, so a changed install (an upgrade) is copied afresh. */
function stamp(bin: Binaries): string {
  const st = statSync(bin.postgres);
  return `${realpathSync(bin.postgres)} ${st.size} ${st.mtimeMs}\n`;
}

function copyTree(from: string, to: string): void {
  mkdirSync(to, { mode: 0o755 });
  chmodSync(to, 0o755);
  for (const name of readdirSync(from)) {
    const source = join(from, name);
    const dest = join(to, name);
    const st = lstatSync(source);
    if (st.isSymbolicLink()) symlinkSync(readlinkSync(source), dest);
    else if (st.isDirectory()) copyTree(source, dest);
    else if (!linkReadable(source, st.mode, dest)) {
      // Installed under a strict umask, or on another file system: a copy the server may read.
      copyFileSync(source, dest);
      chmodSync(dest, (st.mode & 0o111 ? 0o555 : 0o444) | (st.mode & 0o200));
    }
  }
}

/** A hard link, when every user may already read the file (and run it, if it is a program). */
function linkReadable(source: string, mode: number, dest: string): boolean {
  if ((mode & 0o004) === 0 || (mode & 0o100 && !(mode & 0o001))) return false;
  try {
    linkSync(source, dest);
    return true;
  } catch {
    return false;
  }
}
