// relay: the daemon that delivers the outbox to the backend as signed webhooks, until a signal stops it.
import type { Command } from 'commander';
import { DEFAULT_RELAY, MIN_LEASE_MS } from '../../config.ts';
import { formatDuration } from '../../duration.ts';
import { createLogger, logDestination } from '../../logger.ts';
import { startRelay } from '../../relay/start.ts';
import { stopSignals } from '../../signals.ts';
import { settingsFrom, type GlobalFlags } from '../context.ts';
import { DURATION_HELP, durationOption, intOption, numberOption, scheduleOption, withDefault } from '../options.ts';
import { whenReaderGoes } from '../run.ts';

interface RelayFlags {
  url?: string;
  secret?: string;
  token?: string;
  timeoutMs?: number;
  maxAttempts?: number;
  backoffMs?: number;
  retrySchedule?: number[];
  giveUpAfter?: number;
  concurrency?: number;
  batchSize?: number;
  pollIntervalMs?: number;
  leaseMs?: number;
  maxRps?: number;
  retention?: number;
  probeInterval?: number;
  coalesce?: boolean;
  metricsPort?: number;
}

// No commander defaults here: a flag left out falls through to the environment, the config file,
// then DEFAULT_RELAY, so the help shows those defaults as text.
const d = DEFAULT_RELAY;

export function register(program: Command): void {
  program
    .command('relay')
    .description('the daemon: deliver the outbox to the backend as signed webhooks, in order per user')
    .option('--url <url>', withDefault('backend sync endpoint', '$BACKEND_SYNC_URL'))
    .option('--secret <whsec>', withDefault('webhook signing secret(s), comma-separated', '$WEBHOOK_SECRET'))
    .option('--token <token>', withDefault('bearer token for the backend', '$BACKEND_SYNC_TOKEN'))
    .option(
      '--timeout-ms <duration>',
      withDefault('bound on each attempt', formatDuration(d.timeoutMs)),
      durationOption(1),
    )
    .option('--max-attempts <n>', withDefault('attempts per round', d.maxAttempts), intOption(1, 100))
    .option(
      '--backoff-ms <duration>',
      withDefault('wait before the 2nd attempt, doubling', formatDuration(d.backoffMs)),
      durationOption(0),
    )
    .option(
      '--retry-schedule <list>',
      withDefault('waits between rounds, last repeats', d.retryScheduleMs.map(formatDuration).join(',')),
      scheduleOption,
    )
    .option(
      '--give-up-after <duration>',
      withDefault('fail an event still failing this long after capture', '24h'),
      durationOption(0),
    )
    .option('--concurrency <n>', withDefault('users delivered in parallel', d.concurrency), intOption(1, 10_000))
    .option('--batch-size <n>', withDefault('streams claimed per statement', d.batchSize), intOption(1, 10_000))
    .option(
      '--poll-interval-ms <duration>',
      withDefault('backstop poll', formatDuration(d.pollIntervalMs)),
      durationOption(10),
    )
    .option(
      '--lease-ms <duration>',
      withDefault('how long a claim holds a user', formatDuration(d.leaseMs)),
      durationOption(MIN_LEASE_MS),
    )
    .option('--max-rps <n>', withDefault('requests per second at most, 0 for no limit', d.maxRps), numberOption(0))
    .option(
      '--retention <duration>',
      withDefault('keep delivered events this long', formatDuration(d.retentionMs)),
      durationOption(0),
    )
    .option(
      '--probe-interval <duration>',
      withDefault('while the backend looks down, try one waiting user this often', formatDuration(d.probeIntervalMs)),
      durationOption(0),
    )
    .option(
      '--coalesce',
      withDefault("send a user's run of pending changes as one call with the newest state", 'one call per change'),
    )
    .option('--metrics-port <port>', 'serve /metrics, /healthz and /readyz on this port', intOption(0, 65535))
    .addHelpText('after', DURATION_HELP)
    .action(async (flags: RelayFlags, cmd: Command) => {
      const { url, secret, token, ...relay } = flags;
      const settings = settingsFrom(cmd.optsWithGlobals<GlobalFlags>(), {
        backendSyncUrl: url,
        webhookSecret: secret,
        backendSyncToken: token,
        relay,
      });
      const destination = logDestination();
      // The reader of the log went away (`relay | head`): stop as on SIGTERM, finishing what is in
      // flight, and exit 0; the lines about stopping have nowhere to go. Before the relay runs there
      // is nothing to finish.
      let readerGone = (): void => process.exit(0);
      whenReaderGoes(destination, () => readerGone());
      const started = await startRelay(settings, createLogger(settings.logLevel, destination));
      const { relay: engine, logger } = started;
      const stopping = stopSignals({
        onFirst: (why) =>
          logger.info(
            { inFlight: engine.inFlight },
            `${why}: stopping; letting ${engine.inFlight} user(s) in flight finish`,
          ),
        onSecond: (why) => {
          logger.warn(`${why} again: exiting without waiting; events in flight stay pending and are sent again`);
          process.exit(1);
        },
      });
      readerGone = () => stopping.stop('Its output closed');
      await stopping.received;
      await engine.stop();
      await started.close();
      logger.info('Relay stopped');
    });
}
