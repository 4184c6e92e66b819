/**
 * resync: `resync --all` of every user with a relay (in the bench process) delivering meanwhile
 * and live updates going on at a steady rate. Two runs, each on a fresh database:
 *
 *   cli      the real CLI process an operator starts (`node bin/suekk-sync.js resync --all
 *            --no-wait --json`); its peak RSS (VmHWM) is sampled from /proc while it runs. This is
 *            the headline figure.
 *   library  the same enqueue through the library's resync() without a progress callback, so the
 *            figure is the relay's and the database's, not the CLI's progress reporting. (The CLI
 *            always passes onProgress, even with --no-wait/--json, and the progress query can
 *            dominate; comparing the two runs shows how much.)
 *
 *   seconds      from starting the enqueue until every resync event is delivered and marked;
 *   live_p99_ms  commit-to-delivery of the live updates made meanwhile (live events are claimed
 *                before resync ones, so a resync must not delay them much).
 *
 * Each run is capped (`capSeconds`): a run that does not finish reports its rate so far and
 * `complete: false`, so a slow path costs a bounded time and still yields a figure.
 *
 * Users are seeded without capture (session_replication_role = replica), so the outbox starts
 * empty and only the resync fills it. Resync events are `created`, live ones `updated`: the
 * receiver counts the former by that tag.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { loadSettings } from '../../../src/config.ts';
import { createPool } from '../../../src/db/pool.ts';
import { resync } from '../../../src/ops/resync.ts';
import type { BenchContext } from '../context.ts';
import { peakRssMb, type CpuReport } from '../cpu.ts';
import { analyze, seedUsers } from '../db.ts';
import { outboxSettled, startBenchRelay, type BenchRelay } from '../relay-harness.ts';
import { round, sleep } from '../stats.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const RESYNC_TAG = '"action":"created"';

export interface ResyncRun {
  mode: 'cli' | 'library';
  users: number;
  complete: boolean;
  /** Resync events delivered when the run ended (all of them when complete). */
  delivered: number;
  /** Users enqueued when the run ended (from the run's row in suekk_sync.resync_runs). */
  enqueued: number;
  seconds: number;
  users_per_s: number;
  /** When the enqueue had finished (the CLI exited), if it did. */
  enqueue_seconds: number | null;
  /** The CLI's VmHWM (cli mode only). */
  peak_rss_mb: number | null;
  cli_exit_code?: number | null;
  cli_output?: string;
  live: { rate: number; measured: number; arrived: number; p50: number; p95: number; p99: number; max: number };
  cpu?: CpuReport;
}

export interface ResyncResult {
  users: number;
  seconds: number;
  users_per_s: number;
  peak_rss_mb: number;
  live_p99_ms: number;
  complete: boolean;
  runs: { cli: ResyncRun; library?: ResyncRun };
}

interface Enqueuer {
  /** Resolves when the enqueue is over (the CLI exited / resync() returned). */
  done: Promise<{ ok: boolean; detail: string }>;
  stop(): void;
  peakRssMb(): number | null;
  exitCode(): number | null | undefined;
}

