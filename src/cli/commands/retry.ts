// retry: send failed events, and events waiting for their next round, again now, in order.
import type { Command } from 'commander';
import { UsageError } from '../../errors.ts';
import { retry, type EventSelector } from '../../ops/retry.ts';
import { wentOut } from '../../ops/settle.ts';
import { settingsFrom, withDatabase, type GlobalFlags } from '../context.ts';
import { count, describeState, outcomeSummary, stateJson, stillPending } from '../event-lines.ts';
import { interruptSignal } from '../interrupt.ts';
import { DEFAULT_WAIT, waitOption, withDefault } from '../options.ts';
import { pausedNotice } from '../pause-lines.ts';

export function register(program: Command): void {
  program
    .command('retry [event-ids...]')
    .description('send failed events, and events waiting for their next round, again now, in order')
    .option('--all-failed', 'every event held back by a failure')
    .option('--waiting', 'every event waiting for a later round (not the failed ones)')
    .option('--user <ref>', "this user's failed and pending events")
    .option('--dry-run', 'list what would be retried; change nothing')
    .option('--wait <duration>', withDefault('wait this long for the outcome, e.g. 30s or 2m', DEFAULT_WAIT))
    .option('--no-wait', 'only make the events due now; the relays deliver')
    .option('--json', 'print JSON lines')
    .action(
      async (
        ids: string[],
        opts: {
          allFailed?: boolean;
          waiting?: boolean;
          user?: string;
          dryRun?: boolean;
          wait?: string | false;
          json?: boolean;
        },
        cmd: Command,
      ) => {
        const chosen = [opts.allFailed, opts.waiting, opts.user, ids.length > 0 ? ids : undefined].filter(
          (x) => x !== undefined,
        ).length;
        if (chosen !== 1)
          throw new UsageError('Say exactly one of --all-failed, --waiting, --user <ref> or event ids.');
        const { wait, timeoutMs } = waitOption(opts.wait);
        const selector: EventSelector = opts.allFailed
          ? { allFailed: true }
          : opts.waiting
            ? { waiting: true }
            : opts.user
              ? { userRef: opts.user }
              : { eventIds: ids };
        const settings = settingsFrom(cmd.optsWithGlobals<GlobalFlags>());
        await withDatabase(settings, async (pool) => {
          const interrupt = interruptSignal('wait');
          try {
            const result = await retry(pool, settings, selector, {
              dryRun: opts.dryRun,
              wait,
              timeoutMs,
              signal: interrupt.signal,
              onPausedChange: pausedNotice(timeoutMs),
            });
            if (result.nothing !== undefined) {
              if (!opts.json) process.stdout.write(`${result.nothing}\n`);
              return;
            }
            for (const { state, verdict } of result.events) {
              const reason = result.reasons.get(state.id);
              process.stdout.write(
                opts.json
                  ? `${JSON.stringify(stateJson(state, verdict, reason))}\n`
                  : `${describeState(state, verdict, reason)}\n`,
              );
            }
            const n = result.events.length;
            const ofUsers = `${count(n, 'event')} of ${count(result.users, 'user')}`;
            if (opts.dryRun) {
              if (!opts.json) {
                process.stdout.write(
                  `Would retry ${ofUsers}: each user's first event again, with its webhook-id, then the rest in order; nothing was changed.\n`,
                );
              }
              return;
            }
            if (!wait) {
              if (!opts.json) process.stdout.write(`Made ${ofUsers} due now; not waiting for the outcome.\n`);
              return;
            }
            if (!opts.json) process.stdout.write(`${outcomeSummary(result.events.map((e) => e.verdict))}\n`);
            if (result.timedOut) {
              throw stillPending(result.events, result.reasons, {
                interrupted: interrupt.signal.aborted,
                waitedMs: timeoutMs,
              });
            }
            if (result.events.some((e) => !wentOut(e.verdict))) process.exitCode = 1;
          } finally {
            interrupt.dispose();
          }
        });
      },
    );
}
