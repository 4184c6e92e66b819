// uninstall: stop capturing changes, keeping the events unless told to drop them.
import type { Command } from 'commander';
import { uninstall } from '../../capture/install.ts';
import { settingsFrom, withDatabase, type GlobalFlags } from '../context.ts';

export function register(program: Command): void {
  program
    .command('uninstall')
    .description('remove the capture triggers and functions (and with --drop-events the whole schema)')
    .option('--drop-events', 'also drop the suekk_sync schema with every event')
    .option('--force', 'uninstall even while events are undelivered')
    .option('--dry-run', 'print the statements and change nothing')
    .action(async (opts: { dropEvents?: boolean; force?: boolean; dryRun?: boolean }, cmd: Command) => {
      const settings = settingsFrom(cmd.optsWithGlobals<GlobalFlags>());
      const result = await withDatabase(settings, (pool) => uninstall(pool, opts), { schema: false });
      if (!result.installed) {
        process.stdout.write('suekk-sync is not installed in this database; nothing to do.\n');
        return;
      }
      if (opts.dryRun) {
        process.stdout.write('-- suekk-sync uninstall --dry-run: nothing was changed.\n');
        if (result.refusedWithoutForce)
          process.stdout.write(`-- Without --force this uninstall is refused: ${result.refusedWithoutForce}\n`);
        else if (result.undelivered > 0)
          process.stdout.write(`-- ${undeliveredFate(result.undelivered, opts.dropEvents, true)}\n`);
        process.stdout.write('\n');
        for (const sql of result.statements) process.stdout.write(`${sql};\n`);
        return;
      }
      process.stdout.write(
        opts.dropEvents
          ? 'Uninstalled suekk-sync and dropped the suekk_sync schema with its events.\n'
          : 'Uninstalled the capture triggers and functions; changes to the users table are no longer captured, and the events are kept (use --drop-events to remove them).\n',
      );
      if (result.undelivered > 0) process.stdout.write(`${undeliveredFate(result.undelivered, opts.dropEvents)}\n`);
    });
}

function undeliveredFate(n: number, dropped: boolean | undefined, dryRun = false): string {
  const events = `${n} undelivered event${n === 1 ? '' : 's'}`;
  const them = n === 1 ? 'it' : 'them';
  if (dryRun) return dropped ? `Would discard ${events}.` : `Would keep ${events}, for a running relay to deliver.`;
  return dropped
    ? `Discarded ${events}: the backend never got ${them}; after a new install, \`suekk-sync resync --all\` sends every user's current state.`
    : `Kept ${events}: a running relay still delivers ${them}.`;
}
