/**
 * trigger_overhead: what capture costs a writer. Four clients run single-row, payload-changing
 * UPDATEs (each its own transaction, synchronous_commit on, so every commit waits for its WAL
 * flush) against three otherwise identical databases:
 *   without      the users table alone;
 *   with         `install` (trigger + NOTIFY);
 *   no_notify    `install --no-notify` (trigger, no NOTIFY: no commit-time notify lock);
 *   looked       `install`, with a stand-in for a relay that keeps up: every millisecond it
 *                answers the doorbell, so a writer may ring after every look: the most a real
 *                relay makes writers notify.
 * No relay delivers: this is the writer's cost alone (the outbox grows by a few thousand rows).
 * With no relay looking, the doorbell stays rung after the first write, as it does while every
 * relay is busy, so `with` measures the trigger under load and `looked` a keeping-up relay's worst.
 * The stand-in's own statements run on the same database, as a relay's would.
 *
 * Short rounds alternate between the three, the order rotating each cycle, so machine noise
 * (other tests, checkpoints) falls on all three alike; tps is the mean over each one's rounds.
 *
 * pgbench drives the clients when it is installed (its per-transaction client cost is tiny, so
 * the ratio is not diluted by the client); otherwise four node-postgres clients do.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { BenchContext } from '../context.ts';
import { analyze, seedUsers, type TemplateKind } from '../db.ts';
import { mean, round } from '../stats.ts';

type Config = 'without' | 'with' | 'no_notify' | 'looked';
const TEMPLATES: Record<Config, TemplateKind> = {
  without: 'users',
  with: 'suekk',
  no_notify: 'suekk_no_notify',
  looked: 'suekk',
};

export interface TriggerOverheadResult {
  tps_without: number;
  tps_with: number;
  ratio: number;
  tps_with_no_notify: number;
  ratio_no_notify: number;
  tps_with_relay_looking: number;
  ratio_relay_looking: number;
  /** Notifications the `looked` rounds sent per second (how often a writer rang). */
  rings_per_s_relay_looking: number;
  driver: 'pgbench' | 'node-postgres';
  rounds: Record<Config, number[]>;
}

function hasPgbench(): Promise<boolean> {
  return new Promise((resolve) => execFile('pgbench', ['--version'], (err) => resolve(!err)));
}

/** One pgbench round; tps as pgbench reports it (without connection time). */
function pgbenchRound(
  ctx: BenchContext,
  url: string,
  script: string,
  seconds: number,
  clients: number,
): Promise<number> {
  const u = new URL(url);
  const args = [
    '-n', // no vacuum of pgbench's own tables (there are none)
    '-c',
    String(clients),
    '-j',
    String(Math.min(clients, 2)),
    '-T',
    String(seconds),
    '-M',
    'prepared',
    '-f',
    script,
    '-h',
    u.hostname,
    '-p',
    u.port || '5432',
    '-U',
    decodeURIComponent(u.username || 'postgres'),
    u.pathname.slice(1),
  ];
  return new Promise((resolve, reject) => {
    const child = spawn('pgbench', args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...(u.password ? { PGPASSWORD: decodeURIComponent(u.password) } : {}) },
    });
    ctx.track(child);
    ctx.extraPids.cli = [child.pid!];
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      ctx.extraPids.cli = [];
      const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(out)?.[1];
      if (code !== 0 || tps === undefined) reject(new Error(`pgbench failed (${code}): ${out.slice(-500)}`));
      else resolve(Number(tps));
    });
  });
}

/** The fallback: `clients` connections, each updating back to back for `seconds`. */
async function nodeRound(
  url: string,
  seconds: number,
  clients: number,
  users: number,
  text = 'update users set first_name = $1, updated_at = now() where lower(username) = $2',
): Promise<number> {
  const conns = await Promise.all(
    Array.from({ length: clients }, async () => {
      const c = new pg.Client({ connectionString: url, application_name: 'suekk-bench trigger' });
      await c.connect();
      return c;
    }),
  );
  let done = 0;
  const end = performance.now() + seconds * 1000;
  const t0 = performance.now();
  await Promise.all(
    conns.map(async (c) => {
      while (performance.now() < end) {
        const n = 1 + Math.floor(Math.random() * users);
        await c.query({
          name: 'bench_trigger_update',
          text,
          values: [`p${n}_${Math.floor(Math.random() * 1e9)}`, `u${n}`],
        });
        done++;
      }
    }),
  );
  const tps = (done * 1000) / (performance.now() - t0);
  await Promise.all(conns.map((c) => c.end()));
  return tps;
}

