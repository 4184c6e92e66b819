// install: create the suekk_sync schema and the capture triggers, or bring them up to date.
import type { Command } from 'commander';
import { install, type InstallResult } from '../../capture/install.ts';
import { DEFAULT_SOURCE } from '../../config.ts';
import { settingsFrom, withDatabase, type GlobalFlags } from '../context.ts';
import { withDefault } from '../options.ts';

export function register(program: Command): void {
  program
    .command('install')
    .description('create the suekk_sync schema, the payload function and the capture triggers')
    .option(
      '--table <table>',
      withDefault('the users table', `source.table of the config file, else ${DEFAULT_SOURCE.table}`),
    )
    .option('--no-notify', 'leave NOTIFY out of the trigger (relays then rely on polling)')
    .option('--fire-on-replica', 'also capture changes applied with session_replication_role = replica')
    .option('--dry-run', 'print every statement install would run, and change nothing')
    .option('--force', 'change the schema even while relays of another version are running')
    .action(
      async (
        opts: { table?: string; notify: boolean; fireOnReplica?: boolean; dryRun?: boolean; force?: boolean },
        cmd: Command,
      ) => {
        const settings = settingsFrom(cmd.optsWithGlobals<GlobalFlags>(), { table: opts.table });
        const result = await withDatabase(
          settings,
          (pool) =>
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
          process.stdout.write(
            `-- Schema version ${result.fromVersion} → ${result.toVersion}, capture on ${result.table}.\n\n`,
          );
          for (const sql of result.statements) process.stdout.write(`${sql.replace(/;\s*$/, '')};\n\n`);
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
        if (result.captureStarted)
          process.stdout.write(`${describeCaptureStart(result.table, result.captureStarted)}\n`);
      },
    );
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
