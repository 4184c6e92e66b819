/** Shared pieces of the fault tests: an embedded PostgreSQL of their own, writers, and delivery checks. */
import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { install } from '../../src/capture/install.ts';
import { DEFAULT_SOURCE } from '../../src/config.ts';
import { createPool, type Pool } from '../../src/db/pool.ts';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../src/dev/embedded.ts';
import type { TestDatabase } from '../helpers/db.ts';
import { collect, settled, startCli, type CliResult } from '../helpers/cli.ts';
import { testPostgresBinaries } from '../helpers/postgres-build.ts';
import type { ReceivedRequest } from '../helpers/receiver.ts';

type Teardown = { teardown(fn: () => unknown): void };

export interface OwnPostgres {
  server: EmbeddedPostgres;
  db: TestDatabase;
  dataDir: string;
  /** Fast shutdown, then start again on the same data folder and port. */
  stop(): Promise<void>;
  start(): Promise<void>;
}

/** A PostgreSQL this test may stop and start (never the machine's), users table + suekk-sync installed. */
export async function ownPostgres(t: Teardown): Promise<OwnPostgres> {
  const dir = mkdtempSync(join(tmpdir(), 'suekk-fault-pg-'));
  // As root the server runs as the postgres user, which must be able to enter the folder.
  chmodSync(dir, 0o755);
  const dataDir = join(dir, 'pgdata');
  const options = { dataDir, fast: true, trust: true, binaries: testPostgresBinaries() };
  let server = await startEmbeddedPostgres(options);
  const port = server.port;
  const pool = createPool(server.url, { max: 5, applicationName: 'suekk-sync fault test' });
  const own: OwnPostgres = {
    server,
    db: { url: server.url, name: 'postgres', pool },
    dataDir,
    stop: () => server.stop(),
    start: async () => {
      server = await startEmbeddedPostgres({ ...options, port });
      own.server = server;
    },
  };
  t.teardown(async () => {
    await pool.end().catch(() => undefined);
    await server.stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });
  await pool.query(readFileSync(new URL('../../sql/examples/users.sql', import.meta.url), 'utf8'));
  const installPool = createPool(server.url, { max: 1 });
  try {
    await install(installPool, { source: DEFAULT_SOURCE });
  } finally {
    await installPool.end();
  }
  return own;
}

/** The relay CLI as a process; killed at teardown if still running. */
export function relayProcess(t: Teardown, env: Record<string, string>, flags: string[] = []) {
  const child: ChildProcess = startCli(['relay', ...flags], { env: { LOG_LEVEL: 'info', ...env } });
  const done: Promise<CliResult> = collect(child, 240_000);
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await settled(done);
  });
  return { child, done };
}

export interface Writer {
  /** Writes acknowledged by a commit: user id → the first_name values written, in order. */
  committed: Map<string, string[]>;
  count(): number;
  failures: number;
  stop(): Promise<void>;
}

/**
 * Updates the given users continuously, one at a time, retrying its own failed writes (the
 * database may be down). Only writes whose commit was acknowledged are counted.
 */
export function startWriter(url: string, userIds: string[], pauseMs = 10): Writer {
  const pool = createPool(url, { max: 2, applicationName: 'suekk-sync fault writer' });
  const committed = new Map<string, string[]>();
  let stopping = false;
  let n = 0;
  const writer: Writer = {
    committed,
    failures: 0,
    count: () => n,
    stop: async () => {
      stopping = true;
      await loop;
      await pool.end().catch(() => undefined);
    },
  };
  const loop = (async () => {
    let seq = 0;
    while (!stopping) {
      const user = userIds[seq % userIds.length]!;
      const value = `w${seq}`;
      try {
        await pool.query('update users set first_name = $1 where id = $2', [value, user]);
        committed.set(user, [...(committed.get(user) ?? []), value]);
        n++;
        seq++;
      } catch {
        writer.failures++;
        await new Promise((r) => setTimeout(r, 100));
        // The same user and value again: a commit whose acknowledgement was lost may have landed.
      }
      await new Promise((r) => setTimeout(r, pauseMs));
    }
  })();
  return writer;
}

/** Capture order per user, as `evt_<uuid>` ids. */
export async function captureOrder(pool: Pool): Promise<Map<string, string[]>> {
  const { rows } = await pool.query<{ user_id: string; webhook_id: string }>(
    'select user_id, webhook_id::text from suekk_sync.event_log order by id',
  );
  const order = new Map<string, string[]>();
  for (const r of rows) order.set(r.user_id, [...(order.get(r.user_id) ?? []), `evt_${r.webhook_id}`]);
  return order;
}

/** Per user, the webhook-ids in the order they first arrived (answered or not). */
export function firstArrivals(requests: ReceivedRequest[]): Map<string, string[]> {
  const seen = new Set<string>();
  const order = new Map<string, string[]>();
  for (const r of requests) {
    if (seen.has(r.webhookId)) continue;
    seen.add(r.webhookId);
    const user = String(r.body.id);
    order.set(user, [...(order.get(user) ?? []), r.webhookId]);
  }
  return order;
}

/** Sorted entries, for t.same on maps. */
export function sorted(map: Map<string, string[]>): [string, string[]][] {
  return [...map.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** A process's resident memory in kB (Linux /proc). */
export function rssKb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) : NaN;
}
