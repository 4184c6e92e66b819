import type { Command } from 'commander';
import { startRelay } from '../relay/start.ts';
import { settingsFrom, type GlobalFlags } from './context.ts';
import { intOption, numberOption } from './options.ts';

interface RelayFlags {
  url?: string;
  secret?: string;
  token?: string;
  timeoutMs?: number;
  maxAttempts?: number;
  backoffMs?: number;
  retrySchedule?: string;
  giveUpAfter?: string;
  concurrency?: number;
  batchSize?: number;
  pollIntervalMs?: number;
  leaseMs?: number;
  maxRps?: number;
  retention?: string;
  probeInterval?: string;
  coalesce?: boolean;
  metricsPort?: number;
}

export function registerRelay(program: Command): void {
  program
    .command('relay')
    .description('the daemon: deliver the outbox to the backend as signed webhooks, in order per user')
    .option('--url <url>', 'backend sync endpoint (default $BACKEND_SYNC_URL)')
    .option('--secret <whsec>', 'webhook signing secret(s), comma-separated (default $WEBHOOK_SECRET)')
    .option('--token <token>', 'bearer token for the backend (default $BACKEND_SYNC_TOKEN)')
    .option('--timeout-ms <n>', 'bound on each attempt (default 10000)', intOption(1))
    .option('--max-attempts <n>', 'attempts per round (default 3)', intOption(1, 100))
    .option('--backoff-ms <n>', 'wait before the 2nd attempt, doubling (default 1000)', intOption(0))
    .option('--retry-schedule <list>', 'waits between rounds, last repeats (default 30s,1m,5m,15m,1h)')
    .option('--give-up-after <duration>', 'fail an event still failing this long after capture (default 24h)')
    .option('--concurrency <n>', 'users delivered in parallel (default 32)', intOption(1, 10_000))
    .option('--batch-size <n>', 'streams claimed per statement (default 100)', intOption(1, 10_000))
    .option('--poll-interval-ms <n>', 'backstop poll (default 5000)', intOption(10))
    .option('--lease-ms <n>', 'how long a claim holds a user (default 30000)', intOption(300))
    .option('--max-rps <n>', 'requests per second at most, 0 for no limit (default 0)', numberOption(0))
    .option('--retention <duration>', 'keep delivered events this long (default 7d)')
    .option('--probe-interval <duration>', 'while the backend looks down, try one waiting user this often (default 5s)')
    .option('--coalesce', "send a user's run of pending changes as one call with the newest state (default: one call per change)")
    .option('--metrics-port <port>', 'serve /metrics, /healthz and /readyz on this port', intOption(0, 65535))
    .action(async (flags: RelayFlags, cmd: Command) => {
      const { url, secret, token, ...relay } = flags;
      const settings = settingsFrom(cmd.optsWithGlobals<GlobalFlags>(), {
        backendSyncUrl: url,
        webhookSecret: secret,
        backendSyncToken: token,
        relay,
      });
      const started = await startRelay(settings);
      const { relay: engine, logger } = started;
      await new Promise<void>((resolve) => {
        let stopping = false;
        const onSignal = (signal: NodeJS.Signals) => {
          if (stopping) {
            logger.warn(`${signal} again: exiting without waiting; events in flight stay pending and are sent again`);
            process.exit(1);
          }
          stopping = true;
          logger.info({ inFlight: engine.inFlight }, `${signal}: stopping; letting ${engine.inFlight} user(s) in flight finish`);
          void engine
            .stop()
            .then(() => started.close())
            .then(() => {
              logger.info('Relay stopped');
              resolve();
            });
        };
        process.on('SIGTERM', onSignal);
        process.on('SIGINT', onSignal);
      });
    });
}
