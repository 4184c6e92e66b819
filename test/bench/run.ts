/**
 * `npm run bench` — suekk-sync's benchmark, side by side with a raw-HTTP ceiling and with
 * graphile-worker, in one go on this machine: speed is measured here, never by timed
 * assertions in tests.
 *
 *   node --import tsx test/bench/run.ts [--quick] [--out bench-results.json] [--only a,b] [--skip a,b]
 *                                       [--no-info-logs] [--no-resync-library] [--profile <prefix>]
 *                                       [--relay-db-options '-c synchronous_commit=off']
 *
 * Scenarios: ceiling, drain, peer, latency, hot_user, resync, trigger_overhead, login, longtx, outage. It starts what it
 * needs — a receiver process, fresh databases on the PostgreSQL at SUEKK_BENCH_DATABASE_URL
 * (default postgres://postgres@127.0.0.1:5432/postgres; it must be allowed to create databases) —
 * and drops every database it created when it ends, fails or is interrupted.
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import pg from 'pg';
import { FULL, QUICK } from './config.ts';
import { createContext, type BenchContext } from './context.ts';
import { loadAverage } from './cpu.ts';
import { BenchDatabases } from './db.ts';
import { Profiler } from './profiler.ts';
import { Receiver } from './receiver.ts';
import { resultsJson, table, type Results } from './report.ts';
import { runCeiling } from './scenarios/ceiling.ts';
import { runDrain } from './scenarios/drain.ts';
import { runHotUser } from './scenarios/hot-user.ts';
import { runLatency } from './scenarios/latency.ts';
import { runResync } from './scenarios/resync.ts';
import { runLongTx } from './scenarios/longtx.ts';
import { runOutage } from './scenarios/outage.ts';
import { runLogin, runTriggerOverhead } from './scenarios/trigger-overhead.ts';

const SCENARIOS = [
  'ceiling',
  'drain',
  'peer',
  'latency',
  'hot_user',
  'resync',
  'trigger_overhead',
  'login',
  'longtx',
  'outage',
] as const;
type Scenario = (typeof SCENARIOS)[number];

interface Args {
  quick: boolean;
  out: string;
  scenarios: Scenario[];
  infoLogs: boolean;
  resyncLibrary: boolean;
  profile: string | undefined;
  relayDbOptions: string | undefined;
}

function usage(message: string): never {
  process.stderr.write(
    `${message}\nusage: run.ts [--quick] [--out <file>] [--only ${SCENARIOS.join(',')}] [--skip <list>] [--no-info-logs] [--no-resync-library] [--profile <prefix>] [--relay-db-options '<libpq options>']\n`,
  );
  process.exit(2);
}

function parseList(raw: string | undefined): Scenario[] {
  if (raw === undefined) usage('a list of scenarios is missing');
  const list = raw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const s of list) if (!SCENARIOS.includes(s as Scenario)) usage(`unknown scenario ${JSON.stringify(s)}`);
  return list as Scenario[];
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    quick: false,
    out: 'bench-results.json',
    scenarios: [...SCENARIOS],
    infoLogs: true,
    resyncLibrary: true,
    profile: undefined,
    relayDbOptions: undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--quick') args.quick = true;
    else if (a === '--out') args.out = argv[++i] ?? usage('--out needs a file');
    else if (a.startsWith('--out=')) args.out = a.slice(6);
    else if (a === '--only') {
      const only = parseList(argv[++i]);
      args.scenarios = SCENARIOS.filter((s) => only.includes(s));
    } else if (a === '--skip') {
      const skip = parseList(argv[++i]);
      args.scenarios = args.scenarios.filter((s) => !skip.includes(s));
    } else if (a === '--no-info-logs') args.infoLogs = false;
    else if (a === '--no-resync-library') args.resyncLibrary = false;
    else if (a === '--profile') args.profile = argv[++i] ?? usage('--profile needs a file prefix');
    else if (a === '--relay-db-options') args.relayDbOptions = argv[++i] ?? usage('--relay-db-options needs a value');
    else if (a === '--help' || a === '-h') usage('suekk-sync benchmark');
    else usage(`unknown argument ${JSON.stringify(a)}`);
  }
  return args;
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const adminUrl = process.env.SUEKK_BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const started = performance.now();
  const log = (line: string) => process.stdout.write(`${line}\n`);
  // Piped into `head` or a closed terminal: keep going (and clean up) rather than die on EPIPE.
  process.stdout.on('error', () => undefined);

  const admin = new pg.Client({ connectionString: adminUrl, application_name: 'suekk-bench admin' });
  await admin.connect();
  const postgres = (await admin.query<{ v: string }>("select current_setting('server_version') as v")).rows[0]!.v;
  const dbs = new BenchDatabases(adminUrl);
  const abandoned = await dbs.dropAbandoned();
  if (abandoned.length > 0) log(`Dropped ${abandoned.length} database(s) left by an earlier, killed bench run.`);

  // The relays log warnings (lost leases, slow database…) here rather than over the table.
  const relayLogFile = join(tmpdir(), `suekk-bench-${process.pid}.relay.log`);
  const relayLog = pino.destination({ dest: relayLogFile, sync: true });
  const infoLogFile = join(tmpdir(), `suekk-bench-${process.pid}.info.log`);
  let receiver: Receiver | undefined;
  const children = new Set<ChildProcess>();
  let cleaning: Promise<void> | undefined;
  const cleanup = () =>
    (cleaning ??= (async () => {
      for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await receiver?.stop().catch(() => undefined);
      await dbs
        .dropAll()
        .catch((err: unknown) =>
          log(`Could not drop the bench databases (${(err as Error).message}); drop ${dbs.prefix}* by hand.`),
        );
      await admin.end().catch(() => undefined);
    })());
  // Interrupted: the databases still go (DROP … WITH (FORCE) ends the connections still open).
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      log(`\n${signal}: dropping the bench databases…`);
      void cleanup().finally(() => process.exit(130));
    });
  }

  const results: Results = {
    machine: {
      cpus: cpus().length,
      node: process.version,
      postgres,
      load_avg_start: loadAverage(),
      load_avg_end: [],
      quick: args.quick,
      started_at: new Date().toISOString(),
      total_seconds: 0,
    },
    errors: {},
    diagnostics: args.relayDbOptions ? { relay_db_options: args.relayDbOptions } : {},
  };

  try {
    receiver = await Receiver.start();
    const ctx: BenchContext = createContext({
      relayLog: relayLog as unknown as NodeJS.WritableStream,
      infoLogFile,
      dbs,
      receiver,
      sizes: args.quick ? QUICK : FULL,
      quick: args.quick,
      admin,
      log,
      track: (child) => {
        children.add(child);
        child.once('exit', () => children.delete(child));
      },
    });
    if (args.profile) ctx.profiler = new Profiler(resolve(args.profile));
    if (args.relayDbOptions) {
      ctx.relayDbOptions = args.relayDbOptions;
      log(
        `The relay's connections run with options ${JSON.stringify(args.relayDbOptions)} (an experiment, not the shipped relay).`,
      );
    }
    log(
      `suekk-sync bench${args.quick ? ' (quick)' : ''}: ${results.machine.cpus} cpus, node ${process.version}, PostgreSQL ${postgres}, load ${results.machine.load_avg_start.join(' ')}`,
    );
    const steps: Record<Scenario, () => Promise<void>> = {
      ceiling: async () => void (results.ceiling = await runCeiling(ctx)),
      drain: async () => void (results.drain = await runDrain(ctx, args.infoLogs)),
      // Imported on demand: without graphile-worker installed only this scenario fails.
      peer: async () => void (results.peer = await (await import('./scenarios/peer.ts')).runPeer(ctx)),
      latency: async () => void (results.latency = await runLatency(ctx)),
      hot_user: async () => void (results.hotUser = await runHotUser(ctx)),
      resync: async () => void (results.resync = await runResync(ctx, args.resyncLibrary)),
      trigger_overhead: async () => void (results.trigger = await runTriggerOverhead(ctx)),
      login: async () => void (results.login = await runLogin(ctx)),
      longtx: async () => void (results.longtx = await runLongTx(ctx)),
      outage: async () => void (results.outage = await runOutage(ctx)),
    };
    for (const s of args.scenarios) {
      const t0 = performance.now();
      log(`\n▶ ${s}  (load ${loadAverage().join(' ')})`);
      try {
        await steps[s]();
      } catch (err) {
        // One scenario failing must not cost the others' figures.
        results.errors[s] = (err as Error).stack ?? String(err);
        log(`  ✗ ${s} failed: ${(err as Error).message}`);
      }
      log(`  (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    }
    results.diagnostics = { ...results.diagnostics, ...ctx.diagnostics };
  } finally {
    await cleanup();
  }

  rmSync(infoLogFile, { force: true });
  results.machine.load_avg_end = loadAverage();
  results.machine.total_seconds = Math.round((performance.now() - started) / 1000);
  // What the relays logged at warn and above, counted by level (lost leases, a slow database…).
  let relayLines: string[] = [];
  try {
    relayLines = readFileSync(relayLogFile, 'utf8')
      .split('\n')
      .filter((l) => l.trim() !== '');
  } catch {
    // No file: nothing was logged.
  }
  const relayLevels: Record<string, number> = {};
  for (const l of relayLines) {
    const level = /"level":"(\w+)"/.exec(l)?.[1] ?? '?';
    relayLevels[level] = (relayLevels[level] ?? 0) + 1;
  }
  if (relayLines.length === 0) rmSync(relayLogFile, { force: true });
  else results.diagnostics.relay_log = { file: relayLogFile, lines: relayLevels };
  const out = resolve(args.out);
  writeFileSync(out, `${JSON.stringify(resultsJson(results), null, 2)}\n`);
  log(`\n${table(results)}\n`);
  log(
    `load average: start ${results.machine.load_avg_start.join(' ')}, end ${results.machine.load_avg_end.join(' ')}; ${results.machine.total_seconds} s in all`,
  );
  if (relayLines.length > 0) {
    log(
      `The relays logged ${Object.entries(relayLevels)
        .map(([l, n]) => `${n} ${l}`)
        .join(', ')}: ${relayLogFile}`,
    );
  }
  log(`Results written to ${out}`);
  return Object.keys(results.errors).length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
