import type { Command } from 'commander';
import { install, uninstall } from '../capture/install.ts';
import { settingsFrom, withDatabase, type GlobalFlags } from './context.ts';

export function registerInstall(program: Command): void {
  program
    .command('install')
    .description('create the suekk_sync schema, the payload function and the capture triggers')
    .option('--table <table>', 'the users table (overrides source.table)')
    .option('--no-notify', 'leave NOTIFY out of the trigger (relays then rely on polling)')
    .option('--fire-on-replica', 'also capture changes applied with session_replication_role = replica')
    .option('--dry-run', 'print every statement install would run, and change nothing')
    .option('--force', 'change the schema even while relays of another version are running')
    .action(async (opts: { table?: string; notify: boolean; fireOnReplica?: boolean; dryRun?: boolean; force?: boolean }, cmd: Command) => {
      const settings = settingsFrom(cmd.optsWithGlobals<GlobalFlags>(), { table: opts.table });
      const result = await withDatabase(settings, (pool) =>
        install(pool, {
          source: settings.source,
          notify: opts.notify,
          fireOnReplica: opts.fireOnReplica ?? false,
          dryRun: opts.dryRun ?? false,
          force: opts.force ?? false,
        }),
        { schema: false },
      );
      if (opts.dryRun) {
        process.stdout.write(`-- suekk-sync install --dry-run: nothing was changed.\n`);
        process.stdout.write(`-- Schema version ${result.fromVersion} → ${result.toVersion}, capture on ${result.table}.\n\n`);
        for (const sql of result.statements) process.stdout.write(`${sql.replace(/;\s*$/, "")};\n\n`);
        return;
      }
      if (result.movedFrom) process.stdout.write(`Capture moved from ${result.movedFrom} to ${result.table}.\n`);
      const schema =
        result.fromVersion === result.toVersion
          ? `schema version ${result.toVersion} already current`
          : `schema version ${result.fromVersion} → ${result.toVersion}`;
      process.stdout.write(
        `Installed suekk-sync on ${result.table} (${schema}; NOTIFY ${result.notify ? 'on' : 'off'}).\n`,
      );
    });

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
        for (const sql of result.statements) process.stdout.write(`${sql};\n`);
        return;
      }
      process.stdout.write(
        opts.dropEvents
          ? 'Uninstalled suekk-sync and dropped the suekk_sync schema with its events.\n'
          : 'Uninstalled the capture triggers and functions; the events are kept (use --drop-events to remove them).\n',
      );
    });
}
