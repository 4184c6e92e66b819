// resync: send users' current state through the outbox on demand, to repair a backend that drifted.
import type { Command } from 'commander';
import type { Action } from '../../db/schema.ts';
import { UsageError } from '../../errors.ts';
import {
  DEFAULT_RESYNC_BATCH_SIZE,
  resync,
  resyncDryRun,
  type ResyncProgress,
  type ResyncScope,
} from '../../ops/resync.ts';
import { settingsFrom, withDatabase, type GlobalFlags } from '../context.ts';
import { count } from '../event-lines.ts';
import { interruptSignal } from '../interrupt.ts';
import { actionOption, intOption, withDefault } from '../options.ts';
import { pausedNotice } from '../pause-lines.ts';

export function register(program: Command): void {
  program
    .command('resync')
    .description("send users' current state through the outbox, to repair a backend that drifted")
    .option('--all', 'every user, paged by primary key')
    .option('--user <ref...>', 'these users (id, email or username)')
    .option('--since <iso>', 'users updated at or after this time (source.updatedAtColumn)')
    .addOption(actionOption())
    .option('--batch-size <n>', withDefault('users per transaction', DEFAULT_RESYNC_BATCH_SIZE), intOption(1, 100_000))
    .option('--dry-run', 'say how many users would be sent, and the first few; send nothing')
    .option('--no-wait', 'only enqueue; the relays deliver')
    .option('--resume', 'continue the last interrupted resync from its cursor')
    .option('--json', 'print one JSON summary')
    .action(
      async (
        opts: {
          all?: boolean;
          user?: string[];
          since?: string;
          action?: Action;
          batchSize?: number;
          dryRun?: boolean;
          wait: boolean;
          resume?: boolean;
          json?: boolean;
        },
        cmd: Command,
      ) => {
        const scopes = [opts.all, opts.user, opts.since].filter((s) => s !== undefined).length;
        if (opts.resume ? scopes > 0 : scopes !== 1) {
          throw new UsageError(
            opts.resume
              ? '--resume continues the interrupted run as it was; leave out --all, --user and --since.'
              : 'Say exactly one of --all, --user <ref>… or --since <iso>.',
          );
        }
        let scope: ResyncScope | undefined;
        if (opts.all) scope = { all: true };
        else if (opts.user) scope = { userRefs: opts.user };
        else if (opts.since) {
          const since = new Date(opts.since);
          if (Number.isNaN(since.getTime()))
            throw new UsageError(
              `--since ${JSON.stringify(opts.since)} is not a date; use ISO 8601, e.g. 2026-01-31T00:00:00Z.`,
            );
          scope = { since };
        }
        const settings = settingsFrom(cmd.optsWithGlobals<GlobalFlags>());
        await withDatabase(settings, async (pool) => {
          if (opts.dryRun) {
            const preview = await resyncDryRun(pool, scope!);
            if (opts.json)
              process.stdout.write(`${JSON.stringify({ dryRun: true, users: preview.count, first: preview.first })}\n`);
            else {
              process.stdout.write(
                `Would resync ${preview.count} user${preview.count === 1 ? '' : 's'}; nothing was sent.\n`,
              );
              for (const u of preview.first) process.stdout.write(`  ${u.username || '(no username)'}  ${u.userId}\n`);
              if (preview.count > preview.first.length)
                process.stdout.write(`  … and ${preview.count - preview.first.length} more\n`);
            }
            return;
          }
          const tty = process.stdout.isTTY === true && !opts.json;
          let view = tty ? await renderResyncView() : undefined;
          let lastPlain = 0;
          let lastLine = '';
          let paused = false;
          const interrupt = interruptSignal('batch');
          try {
            const result = await resync(pool, settings, {
              scope,
              action: opts.action,
              batchSize: opts.batchSize,
              wait: opts.wait,
              resume: opts.resume,
              signal: interrupt.signal,
              progressIntervalMs: tty ? 200 : 1000,
              onPausedChange: (now) => {
                paused = now;
                pausedNotice()(now);
              },
              // --json prints only the summary: no progress to count for.
              onProgress: opts.json
                ? undefined
                : (p) => {
                    if (view) view.update(p);
                    else if (performance.now() - lastPlain >= 2000) {
                      // A line only when the counts moved: a paused or stalled wait says so once.
                      const line = plainProgress(p);
                      const counts = line.replace(/, \d+ users\/s.*$/, '');
                      if (counts === lastLine || paused) return;
                      lastPlain = performance.now();
                      lastLine = counts;
                      process.stdout.write(`${line}\n`);
                    }
                  },
            });
            view?.done();
            view = undefined;
            const allDelivered = result.delivered === result.enqueued && !result.interrupted;
            if (opts.json) {
              process.stdout.write(
                `${JSON.stringify({ ...result, rate: Math.round(result.rate), elapsedMs: Math.round(result.elapsedMs) })}\n`,
              );
            } else if (result.interrupted && !result.enqueueDone) {
              process.stdout.write(
                `Interrupted: run ${result.runId} enqueued ${result.enqueued} of ${result.total}; continue with \`suekk-sync resync --resume\`.\n`,
              );
            } else if (result.interrupted) {
              // Everything is enqueued: there is nothing to resume, only deliveries to wait for.
              const left = result.enqueued - result.delivered;
              process.stdout.write(
                `Stopped waiting: run ${result.runId} enqueued all ${count(result.enqueued, 'user')} and ${result.delivered} ${result.delivered === 1 ? 'is' : 'are'} delivered; the other ${left} stay in the outbox for ${result.delivery === 'inline' ? 'a relay (none is running: start `suekk-sync relay`)' : 'the relays'}, and \`suekk-sync status\` shows the backlog.\n`,
              );
            } else if (!opts.wait) {
              process.stdout.write(
                `Enqueued ${result.enqueued} user${result.enqueued === 1 ? '' : 's'} (run ${result.runId}); the relays deliver them.\n`,
              );
            } else {
              process.stdout.write(
                `Resync run ${result.runId}: ${result.delivered} of ${result.enqueued} delivered, ${result.failed} failed, ${result.waiting + result.blocked} waiting (${(result.elapsedMs / 1000).toFixed(1)} s).\n`,
              );
              if (result.failed > 0)
                process.stdout.write(
                  'See them with `suekk-sync tail-log --status failed`; repair with `suekk-sync retry --all-failed`.\n',
                );
            }
            if (opts.wait && !allDelivered) process.exitCode = 1;
            if (!opts.wait && result.interrupted) process.exitCode = 1;
          } finally {
            // An error must not leave the view mounted: it would keep the process alive.
            view?.done();
            interrupt.dispose();
          }
        });
      },
    );
}

async function renderResyncView(): Promise<{ update(p: ResyncProgress): void; done(): void }> {
  const [{ render }, { createElement }, { ResyncView }] = await Promise.all([
    import('ink'),
    import('react'),
    import('../ui/ResyncView.tsx'),
  ]);
  let instance: ReturnType<typeof render> | undefined;
  return {
    update(progress) {
      const element = createElement(ResyncView, { progress });
      if (instance) instance.rerender(element);
      else instance = render(element, { stdout: process.stdout, patchConsole: false });
    },
    done() {
      instance?.unmount();
      instance = undefined;
    },
  };
}

function plainProgress(p: ResyncProgress): string {
  const eta = p.rate > 0 ? Math.ceil((Math.max(p.total, p.enqueued) - p.delivered - p.failed) / p.rate) : null;
  return `resync run ${p.runId}: enqueued ${p.enqueued}/${p.total}, delivered ${p.delivered}, failed ${p.failed}, waiting ${p.waiting + p.blocked}, ${p.rate.toFixed(0)} users/s${eta === null ? '' : `, ETA ${eta}s`}`;
}
