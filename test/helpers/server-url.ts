/**
 * Which PostgreSQL server the tests use: SUEKK_TEST_DATABASE_URL, else the machine's at
 * 127.0.0.1:5432 when it answers, else an embedded server started by the tap `before` hook
 * (test/helpers/embedded-setup.ts), whose URL it leaves in SUEKK_TEST_EMBEDDED_URL.
 */
import pg from 'pg';

const MACHINE_URL = 'postgres://postgres@127.0.0.1:5432/postgres';

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
    const embedded = process.env.SUEKK_TEST_EMBEDDED_URL;
    if (embedded) return embedded;
    if (await answers(MACHINE_URL)) return MACHINE_URL;
    throw new Error(
      'No PostgreSQL for the tests: set SUEKK_TEST_DATABASE_URL, start one at 127.0.0.1:5432, or run through `npm test` so the embedded server starts.',
    );
  })();
  return cached;
}
