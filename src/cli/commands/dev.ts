// dev: everything on one machine (PostgreSQL, the API, a relay and a receiver) until Ctrl-C.
import type { Command } from 'commander';
import { startDev } from '../../dev/dev.ts';
import { stopSignals } from '../../signals.ts';
import type { GlobalFlags } from '../context.ts';
import { intOption } from '../options.ts';
import { debugLevel } from '../run.ts';

interface DevFlags {
  apiPort: number;
  receiverPort: number;
}

export function register(program: Command): void {
  program
    .command('dev')
    .description(
      'everything on one machine: an embedded PostgreSQL with the users table, the API, a relay and a receiver printing each webhook',
    )
    .option('--api-port <port>', 'port of the register/profile API (0 picks a free one)', intOption(0, 65535), 8088)
    .option('--receiver-port <port>', 'port of the webhook receiver (0 picks a free one)', intOption(0, 65535), 8080)
    .option('--database-url <url>', 'use this PostgreSQL instead of the embedded one (DATABASE_URL is ignored)')
    .action(async (opts: DevFlags, cmd: Command) => {
      const { apiPort, receiverPort } = opts;
      const { databaseUrl } = cmd.optsWithGlobals<GlobalFlags>();

      // Handlers go in before anything starts: a Ctrl-C while PostgreSQL starts must still stop it.
      const stop = stopSignals({
        onSecond: (signal) => {
          // A second Ctrl-C for a stop that hangs. The embedded server is not in our process group;
          // the exit hook of embedded.ts asks it to shut down as this process goes.
          process.stderr.write(`suekk-sync: ${signal} again, exiting without waiting.\n`);
          process.exit(1);
        },
      });
      try {
        const session = await startDev({
          cwd: process.cwd(),
          apiPort,
          receiverPort,
          databaseUrl,
          env: process.env,
          // Only debugging dev itself warrants the relay's and the API's routine logs.
          logLevel: debugLevel() ?? 'warn',
          signal: stop.signal,
          // `npm run dev` in a clone, where the command is not on the PATH; -s keeps npm's banner out of
          // the output.
          command: process.env.npm_lifecycle_event === 'dev' ? 'npm run -s suekk-sync --' : 'suekk-sync',
        }).catch((err: unknown) => {
          // Interrupted while starting: startDev has stopped what it started, which is all we asked.
          if (stop.signal.aborted) return undefined;
          throw err;
        });
        if (session !== undefined) {
          await stop.received;
          const last = session.embedded !== undefined ? ', then PostgreSQL' : ' (your database keeps running)';
          process.stdout.write(`\nStopping the API, the relay, the receiver${last}…\n`);
          await session.stop();
        }
        process.stdout.write('Stopped.\n');
      } finally {
        stop.dispose();
      }
    });
}
