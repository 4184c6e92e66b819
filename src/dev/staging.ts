/**
 * Where `dev`'s embedded PostgreSQL keeps its programs and its data. Run as root, the server runs
 * as the `postgres` user, which often cannot enter the project (a clone in root's mode-700 home)
 * nor the node_modules holding its binaries. Then both are staged in a folder of the server's own
 * under the system temp folder, one per project, and reused by the next run there.
 */
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
import { blockedFolder, embeddedBinaries, serverUser, type Binaries, type RunAs } from './embedded.ts';

export interface EmbeddedPlace {
  dataDir: string;
  binaries: Binaries;
  /** Set when the server's user cannot reach the project: the folder holding its copy and data. */
  staged?: {
    dir: string;
    /** The folder the server's user cannot enter. */
    blocked: string;
    /** What is kept there: the data, the programs, or both. */
    data: boolean;
    programs: boolean;
  };
}

/** The staging folder of a project: the same path for every run there, another for each project. */
export function stagingDir(projectDir: string, base = tmpdir()): string {
  const key = createHash('sha256').update(realpathSync(projectDir)).digest('hex').slice(0, 16);
  return join(base, `suekk-sync-${key}`);
}

/**
 * The data folder and the programs for a project's embedded server: `dataDir` and the installed
 * binaries when the server's user reaches both, otherwise a staging folder under the system temp
 * folder. Throws one sentence when even that folder is out of the server's reach.
 */
export async function placeEmbeddedPostgres(
  projectDir: string,
  dataDir: string,
  options: { binaries?: Binaries; tempDir?: string } = {},
): Promise<EmbeddedPlace> {
  const binaries = options.binaries ?? (await embeddedBinaries());
  const user = serverUser();
  if (user === undefined) return { dataDir, binaries };
  mkdirSync(dirname(dataDir), { recursive: true });
  const dataBlocked = blockedFolder(dirname(dataDir), user);
  const binariesBlocked = blockedFolder(dirname(binaries.postgres), user);
  if (dataBlocked === undefined && binariesBlocked === undefined) return { dataDir, binaries };

  const blocked = (dataBlocked ?? binariesBlocked)!;
  const dir = stagingDir(projectDir, options.tempDir);
  const tempBlocked = blockedFolder(dirname(dir), user);
  if (tempBlocked !== undefined) {
    throw new UsageError(
      `The embedded PostgreSQL runs as the postgres user, which can enter neither ${blocked.dir} (mode ${blocked.mode}) nor ${tempBlocked.dir} (mode ${tempBlocked.mode}) to keep a copy there; set TMPDIR to a folder every user can enter, run from one, or pass --database-url.`,
    );
  }
  ownFolder(dir, user);
  return {
    dataDir: dataBlocked === undefined ? dataDir : join(dir, 'pgdata'),
    binaries: binariesBlocked === undefined ? binaries : stageBinaries(binaries, dir),
    staged: { dir, blocked: blocked.dir, data: dataBlocked !== undefined, programs: binariesBlocked !== undefined },
  };
}

/**
 * Creates the staging folder for the server's user, mode 700, or checks the one found is that:
 * anyone may create names in the temp folder, and a folder or link planted there must not receive
 * the database.
 */
function ownFolder(dir: string, user: RunAs): void {
  if (!existsSync(dir)) {
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const st = lstatSync(dir);
    if (st.isDirectory() && st.uid === process.getuid?.()) chownSync(dir, user.uid, user.gid);
  }
  const st = lstatSync(dir);
  if (!st.isDirectory() || st.uid !== user.uid) {
    throw new UsageError(
      `${dir} is in the way of the embedded PostgreSQL's staging folder (it is not a folder of the postgres user's); delete it and run again.`,
    );
  }
  chmodSync(dir, 0o700);
}

/** What a staged copy was made from, so a changed package (an upgrade) is copied afresh. */
function stamp(bin: Binaries): string {
  const st = statSync(bin.postgres);
  return `${realpathSync(bin.postgres)} ${st.size} ${st.mtimeMs}\n`;
}

/**
 * Copies the binaries' install tree (bin/, lib/, share/: the server finds its libraries and files
 * relative to its own path) into the staging folder, hard-linked where the file system allows.
 * Made under a temporary name and renamed, so a run that is killed halfway leaves no half copy
 * that the next run would take for a whole one.
 */
function stageBinaries(bin: Binaries, dir: string): Binaries {
  const binDir = dirname(bin.postgres);
  const root = basename(binDir) === 'bin' ? dirname(binDir) : binDir;
  const target = join(dir, 'postgresql');
  const stampFile = join(dir, 'postgresql.stamp');
  const wanted = stamp(bin);
  const current = existsSync(stampFile) ? readFileSync(stampFile, 'utf8') : undefined;
  if (current !== wanted || !existsSync(join(target, relative(root, bin.postgres)))) {
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
  return { postgres: join(target, relative(root, bin.postgres)), initdb: join(target, relative(root, bin.initdb)) };
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

/** A hard link, when the file is readable by every user already (a link shares its mode). */
function linkReadable(source: string, mode: number, dest: string): boolean {
  if ((mode & 0o004) === 0 || (mode & 0o100 && !(mode & 0o001))) return false;
  try {
    linkSync(source, dest);
    return true;
  } catch {
    return false;
  }
}