/**
 * About once a millisecond, answers the doorbell as a relay's claim does, so the next captured
 * write rings; counts the writers' rings (notifications) meanwhile.
 */
async function startLooker(url: string): Promise<{ stop(): Promise<{ rings: number; seconds: number }> }> {
  const answering = new pg.Client({ connectionString: url, application_name: 'suekk-bench looker' });
  const listening = new pg.Client({ connectionString: url, application_name: 'suekk-bench listener' });
  await Promise.all([answering.connect(), listening.connect()]);
  let rings = 0;
  listening.on('notification', () => rings++);
  await listening.query('listen suekk_sync');
  const started = performance.now();
  let stopping = false;
  const loop = (async () => {
    while (!stopping) {
      await answering.query("select setval('suekk_sync.wake_pending', 0)");
      await new Promise((r) => setTimeout(r, 1));
    }
  })();
  return {
    async stop() {
      stopping = true;
      await loop;
      const seconds = (performance.now() - started) / 1000;
      await Promise.all([answering.end(), listening.end()]);
      return { rings, seconds };
    },
  };
}

export interface LoginOverheadResult {
  tps_without: number;
  tps_with: number;
  /** A login (last_login_at only) with capture installed, against without: it captures nothing. */
  ratio_login: number;
  driver: 'pgbench' | 'node-postgres';
  rounds: { without: number[]; with: number[] };
}

/**
 * login: the writes an auth service makes most, `update users set last_login_at = now()`, which
 * change nothing capture reads. Pairs of rounds alternate between a database without capture and
 * one with `install`, the order swapping each pair.
 */
export async function runLogin(ctx: BenchContext): Promise<LoginOverheadResult> {
  const { clients, users, roundSeconds, cycles } = ctx.sizes.trigger;
  const sides = ['without', 'with'] as const;
  const dbs = {} as Record<(typeof sides)[number], { name: string; url: string }>;
  const dir = mkdtempSync(join(tmpdir(), 'suekk-bench-'));
  try {
    for (const side of sides) {
      dbs[side] = await ctx.dbs.clone(side === 'with' ? 'suekk' : 'users', `login_${side}`);
      await seedUsers(dbs[side].url, 1, users, false);
      await analyze(dbs[side].url, ['users']);
    }
    const script = join(dir, 'login.sql');
    writeFileSync(
      script,
      `\\set n random(1, ${users})\nupdate users set last_login_at = now() where lower(username) = 'u' || :n;\n`,
    );
    const driver = (await hasPgbench()) ? 'pgbench' : 'node-postgres';
    const round1 = (side: (typeof sides)[number]) =>
      driver === 'pgbench'
        ? pgbenchRound(ctx, dbs[side].url, script, roundSeconds, clients)
        : nodeRound(
            dbs[side].url,
            roundSeconds,
            clients,
            users,
            'update users set last_login_at = now() where lower(username) = $2 and $1::text is not null',
          );
    for (const side of sides) await round1(side);
    const rounds = { without: [] as number[], with: [] as number[] };
    await ctx.measureCpu('login', async () => {
      for (let cycle = 0; cycle < cycles; cycle++) {
        const order = cycle % 2 === 0 ? sides : ([...sides].reverse() as unknown as typeof sides);
        for (const side of order) rounds[side].push(await round1(side));
      }
    });
    const result: LoginOverheadResult = {
      tps_without: round(mean(rounds.without)),
      tps_with: round(mean(rounds.with)),
      ratio_login: round(mean(rounds.with) / mean(rounds.without), 3),
      driver,
      rounds: { without: rounds.without.map((r) => round(r)), with: rounds.with.map((r) => round(r)) },
    };
    ctx.log(
      `  login (${driver}, ${clients} clients): without ${result.tps_without} tps, with capture ${result.tps_with} tps (×${result.ratio_login})`,
    );
    return result;
  } finally {
    rmSync(dir, { recursive: true, force: true });
    for (const side of sides) if (dbs[side]) await ctx.dbs.drop(dbs[side].name);
  }
}

