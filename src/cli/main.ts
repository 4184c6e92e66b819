import { Command } from 'commander';
import { VERSION } from '../version.ts';
import { registerDev } from './dev.ts';
import { registerInstall } from './install.ts';
import { registerPause } from './pause.ts';
import { registerReceive } from './receive.ts';
import { registerRelay } from './relay.ts';
import { registerSyncCommands } from './sync-commands.ts';
import { reportError } from './run.ts';
import { registerServe } from './serve.ts';
import { registerStatus } from './status.ts';
import { registerTailLog } from './tail-log.ts';

export function buildProgram(): Command {
  const program = new Command('suekk-sync')
    .description('Keeps a backend\'s copy of users in step with an auth database.')
    .version(VERSION)
    .option('--config <file>', 'config file (default ./suekk-sync.json when it exists)')
    .option('--database-url <url>', 'the auth database (default $DATABASE_URL)')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  registerInstall(program);
  registerRelay(program);
  registerSyncCommands(program);
  registerPause(program);
  registerTailLog(program);
  registerStatus(program);
  registerServe(program);
  registerReceive(program);
  registerDev(program);
  return program;
}

try {
  await buildProgram().parseAsync(process.argv);
} catch (err) {
  // Exit now: a half-started component must not keep a failed command alive.
  process.exit(reportError(err));
}
