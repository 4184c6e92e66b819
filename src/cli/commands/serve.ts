// serve: the register/profile HTTP API, until a signal stops it.
import type { Command } from 'commander';
import { pino } from 'pino';
import { createLogger } from '../../logger.ts';
import { createApiServer } from '../../api/server.ts';
import { MIN_JWT_SECRET_BYTES } from '../../api/tokens.ts';
import { requireDatabaseUrl, settingSource } from '../../config.ts';
import { checkConnection, createPool } from '../../db/pool.ts';
import { errorMessage, UsageError } from '../../errors.ts';
import { stopSignals } from '../../signals.ts';
import { settingsFrom, type GlobalFlags } from '../context.ts';
import { intOption } from '../options.ts';
import { whenReaderGoes } from '../run.ts';

interface ServeFlags {
  port: number;
  host: string;
  registerLimit: number;
  loginLimit: number;
}

export function register(program: Command): void {
  program
    .command('serve')
    .description('run the register/profile HTTP API (it writes users; the trigger and relay sync them)')
    .option('--port <port>', 'port to listen on (0 picks a free one)', intOption(0, 65535), 8088)
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--register-limit <n>', 'registrations per client address per minute', intOption(1), 5)
    .option('--login-limit <n>', 'logins per client address per minute', intOption(1), 10)
    .action(async (opts: ServeFlags, cmd: Command) => {
      const settings = settingsFrom(cmd.optsWithGlobals<GlobalFlags>());
      const port = opts.port;
      const rateLimits = { register: opts.registerLimit, login: opts.loginLimit };
      const jwtSecret = settings.jwtSecret;
      if (jwtSecret === undefined) {
        throw new UsageError(
          'JWT_SECRET is not set; set it to the secret your backend verifies tokens with (for a new one: openssl rand -base64 32).',
        );
      }
      const secretBytes = Buffer.byteLength(jwtSecret, 'utf8');
      if (secretBytes < MIN_JWT_SECRET_BYTES) {
        throw new UsageError(
          `${settingSource(settings, 'jwtSecret')} is ${secretBytes} bytes, too short to keep tokens from being forged; use at least ${MIN_JWT_SECRET_BYTES} (for a new one: openssl rand -base64 32).`,
        );
      }
      const databaseUrl = requireDatabaseUrl(settings);
      const logs = pino.destination(1);
      const logger = createLogger(settings.logLevel, logs);

      const pool = createPool(databaseUrl, {
        // The writer's application_name is recorded with every event, so tail-log shows the API.
        applicationName: 'suekk-sync api',
        onIdleError: (err) => logger.warn(`database connection lost: ${errorMessage(err)}`),
      });
      // The first signal stops the API; a second one, while it shuts down, takes Node's default action
      // and ends a stop that hangs. A reader of the log that goes away stops it as a signal would.
      const stopping = stopSignals();
      whenReaderGoes(logs, () => stopping.stop('SIGPIPE'));
      try {
        await checkConnection(pool, databaseUrl);
        const app = createApiServer({ pool, jwtSecret, rateLimits, logger, trustProxy: settings.trustProxy });
        let address: string;
        try {
          address = await app.listen({ port, host: opts.host });
        } catch (err) {
          throw new UsageError(
            `Cannot listen on ${opts.host}:${port} (${errorMessage(err)}); choose another --port or --host.`,
          );
        }
        process.stdout.write(`suekk-sync API listening on ${address}\n`);
        const signal = await stopping.received;
        logger.info(`${signal} received, stopping`);
        await app.close();
      } finally {
        await pool.end();
      }
    });
}
