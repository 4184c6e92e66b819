/**
 * tap's `before` script (package.json): when the tests have no PostgreSQL of their own, neither
 * SUEKK_TEST_DATABASE_URL nor a server answering at 127.0.0.1:5432, it starts an embedded one for
 * this run and leaves its URL where test/helpers/server-url.ts looks. tap waits for this script to
 * exit before it runs any test, so the server must outlive it; the `after` script stops it.
 */
import { chmodSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { redactUrl } from '../../src/db/pool.ts';
import { isLeftBehind, startEmbeddedPostgres, stopEmbeddedPostgres } from '../../src/dev/embedded.ts';
import { errorMessage } from '../../src/errors.ts';
import { answers, EMBEDDED_RUN_PREFIX, EMBEDDED_URL_FILE, embeddedRunDir, MACHINE_URL } from './server-url.ts';

const runDir = embeddedRunDir();
try {
  // Servers of earlier runs that were killed before their `after` script; live runs are left alone.
  for (const entry of readdirSync(tmpdir()).filter((name) => name.startsWith(EMBEDDED_RUN_PREFIX))) {
    const dir = join(tmpdir(), entry);
    if (dir === runDir || isLeftBehind(join(dir, 'pgdata'))) {
      await stopEmbeddedPostgres(join(dir, 'pgdata'));
      rmSync(dir, { recursive: true, force: true });
    }
  }

  if (!process.env.SUEKK_TEST_DATABASE_URL && !(await answers(MACHINE_URL))) {
    // Run as root, the server's own user must be able to pass through; a strict umask would not let it.
    mkdirSync(runDir, { mode: 0o755 });
    chmodSync(runDir, 0o755);
    const server = await startEmbeddedPostgres({
      dataDir: join(runDir, 'pgdata'),
      fast: true,
      // Like the machine's server the tests otherwise use: some swap the user name in its URL.
      trust: true,
      outliveProcess: true,
      // tap's runner: if it is killed, the next run knows this server was left behind.
      ownerPid: process.ppid,
    });
    writeFileSync(join(runDir, EMBEDDED_URL_FILE), `${server.url}\n`, { mode: 0o600 });
    process.stderr.write(
      `# No PostgreSQL at ${redactUrl(MACHINE_URL)}: the tests use an embedded one on 127.0.0.1:${server.port} (in ${runDir}).\n`,
    );
  }
} catch (err) {
  rmSync(runDir, { recursive: true, force: true });
  process.stderr.write(`Cannot start an embedded PostgreSQL for the tests: ${errorMessage(err)}\n`);
  process.exit(1);
}
