/**
 * Where the CPU went during a scenario, from /proc: the bench process (the relay, the ceiling's
 * client, graphile-worker: whichever sender runs), the receiver process, Postgres backends serving
 * the bench's databases, Postgres' background processes (WAL writer, checkpointer, autovacuum…,
 * shared with anyone else on this server), other processes, and the machine as a whole. On a
 * 2-core machine 200 % is everything; a group near 100 % is a single-threaded process saturated.
 *
 * Linux only; elsewhere the figures are simply absent.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type pg from 'pg';

export type CpuGroup = 'bench' | 'receiver' | 'cli' | 'pg_bench' | 'pg_background' | 'pg_other';

export interface CpuReport {
  /** Percent of one core, per group, over the scenario's wall time. */
  percent: Partial<Record<CpuGroup, number>>;
  /** Busy share of all cores (100 = every core busy), whoever used them. */
  machineBusyPercent: number;
  /** Busy percent (of one core) not the bench's own (pg_other included): other engineers' tests, say. */
  othersPercent: number;
  loadAverage: [number, number, number];
  seconds: number;
}

let clockTicks: number | undefined;
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** utime+stime and start time (both in clock ticks) of a process, or undefined when it is gone. */
function procTimes(pid: number): { cpu: number; start: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { cpu: Number(f[11]) + Number(f[12]), start: Number(f[19]) };
  } catch {
    return undefined;
  }
}

function machineTicks(): { busy: number; total: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const total = v.reduce((a, b) => a + b, 0);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    return { busy: total - idle, total };
  } catch {
    return undefined;
  }
}

function uptimeTicks(): number {
  return Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * ticksPerSecond();
}

export function loadAverage(): [number, number, number] {
  try {
    const [a, b, c] = readFileSync('/proc/loadavg', 'utf8').split(' ').map(Number);
    return [a ?? 0, b ?? 0, c ?? 0];
  } catch {
    return [0, 0, 0];
  }
}

interface Tracked {
  group: CpuGroup;
  base: number;
  last: number;
}

export class CpuSampler {
  private readonly tracked = new Map<number, Tracked>();
  private timer: NodeJS.Timeout | undefined;
  private startedAt = 0;
  private startUptime = 0;
  private machineStart: { busy: number; total: number } | undefined;
  private sampling: Promise<void> | undefined;
  private readonly enabled = process.platform === 'linux';

  /**
   * @param admin a connection used to read pg_stat_activity (which backend serves which database)
   * @param databasePrefix the bench's database names start with this
   * @param fixed the processes the bench knows by pid (itself, the receiver, a CLI child)
   */
  constructor(
    private readonly admin: pg.Client,
    private readonly databasePrefix: string,
    private readonly fixed: () => Partial<Record<CpuGroup, number[]>>,
  ) {}

  start(): void {
    if (!this.enabled) return;
    this.tracked.clear();
    this.startedAt = performance.now();
    this.startUptime = uptimeTicks();
    this.machineStart = machineTicks();
    this.sampling = this.sample();
    this.timer = setInterval(() => {
      this.sampling = (this.sampling ?? Promise.resolve()).then(() => this.sample());
    }, 500);
  }

  private async sample(): Promise<void> {
    const pids: [number, CpuGroup][] = [];
    for (const [group, list] of Object.entries(this.fixed()) as [CpuGroup, number[]][]) {
      for (const pid of list) pids.push([pid, group]);
    }
    try {
      const { rows } = await this.admin.query<{ pid: number; datname: string | null; backend_type: string }>(
        'select pid, datname, backend_type from pg_stat_activity',
      );
      for (const r of rows) {
        const group: CpuGroup =
          r.backend_type !== 'client backend'
            ? 'pg_background'
            : r.datname?.startsWith(this.databasePrefix)
              ? 'pg_bench'
              : 'pg_other';
        pids.push([r.pid, group]);
      }
    } catch {
      // A missed sample only loses precision.
    }
    for (const [pid, group] of pids) {
      const t = procTimes(pid);
      if (!t) continue;
      const known = this.tracked.get(pid);
      if (known) {
        known.last = t.cpu;
      } else {
        // A process born during the scenario counts from zero; one already running, from now.
        const bornDuring = t.start >= this.startUptime;
        this.tracked.set(pid, { group, base: bornDuring ? 0 : t.cpu, last: t.cpu });
      }
    }
  }

  async stop(): Promise<CpuReport | undefined> {
    if (!this.enabled) return undefined;
    clearInterval(this.timer);
    await this.sampling;
    await this.sample();
    const seconds = (performance.now() - this.startedAt) / 1000;
    const hz = ticksPerSecond();
    const percent: Partial<Record<CpuGroup, number>> = {};
    let accounted = 0;
    for (const t of this.tracked.values()) {
      const p = ((t.last - t.base) / hz / seconds) * 100;
      percent[t.group] = (percent[t.group] ?? 0) + p;
      if (t.group !== 'pg_other') accounted += p;
    }
    for (const k of Object.keys(percent) as CpuGroup[]) percent[k] = Math.round(percent[k]!);
    const end = machineTicks();
    let machineBusyPercent = 0;
    let othersPercent = 0;
    if (this.machineStart && end && end.total > this.machineStart.total) {
      const busy = (end.busy - this.machineStart.busy) / (end.total - this.machineStart.total);
      machineBusyPercent = Math.round(busy * 100);
      const cores = (end.total - this.machineStart.total) / hz / seconds;
      othersPercent = Math.max(0, Math.round(busy * cores * 100 - accounted));
    }
    return {
      percent,
      machineBusyPercent,
      othersPercent,
      loadAverage: loadAverage(),
      seconds: Math.round(seconds * 10) / 10,
    };
  }
}

/** Peak resident memory (VmHWM) of a process in MB, or undefined once it has exited. */
export function peakRssMb(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
    return kb === undefined ? undefined : Number(kb) / 1024;
  } catch {
    return undefined;
  }
}

/** One line for the console: `bench 95% · receiver 40% · pg 60% (+bg 5%) · others 30% · load 2.1`. */
export function describeCpu(r: CpuReport | undefined): string {
  if (!r) return '';
  const p = r.percent;
  const parts = [
    `bench ${p.bench ?? 0}%`,
    `receiver ${p.receiver ?? 0}%`,
    `pg ${p.pg_bench ?? 0}%`,
    `pg-bg ${p.pg_background ?? 0}%`,
  ];
  if (p.cli !== undefined) parts.push(`cli ${p.cli}%`);
  parts.push(
    `others ${r.othersPercent}%`,
    `machine busy ${r.machineBusyPercent}%`,
    `load ${r.loadAverage[0].toFixed(2)}`,
  );
  return parts.join(' · ');
}

/** CPU time per unit of work (µs), per group: less sensitive to a loaded machine than a rate. */
export function cpuMicrosPer(r: CpuReport | undefined, units: number): Partial<Record<CpuGroup, number>> | undefined {
  if (!r || units <= 0) return undefined;
  const out: Partial<Record<CpuGroup, number>> = {};
  for (const [g, p] of Object.entries(r.percent) as [CpuGroup, number][]) {
    if (g === 'pg_other') continue;
    out[g] = Math.round(((p / 100) * r.seconds * 1e6) / units);
  }
  return out;
}
