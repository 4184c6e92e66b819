// resume: let the relays deliver again after pause.
import type { Command } from 'commander';
import { setPaused } from '../../ops/pause.ts';
import { settingsFrom, withDatabase, type GlobalFlags } from '../context.ts';
import { describePause } from '../pause-lines.ts';

export function register(program: Command): void {
  program
    .command('resume')
    .description('let relays deliver again after pause')
    .action(async (_opts: unknown, cmd: Command) => {
      const settings = settingsFrom(cmd.optsWithGlobals<GlobalFlags>());
      const result = await withDatabase(settings, (pool) => setPaused(pool, false));
      process.stdout.write(`${describePause(result)}\n`);
    });
}
