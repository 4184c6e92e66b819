// receive: a webhook receiver for development that prints every event the relay delivers, until a signal.
import { Option, type Command } from 'commander';
import { createReceiver, describeReceived } from '../../dev/receiver.ts';
import { UsageError } from '../../errors.ts';
import { stopSignals } from '../../signals.ts';
import { settingsFrom, type GlobalFlags } from '../context.ts';
import { DURATION_HELP, durationOption, fractionOption, intOption, withDefault } from '../options.ts';

interface ReceiveFlags {
  port: number;
  host: string;
  secret?: string[];
  token?: string;
  failRate: number;
  delayMs: number;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command('receive')
    .description('run a webhook receiver for development that prints every event the relay delivers')
    .option('--port <port>', 'port to listen on (0 picks a free one)', intOption(0, 65535), 8080)
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option(
      '--secret <whsec>',
      withDefault('verify signatures with this secret; repeat it while rotating', '$WEBHOOK_SECRET'),
      (value: string, previous: string[] | undefined) => [...(previous ?? []), value],
    )
    .option('--token <token>', withDefault('require Authorization: Bearer <token>', '$BACKEND_SYNC_TOKEN'))
    .option(
      '--fail-rate <rate>',
      'answer this fraction (0..1) of requests with 503, to exercise retries',
      fractionOption,
      0,
    )
    .addOption(
      new Option('--delay-ms <duration>', 'wait this long before answering each request')
        .argParser(durationOption(0))
        .default(0, 'none'),
    )
    .option('--json', 'print one JSON object per request instead of a readable line')
    .addHelpText('after', DURATION_HELP)
    .action(async (opts: ReceiveFlags, cmd: Command) => {
      const { port, delayMs, failRate } = opts;
      const settings = settingsFrom(cmd.optsWithGlobals<GlobalFlags>(), {
        webhookSecret: opts.secret?.join(','),
        backendSyncToken: opts.token,
      });
      const secrets = settings.webhookSecrets;
      const verifying = secrets.length > 0;

      const receiver = createReceiver({
        secrets,
        token: settings.backendSyncToken,
        failRate,
        delayMs,
        onEvent: (r) => {
          process.stdout.write(`${opts.json ? JSON.stringify(r) : describeReceived(r)}\n`);
        },
      });
      // The first signal stops the receiver; a second one takes Node's default action.
      const stopping = stopSignals();
      let url: string;
      try {
        url = await receiver.listen(port, opts.host);
      } catch (err) {
        throw new UsageError(
          `Cannot listen on ${opts.host}:${port} (${(err as Error).message}); choose another --port or --host.`,
        );
      }
      const checks = [
        verifying
          ? `verifying signatures with ${secrets.length} secret${secrets.length > 1 ? 's' : ''}`
          : 'not verifying signatures (no secret set)',
        ...(settings.backendSyncToken !== undefined ? ['requiring the bearer token'] : []),
        ...(failRate > 0 ? [`failing ${Math.round(failRate * 100)}% of requests`] : []),
        ...(delayMs > 0 ? [`answering after ${delayMs} ms`] : []),
      ];
      // With --json, stdout carries only event lines, so a pipe into jq sees nothing else.
      const info = opts.json ? process.stderr : process.stdout;
      info.write(`Receiving webhooks at ${url} (${checks.join('; ')})\n`);
      await stopping.received;
      await receiver.close();
      const c = receiver.counts;
      info.write(
        `Stopped: ${c.accepted} received, ${c.duplicate} duplicate, ${c.rejected} rejected, ${c.failed} failed.\n`,
      );
    });
}