export async function runTriggerOverhead(ctx: BenchContext): Promise<TriggerOverheadResult> {
  const { clients, users, roundSeconds, cycles } = ctx.sizes.trigger;
  const configs: Config[] = ['without', 'with', 'no_notify', 'looked'];
  const dbs = {} as Record<Config, { name: string; url: string }>;
  const dir = mkdtempSync(join(tmpdir(), 'suekk-bench-'));
  try {
    for (const c of configs) {
      dbs[c] = await ctx.dbs.clone(TEMPLATES[c], `trigger_${c}`);
      await seedUsers(dbs[c].url, 1, users, false);
      await analyze(dbs[c].url, ['users']);
    }
    const script = join(dir, 'update.sql');
    // A payload-changing update of a random user: every transaction is one captured event.
    writeFileSync(
      script,
      `\\set n random(1, ${users})
update users set first_name = 'p' || :n || '_' || floor(random() * 1000000000)::bigint, updated_at = now() where lower(username) = 'u' || :n;
`,
    );
    const driver = (await hasPgbench()) ? 'pgbench' : 'node-postgres';
    let rings = 0;
    let looking = 0;
    const round1 = async (c: Config) => {
      const looker = c === 'looked' ? await startLooker(dbs[c].url) : undefined;
      try {
        return driver === 'pgbench'
          ? await pgbenchRound(ctx, dbs[c].url, script, roundSeconds, clients)
          : await nodeRound(dbs[c].url, roundSeconds, clients, users);
      } finally {
        if (looker) {
          const seen = await looker.stop();
          rings += seen.rings;
          looking += seen.seconds;
        }
      }
    };

    // A short warm-up of each: caches, prepared statements, the first WAL segments.
    for (const c of configs) await round1(c);
    rings = 0;
    looking = 0;
    const rounds: Record<Config, number[]> = { without: [], with: [], no_notify: [], looked: [] };
    await ctx.measureCpu('trigger_overhead', async () => {
      for (let cycle = 0; cycle < cycles; cycle++) {
        const order = configs.map((_, i) => configs[(i + cycle) % configs.length]!);
        for (const c of order) rounds[c].push(await round1(c));
      }
    });
    const tps = (c: Config) => mean(rounds[c]);
    const result: TriggerOverheadResult = {
      tps_without: round(tps('without')),
      tps_with: round(tps('with')),
      ratio: round(tps('with') / tps('without'), 3),
      tps_with_no_notify: round(tps('no_notify')),
      ratio_no_notify: round(tps('no_notify') / tps('without'), 3),
      tps_with_relay_looking: round(tps('looked')),
      ratio_relay_looking: round(tps('looked') / tps('without'), 3),
      rings_per_s_relay_looking: round(rings / Math.max(looking, 1e-9)),
      driver,
      rounds: {
        without: rounds.without.map((r) => round(r)),
        with: rounds.with.map((r) => round(r)),
        no_notify: rounds.no_notify.map((r) => round(r)),
        looked: rounds.looked.map((r) => round(r)),
      },
    };
    ctx.log(
      `  trigger overhead (${driver}, ${clients} clients): without ${result.tps_without} tps, with ${result.tps_with} tps (×${result.ratio}), --no-notify ${result.tps_with_no_notify} tps (×${result.ratio_no_notify}), relay looking every ms ${result.tps_with_relay_looking} tps (×${result.ratio_relay_looking}, ${result.rings_per_s_relay_looking} rings/s)`,
    );
    return result;
  } finally {
    rmSync(dir, { recursive: true, force: true });
    for (const c of configs) if (dbs[c]) await ctx.dbs.drop(dbs[c].name);
  }
}
