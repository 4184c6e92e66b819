// pause: stop every relay from claiming users until resume; changes are still captured meanwhile.
import type { Command } from 'commander';
import { setPaused } from '../../ops/pause.ts';
import { settingsFrom, withDatabase, type GlobalFlags } from '../context.ts';
import { describePause } from '../pause-lines.ts';

export function register(program: Command): void {
  program
    .command('pause')
    .description('stop every relay from claiming users (changes are still captured) until resume')
    .action(async (_opts: unknown, cmd: Command) => {
      const settings = settingsFrom(cmd.optsWithGlobals<GlobalFlags>());
      const result = await withDatabase(settings, (pool) => setPaused(pool, true));
      process.stdout.write(`${describePause(result)}\n`);
    });
}