function cliEnqueuer(ctx: BenchContext, databaseUrl: string): Enqueuer {
  const child: ChildProcess = spawn(process.execPath, ['bin/suekk-sync.js', 'resync', '--all', '--no-wait', '--json'], {
    cwd: ROOT,
    env: { ...process.env, DATABASE_URL: databaseUrl, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  ctx.track(child);
  ctx.extraPids.cli = [child.pid!];
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  let peak = 0;
  // VmHWM is the process's own high-water mark: a sample shortly before exit sees the peak.
  const sampler = setInterval(() => {
    const mb = peakRssMb(child.pid!);
    if (mb !== undefined) peak = Math.max(peak, mb);
  }, 50);
  const done = new Promise<{ ok: boolean; detail: string }>((resolve) => {
    child.once('error', (err) => resolve({ ok: false, detail: err.message }));
    child.once('exit', (code, signal) => {
      clearInterval(sampler);
      ctx.extraPids.cli = [];
      resolve({ ok: code === 0, detail: out.trim() || `exit ${signal ?? code}` });
    });
  });
  return {
    done,
    stop: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
    peakRssMb: () => peak,
    exitCode: () => child.exitCode,
  };
}

function libraryEnqueuer(databaseUrl: string): Enqueuer {
  const pool = createPool(databaseUrl, { max: 4, applicationName: 'suekk-sync cli' });
  const abort = new AbortController();
  // Settings as the CLI would build them, minus any config file or environment of this machine.
  const settings = loadSettings({ databaseUrl }, {}, tmpdir());
  const done = resync(pool, settings, { scope: { all: true }, wait: false, signal: abort.signal })
    .then(
      (r) => ({ ok: !r.interrupted, detail: `enqueued ${r.enqueued}` }),
      (err: unknown) => ({ ok: false, detail: (err as Error).message }),
    )
    .finally(() => pool.end());
  return { done, stop: () => abort.abort(), peakRssMb: () => null, exitCode: () => undefined };
}

async function enqueuedSoFar(relay: BenchRelay): Promise<number> {
  const { rows } = await relay.pool.query<{ n: string | null }>(
    'select max(enqueued)::text as n from suekk_sync.resync_runs',
  );
  return Number(rows[0]?.n ?? 0);
}

async function resyncRun(ctx: BenchContext, mode: 'cli' | 'library', capSeconds: number): Promise<ResyncRun> {
  const { users, liveRate, liveUsers } = ctx.sizes.resync;
  const db = await ctx.dbs.clone('suekk', `resync_${mode}`);
  try {
    await seedUsers(db.url, 1, users, false);
    await analyze(db.url, ['users']);
    const relay = await startBenchRelay(ctx, db.url);
    let enqueuer: Enqueuer | undefined;
    try {
      await ctx.receiver.reset({ tag: RESYNC_TAG, markers: true });
      await ctx.receiver.startWriter({
        databaseUrl: db.url,
        rate: liveRate,
        warmupMs: 1_000,
        users: liveUsers,
        connections: 2,
      });
      await sleep(1_000); // live traffic runs before the resync starts (and is left out of the figures)
      const { value, cpu } = await ctx.measureCpu(`resync_${mode}`, async () => {
        const t0 = performance.now();
        const elapsed = () => (performance.now() - t0) / 1000;
        const enq = (enqueuer = mode === 'cli' ? cliEnqueuer(ctx, db.url) : libraryEnqueuer(db.url));
        let enqueueSeconds: number | null = null;
        let enqueueFailure: string | undefined;
        void enq.done.then((r) => {
          enqueueSeconds = elapsed();
          if (!r.ok) enqueueFailure = r.detail;
        });
        let lastLog = 0;
        let delivered = 0;
        let complete = false;
        while (elapsed() < capSeconds) {
          if (enqueueFailure !== undefined) throw new Error(`resync (${mode}) failed: ${enqueueFailure}`);
          delivered = (await ctx.receiver.stats()).tagged;
          if (delivered >= users && (await outboxSettled(relay.pool))) {
            complete = true;
            break;
          }
          if (elapsed() - lastLog >= 10) {
            lastLog = elapsed();
            ctx.log(
              `    resync (${mode}): ${delivered} delivered, ${await enqueuedSoFar(relay)} enqueued of ${users} after ${Math.round(elapsed())} s`,
            );
          }
          await sleep(delivered >= users ? 10 : 50);
        }
        const seconds = elapsed();
        const enqueued = await enqueuedSoFar(relay);
        if (!complete) {
          ctx.log(
            `    resync (${mode}): stopped at the ${capSeconds} s cap: ${delivered} delivered, ${enqueued} enqueued of ${users}`,
          );
          enq.stop();
        }
        const exit = await enq.done;
        return {
          seconds,
          delivered,
          complete,
          enqueued,
          enqueueSeconds: enqueueSeconds as number | null,
          output: exit.detail,
          peakRssMb: enq.peakRssMb(),
          exitCode: enq.exitCode(),
        };
      });
      await ctx.receiver.stopWriter();
      const live = await ctx.receiver.latency(10_000);
      const run: ResyncRun = {
        mode,
        users,
        complete: value.complete,
        delivered: value.delivered,
        enqueued: value.enqueued,
        seconds: round(value.seconds, 1),
        users_per_s: round(value.delivered / value.seconds),
        enqueue_seconds: value.enqueueSeconds === null ? null : round(value.enqueueSeconds, 1),
        peak_rss_mb: value.peakRssMb === null ? null : round(value.peakRssMb, 1),
        ...(mode === 'cli' ? { cli_exit_code: value.exitCode ?? null, cli_output: value.output.slice(0, 400) } : {}),
        live: {
          rate: liveRate,
          measured: live.measured,
          arrived: live.arrived,
          p50: round(live.p50, 1),
          p95: round(live.p95, 1),
          p99: round(live.p99, 1),
          max: round(live.max, 1),
        },
        ...(cpu ? { cpu } : {}),
      };
      ctx.log(
        `  resync (${mode}) ${users} users: ${run.complete ? '' : 'INCOMPLETE, '}${run.delivered} delivered in ${run.seconds} s = ${run.users_per_s} users/s` +
          `; enqueue ${run.enqueue_seconds === null ? 'unfinished' : `done at ${run.enqueue_seconds} s`}` +
          (run.peak_rss_mb === null ? '' : `; CLI peak RSS ${run.peak_rss_mb} MB`) +
          `; live updates at ${liveRate}/s: p50 ${run.live.p50} ms, p99 ${run.live.p99} ms, max ${run.live.max} ms (${run.live.arrived}/${run.live.measured})`,
      );
      return run;
    } finally {
      enqueuer?.stop();
      await ctx.receiver.stopWriter().catch(() => undefined);
      await relay.stop();
    }
  } finally {
    ctx.extraPids.cli = [];
    await ctx.dbs.drop(db.name);
  }
}

export async function runResync(ctx: BenchContext, withLibraryRun: boolean): Promise<ResyncResult> {
  const cap = ctx.sizes.resync.capSeconds;
  const cli = await resyncRun(ctx, 'cli', cap);
  const library = withLibraryRun ? await resyncRun(ctx, 'library', cap) : undefined;
  return {
    users: cli.users,
    seconds: cli.seconds,
    users_per_s: cli.users_per_s,
    peak_rss_mb: cli.peak_rss_mb ?? 0,
    live_p99_ms: cli.live.p99,
    complete: cli.complete,
    runs: { cli, ...(library ? { library } : {}) },
  };
}
