import type { Command } from 'commander';
import { install, uninstall, type InstallResult } from '../capture/install.ts';
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
      if (result.captureStarted) process.stdout.write(`${describeCaptureStart(result.table, result.captureStarted)}\n`);
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
        process.stdout.write('-- suekk-sync uninstall --dry-run: nothing was changed.\n');
        if (result.refusedWithoutForce) process.stdout.write(`-- Without --force this uninstall is refused: ${result.refusedWithoutForce}\n`);
        else if (result.undelivered > 0) process.stdout.write(`-- ${undeliveredFate(result.undelivered, opts.dropEvents, true)}\n`);
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

function users(n: number): string {
  return `${n} user${n === 1 ? '' : 's'}`;
}

/** Capture sends changes from its install on: what was there before, or changed while it was off, is not sent. */
function describeCaptureStart(table: string, started: NonNullable<InstallResult['captureStarted']>): string {
  const n = started.existingRows;
  if (started.kind === 'reinstalled') {
    return `Warning: capture was off since \`suekk-sync uninstall\`, so changes made to ${table} meanwhile were not captured; \`suekk-sync resync --all\` sends the current state of its ${users(n)}.`;
  }
  if (n === 0) return `${table} has no users yet; every change from now on is sent.`;
  return `The ${users(n)} already in ${table} ${n === 1 ? 'was' : 'were'} not sent: capture sends changes made from now on. Send ${n === 1 ? 'it' : 'them'} with \`suekk-sync resync --all\`.`;
}

function undeliveredFate(n: number, dropped: boolean | undefined, dryRun = false): string {
  const events = `${n} undelivered event${n === 1 ? '' : 's'}`;
  const them = n === 1 ? 'it' : 'them';
  if (dryRun) return dropped ? `Would discard ${events}.` : `Would keep ${events}, for a running relay to deliver.`;
  return dropped
    ? `Discarded ${events}: the backend never got ${them}; after a new install, \`suekk-sync resync --all\` sends every user's current state.`
    : `Kept ${events}: a running relay still delivers ${them}.`;
}
