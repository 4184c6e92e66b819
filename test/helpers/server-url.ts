/**
 * Which PostgreSQL server the tests use: SUEKK_TEST_DATABASE_URL, else the machine's at
 * 127.0.0.1:5432 when it answers, else an embedded server started by the tap `before` hook
 * (test/helpers/embedded-setup.ts), whose URL it leaves in a file of the run's folder.
 */
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

/** SUEKK_TEST_MACHINE_URL moves the probe (to a closed port, say) to exercise the embedded fallback. */
export const MACHINE_URL = process.env.SUEKK_TEST_MACHINE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';

/**
 * The embedded server's folder for one tap run. The setup script, the test files and the
 * teardown script are all children of tap's runner, and tap offers no other way to hand them a
 * value: its pid names the run, so parallel runs never share (or stop) each other's server.
 */
export function embeddedRunDir(runnerPid = process.ppid): string {
  return join(tmpdir(), `${EMBEDDED_RUN_PREFIX}${runnerPid}`);
}

export const EMBEDDED_RUN_PREFIX = 'suekk-sync-test-pg-';

export const EMBEDDED_URL_FILE = 'url';

function embeddedUrl(): string | undefined {
  try {
    const url = readFileSync(join(embeddedRunDir(), EMBEDDED_URL_FILE), 'utf8').trim();
    return url === '' ? undefined : url;
  } catch {
    return undefined;
  }
}

export async function answers(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
  try {
    await client.connect();
    await client.query('select 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

let cached: Promise<string> | undefined;

export function serverUrl(): Promise<string> {
  cached ??= (async () => {
    const explicit = process.env.SUEKK_TEST_DATABASE_URL;
    if (explicit) return explicit;
    // Before the probe: the setup script already found the machine's server missing.
    const embedded = embeddedUrl();
    if (embedded) return embedded;
    if (await answers(MACHINE_URL)) return MACHINE_URL;
    throw new Error(
      'No PostgreSQL for the tests: set SUEKK_TEST_DATABASE_URL, start one at 127.0.0.1:5432, or run through tap (`npm test`) so the embedded server starts.',
    );
  })();
  return cached;
}
