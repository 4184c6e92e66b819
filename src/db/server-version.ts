/**
 * The PostgreSQL versions suekk-sync runs on. Its SQL (migrations, generated capture, the relay's
 * statements) uses nothing newer than 14, and the test matrix runs it on 14, 15 and 18; an older
 * server would fail somewhere in the middle of an install with a syntax error instead.
 */
import { UsageError } from '../errors.ts';
import type { PoolClient } from './pool.ts';

export const OLDEST_SUPPORTED_MAJOR = 14;

/** The major of a `server_version_num`: 140023 → 14, 180004 → 18 (and 90624, 9.6, → 9). */
export function serverMajor(versionNum: number): number {
  return Math.floor(versionNum / 10_000);
}

/** Throws the one-sentence refusal for a server older than the oldest supported major. */
export function checkServerVersion(versionNum: number, version: string): void {
  if (serverMajor(versionNum) >= OLDEST_SUPPORTED_MAJOR) return;
  throw new UsageError(
    `The database runs PostgreSQL ${version}, and suekk-sync needs PostgreSQL ${OLDEST_SUPPORTED_MAJOR} or newer; upgrade the server or install on another one.`,
  );
}

/** Reads the server's version and refuses one that is too old. */
export async function requireSupportedServer(client: Pick<PoolClient, 'query'>): Promise<void> {
  const { rows } = await client.query<{ num: string; version: string }>(
    "select current_setting('server_version_num') as num, current_setting('server_version') as version",
  );
  // server_version carries the packager's suffix ("15.20 (Debian 15.20-0+deb12u1)"): the number is enough.
  checkServerVersion(Number(rows[0]!.num), rows[0]!.version.split(' ')[0]!);
}
