/** resync, push, retry and skip: the commands that send users through the outbox on demand. */
import type { Command } from 'commander';
import { Option } from 'commander';
import type { Action } from '../db/schema.ts';
import { UsageError, WorkFailed } from '../errors.ts';
import { formatDuration, parseDuration } from '../duration.ts';
import { push } from '../ops/push.ts';
import { resync, resyncDryRun, type ResyncProgress, type ResyncScope } from '../ops/resync.ts';
import { retry, skip, type EventSelector } from '../ops/retry.ts';
import { wentOut, type EventState, type Verdict } from '../ops/settle.ts';
import { settingsFrom, withDatabase, type GlobalFlags } from './context.ts';
import { intOption } from './options.ts';

const actionOption = () =>
  new Option('--action <action>', 'override the action (default: created, or deleted for soft-deleted users)').choices([
    'created',
    'updated',
    'deleted',
  ]);

/** Ctrl-C once: finish the current step and report; twice: leave at once. */
function interruptSignal(what: string): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const onSignal = () => {
    if (controller.signal.aborted) process.exit(130);
    process.stderr.write(`\nStopping after the current ${what} (Ctrl-C again to leave at once)…\n`);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal: controller.signal,
    dispose: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

const count = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;

function describeState(s: EventState, verdict: Verdict, reason?: string): string {
  const http = s.httpStatus === null ? '' : ` HTTP ${s.httpStatus}`;
  const took = s.durationMs === null ? '' : ` in ${s.durationMs} ms`;
  const detail =
    verdict === 'delivered' || verdict === 'skipped'
      ? ''
      : verdict === 'superseded'
        ? ` — carried by ${s.supersededBy} with a later state`
        : verdict === 'failed'
          ? ` — ${s.error ?? 'failed'}`
          : verdict === 'waiting'
            ? ` — ${s.error ?? 'not delivered'}${reason === undefined ? '' : `; ${reason}`}`
            : ` — ${reason ?? 'not sent yet'}`;
  const body = s.response && verdict !== 'delivered' ? `\n    response: ${s.response.slice(0, 200)}` : '';
  return `${verdict.padEnd(9)} ${s.action.padEnd(7)} ${s.username || s.userId} ${s.webhookId}${http}${took}${detail}${body}`;
}

function stateJson(s: EventState, verdict: Verdict, reason?: string) {
  return {
    eventId: s.id,
    webhookId: s.webhookId,
    userId: s.userId,
    username: s.username,
    action: s.action,
    outcome: verdict,
    status: s.status,
    attempts: s.attempts,
    rounds: s.rounds,
    httpStatus: s.httpStatus,
    durationMs: s.durationMs,
    error: s.error,
    response: s.response,
    supersededBy: s.supersededBy,
    // Only a round still to come: a time already past is no "next round".
    nextAttemptAt: verdict === 'waiting' && s.nextAttemptAt.getTime() > Date.now() ? s.nextAttemptAt.toISOString() : null,
    reason: reason ?? null,
  };
}

/** "0 of 2 events delivered: 1 failed, 1 waits behind an earlier event of its user." */
function outcomeSummary(verdicts: Verdict[]): string {
  const n = (v: Verdict) => verdicts.filter((x) => x === v).length;
  const through = verdicts.filter(wentOut).length;
  const parts = [
    n('failed') > 0 ? `${n('failed')} failed` : '',
    n('waiting') > 0 ? `${n('waiting')} ${n('waiting') === 1 ? 'waits' : 'wait'} for a next round` : '',
    n('blocked') > 0 ? `${n('blocked')} ${n('blocked') === 1 ? 'waits behind an earlier event of its user' : 'wait behind an earlier event of their users'}` : '',
    n('queued') > 0 ? `${n('queued')} not sent yet` : '',
    n('skipped') > 0 ? `${n('skipped')} skipped meanwhile` : '',
  ].filter((p) => p !== '');
  return `${through} of ${count(verdicts.length, 'event')} delivered${parts.length > 0 ? `: ${parts.join(', ')}` : ''}.`;
}

/** Why a wait ended early, for the one sentence printed when it did: the reasons of the events first in line. */
function stillPending(
  events: { state: EventState; verdict: Verdict }[],
  reasons: Map<string, string>,
  how: { interrupted: boolean; waitedMs: number },
): WorkFailed {
  const pending = events.filter((e) => e.verdict === 'queued' || e.verdict === 'blocked');
  const why = [...new Set(events.filter((e) => e.verdict === 'queued').map((e) => reasons.get(e.state.id) ?? 'not sent yet'))];
  const start = how.interrupted ? 'Stopped waiting' : `Gave up waiting after ${formatDuration(how.waitedMs)}`;
  return new WorkFailed(
    `${start} with ${count(pending.length, 'event')} still pending (${why.join('; ')}); ${pending.length === 1 ? 'it stays' : 'they stay'} queued and ${pending.length === 1 ? 'goes' : 'go'} once that clears.`,
  );
}

const DEFAULT_WAIT = '1m';

/** --wait <duration> (default 1m) or --no-wait: how long push and retry wait for the outcome. */
function waitOption(raw: string | false | undefined): { wait: boolean; timeoutMs: number } {
  if (raw === false) return { wait: false, timeoutMs: 0 };
  const timeoutMs = parseDuration(raw ?? DEFAULT_WAIT, '--wait');
  if (timeoutMs <= 0) throw new UsageError('--wait must be longer than 0; pass --no-wait to only enqueue.');
  return { wait: true, timeoutMs };
}

/** The one line a command that waits prints when delivery is paused. */
function pausedNotice(waitMs?: number): (paused: boolean) => void {
  return (paused) => {
    if (!paused) return;
    const bound = waitMs === undefined ? '' : `; waiting at most ${formatDuration(waitMs)}`;
    process.stderr.write(`Delivery is paused, so nothing is sent until someone runs \`suekk-sync resume\`${bound}.\n`);
  };
}

async function renderResyncView(): Promise<{ update(p: ResyncProgress): void; done(): void }> {
  const [{ render }, { createElement }, { ResyncView }] = await Promise.all([
    import('ink'),
    import('react'),
    import('./ui/ResyncView.tsx'),
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

export function registerSyncCommands(program: Command): void {
  program
    .command('resync')
    .description('send users\' current state through the outbox, to repair a backend that drifted')
    .option('--all', 'every user, paged by primary key')
    .option('--user <ref...>', 'these users (id, email or username)')
    .option('--since <iso>', 'users updated at or after this time (source.updatedAtColumn)')
    .addOption(actionOption())
    .option('--batch-size <n>', 'users per transaction (default 1000)', intOption(1, 100_000))
    .option('--dry-run', 'say how many users would be sent, and the first few; send nothing')
    .option('--no-wait', 'only enqueue; the relays deliver')
    .option('--resume', 'continue the last interrupted resync from its cursor')
    .option('--json', 'print one JSON summary')
    .action(
      async (
        opts: { all?: boolean; user?: string[]; since?: string; action?: Action; batchSize?: number; dryRun?: boolean; wait: boolean; resume?: boolean; json?: boolean },
        cmd: Command,
      ) => {
        const scopes = [opts.all, opts.user, opts.since].filter((s) => s !== undefined).length;
        if (opts.resume ? scopes > 0 : scopes !== 1) {
          throw new UsageError(
            opts.resume ? '--resume continues the interrupted run as it was; leave out --all, --user and --since.' : 'Say exactly one of --all, --user <ref>… or --since <iso>.',
          );
        }
        let scope: ResyncScope | undefined;
        if (opts.all) scope = { all: true };
        else if (opts.user) scope = { userRefs: opts.user };
        else if (opts.since) {
          const since = new Date(opts.since);
          if (Number.isNaN(since.getTime())) throw new UsageError(`--since ${JSON.stringify(opts.since)} is not a date; use ISO 8601, e.g. 2026-01-31T00:00:00Z.`);
          scope = { since };
        }
        const settings = settingsFrom(cmd.optsWithGlobals<GlobalFlags>());
        await withDatabase(settings, async (pool) => {
          if (opts.dryRun) {
            const preview = await resyncDryRun(pool, scope!);
            if (opts.json) process.stdout.write(`${JSON.stringify({ dryRun: true, users: preview.count, first: preview.first })}\n`);
            else {
              process.stdout.write(`Would resync ${preview.count} user${preview.count === 1 ? '' : 's'}; nothing was sent.\n`);
              for (const u of preview.first) process.stdout.write(`  ${u.username || '(no username)'}  ${u.userId}\n`);
              if (preview.count > preview.first.length) process.stdout.write(`  … and ${preview.count - preview.first.length} more\n`);
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
              process.stdout.write(`${JSON.stringify({ ...result, rate: Math.round(result.rate), elapsedMs: Math.round(result.elapsedMs) })}\n`);
            } else if (result.interrupted && !result.enqueueDone) {
              process.stdout.write(`Interrupted: run ${result.runId} enqueued ${result.enqueued} of ${result.total}; continue with \`suekk-sync resync --resume\`.\n`);
            } else if (result.interrupted) {
              // Everything is enqueued: there is nothing to resume, only deliveries to wait for.
              const left = result.enqueued - result.delivered;
              process.stdout.write(
                `Stopped waiting: run ${result.runId} enqueued all ${count(result.enqueued, 'user')} and ${result.delivered} ${result.delivered === 1 ? 'is' : 'are'} delivered; the other ${left} stay in the outbox for ${result.delivery === 'inline' ? 'a relay (none is running: start `suekk-sync relay`)' : 'the relays'}, and \`suekk-sync status\` shows the backlog.\n`,
              );
            } else if (!opts.wait) {
              process.stdout.write(`Enqueued ${result.enqueued} user${result.enqueued === 1 ? '' : 's'} (run ${result.runId}); the relays deliver them.\n`);
            } else {
              process.stdout.write(
                `Resync run ${result.runId}: ${result.delivered} of ${result.enqueued} delivered, ${result.failed} failed, ${result.waiting + result.blocked} waiting (${(result.elapsedMs / 1000).toFixed(1)} s).\n`,
              );
              if (result.failed > 0) process.stdout.write('See them with `suekk-sync tail-log --status failed`; repair with `suekk-sync retry --all-failed`.\n');
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

  program
    .command('push <ref>')
    .description('send one user\'s current state now (after their waiting events), and show the outcome')
    .addOption(actionOption())
    .option('--wait <duration>', `wait this long for the outcome, e.g. 30s or 2m (default ${DEFAULT_WAIT})`)
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
            for (const a of all) process.stdout.write(`${describeState(a.state, a.verdict, result.reasons.get(a.state.id))}\n`);
            if (result.event.response && result.verdict === 'delivered') {
              process.stdout.write(`    response: ${result.event.response.slice(0, 200)}\n`);
            }
            if (!wait) {
              process.stdout.write(
                `Queued ${result.username || result.userId}'s current state; not waiting for the outcome (\`suekk-sync tail-log --user ${result.userId}\` shows it).\n`,
              );
            }
          }
          if (result.timedOut) throw stillPending(all, result.reasons, { interrupted: interrupt.signal.aborted, waitedMs: timeoutMs });
          if (wait && !wentOut(result.verdict)) process.exitCode = 1;
        } finally {
          interrupt.dispose();
        }
      });
    });

  program
    .command('retry [event-ids...]')
    .description('send failed events, and events waiting for their next round, again now, in order')
    .option('--all-failed', 'every event held back by a failure')
    .option('--waiting', 'every event waiting for a later round (not the failed ones)')
    .option('--user <ref>', 'this user\'s failed and pending events')
    .option('--dry-run', 'list what would be retried; change nothing')
    .option('--wait <duration>', `wait this long for the outcome, e.g. 30s or 2m (default ${DEFAULT_WAIT})`)
    .option('--no-wait', 'only make the events due now; the relays deliver')
    .option('--json', 'print JSON lines')
    .action(
      async (
        ids: string[],
        opts: { allFailed?: boolean; waiting?: boolean; user?: string; dryRun?: boolean; wait?: string | false; json?: boolean },
        cmd: Command,
      ) => {
        const chosen = [opts.allFailed, opts.waiting, opts.user, ids.length > 0 ? ids : undefined].filter((x) => x !== undefined).length;
        if (chosen !== 1) throw new UsageError('Say exactly one of --all-failed, --waiting, --user <ref> or event ids.');
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
              process.stdout.write(opts.json ? `${JSON.stringify(stateJson(state, verdict, reason))}\n` : `${describeState(state, verdict, reason)}\n`);
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
              throw stillPending(result.events, result.reasons, { interrupted: interrupt.signal.aborted, waitedMs: timeoutMs });
            }
            if (result.events.some((e) => !wentOut(e.verdict))) process.exitCode = 1;
          } finally {
            interrupt.dispose();
          }
        });
      },
    );

  program
    .command('skip [event-ids...]')
    .description('mark a failed event skipped (the backend will never take it) and un-park its user')
    .option('--user <ref>', 'this user\'s failed event')
    .action(async (ids: string[], opts: { user?: string }, cmd: Command) => {
      if ((opts.user === undefined) === (ids.length === 0)) throw new UsageError('Say either --user <ref> or event ids.');
      const settings = settingsFrom(cmd.optsWithGlobals<GlobalFlags>());
      await withDatabase(settings, async (pool) => {
        const result = await skip(pool, opts.user ? { userRef: opts.user } : { eventIds: ids });
        if (result.skipped.length === 0) {
          process.stdout.write(`Nothing to skip: ${opts.user} has no failed event.\n`);
          return;
        }
        for (const e of result.skipped) process.stdout.write(`skipped   ${e.action.padEnd(7)} ${e.username || e.userId} ${e.webhookId}\n`);
        for (const [userId, next] of result.next) {
          const name = result.skipped.find((e) => e.userId === userId)!.username || userId;
          process.stdout.write(
            next === undefined
              ? `Un-parked ${name}; nothing else of theirs is pending. To send their current state, run \`suekk-sync push ${userId}\`.\n`
              : `Un-parked ${name}: their next pending event, ${next.webhookId} (${next.action}), is now first in line and is sent now; if the backend rejects it too, ${name} is parked again (\`suekk-sync tail-log --user ${userId}\` shows it).\n`,
          );
        }
      });
    });
}
