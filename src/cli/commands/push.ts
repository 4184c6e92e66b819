// push: send one user's current state now, after their waiting events, and show the outcome.
import type { Command } from 'commander';
import type { Action } from '../../db/schema.ts';
import { push } from '../../ops/push.ts';
import { wentOut } from '../../ops/settle.ts';
import { settingsFrom, withDatabase, type GlobalFlags } from '../context.ts';
import { describeState, stateJson, stillPending } from '../event-lines.ts';
import { interruptSignal } from '../interrupt.ts';
import { actionOption, DEFAULT_WAIT, waitOption, withDefault } from '../options.ts';
import { pausedNotice } from '../pause-lines.ts';

export function register(program: Command): void {
  program
    .command('push <ref>')
    .description("send one user's current state now (after their waiting events), and show the outcome")
    .addOption(actionOption())
    .option('--wait <duration>', withDefault('wait this long for the outcome, e.g. 30s or 2m', DEFAULT_WAIT))
    .option('--no-wait', 'only enqueue; the relays deliver')
    .option('--json', 'print the outcome as JSON')
    .action(async (ref: string, opts: { action?: Action; wait?: string | false; json?: boolean }, cmd: Command) => {
      const { wait, timeoutMs } = waitOption(opts.wait);
      const settings = settingsFrom(cmd.optsWithGlobals<GlobalFlags>());
      await withDatabase(settings, async (pool) => {
        const interrupt = interruptSignal('wait');
        try {
          const result = await push(pool, settings, ref, {
            action: opts.action,
            wait,
            timeoutMs,
            signal: interrupt.signal,
            onPausedChange: pausedNotice(timeoutMs),
          });
          const all = [...result.ahead, { state: result.event, verdict: result.verdict }];
          if (opts.json) {
            process.stdout.write(
              `${JSON.stringify({
                ...stateJson(result.event, result.verdict, result.reasons.get(result.event.id)),
                ahead: result.ahead.map((a) => stateJson(a.state, a.verdict, result.reasons.get(a.state.id))),
              })}\n`,
            );
          } else {
            for (const a of all)
              process.stdout.write(`${describeState(a.state, a.verdict, result.reasons.get(a.state.id))}\n`);
            if (result.event.response && result.verdict === 'delivered') {
              process.stdout.write(`    response: ${result.event.response.slice(0, 200)}\n`);
            }
            if (!wait) {
              process.stdout.write(
                `Queued ${result.username || result.userId}'s current state; not waiting for the outcome (\`suekk-sync tail-log --user ${result.userId}\` shows it).\n`,
              );
            }
          }
          if (result.timedOut)
            throw stillPending(all, result.reasons, { interrupted: interrupt.signal.aborted, waitedMs: timeoutMs });
          if (wait && !wentOut(result.verdict)) process.exitCode = 1;
        } finally {
          interrupt.dispose();
        }
      });
    });
}
