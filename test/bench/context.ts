/** What every scenario gets: the databases, the receiver, the sizes, CPU accounting and a log. */
import type { ChildProcess } from 'node:child_process';
import type pg from 'pg';
import type { BenchSizes } from './config.ts';
import { CpuSampler, describeCpu, type CpuGroup, type CpuReport } from './cpu.ts';
import type { BenchDatabases } from './db.ts';
import type { Profiler } from './profiler.ts';
import type { Receiver } from './receiver.ts';

export interface BenchContext {
  dbs: BenchDatabases;
  receiver: Receiver;
  sizes: BenchSizes;
  quick: boolean;
  /** An admin connection kept for the run (pg_stat_activity for the CPU sampler). */
  admin: pg.Client;
  /** Extra processes to account for (the resync CLI while it runs). */
  extraPids: Partial<Record<CpuGroup, number[]>>;
  log(line: string): void;
  /** A child process the bench started: killed at cleanup if it is still running. */
  track(child: ChildProcess): void;
  /** CPU per group while `work` runs, logged under `label` and kept for the JSON's diagnostics. */
  measureCpu<T>(label: string, work: () => Promise<T>): Promise<{ value: T; cpu: CpuReport | undefined }>;
  diagnostics: Record<string, unknown>;
  /** Where the relays' own log lines (level warn and above) go: a file, counted at the end. */
  relayLog: NodeJS.WritableStream;
  /** Where a relay logging every delivery at info writes (a file, removed at the end). */
  infoLogFile: string;
  /** --relay-db-options: libpq `options` for the relay's connections (an experiment knob). */
  relayDbOptions?: string;
  /** Set by --profile: the measured drain runs are profiled. */
  profiler?: Profiler;
}

export function createContext(base: Omit<BenchContext, 'measureCpu' | 'extraPids' | 'diagnostics'>): BenchContext {
  const ctx: BenchContext = {
    ...base,
    extraPids: {},
    diagnostics: {},
    async measureCpu(label, work) {
      const sampler = new CpuSampler(ctx.admin, ctx.dbs.prefix, () => ({
        bench: [process.pid],
        receiver: [ctx.receiver.pid],
        ...ctx.extraPids,
      }));
      sampler.start();
      const finish = async () => {
        const cpu = await sampler.stop();
        if (cpu) {
          ctx.log(`    cpu ${label}: ${describeCpu(cpu)}`);
          ctx.diagnostics[`cpu.${label}`] = cpu;
        }
        return cpu;
      };
      try {
        const value = await work();
        return { value, cpu: await finish() };
      } catch (err) {
        await finish();
        throw err;
      }
    },
  };
  return ctx;
}
