// tail-log: the delivery log, each event with its status, attempts and the backend's answer; -f follows it.
import { Option, type Command } from 'commander';
import { installedSchemaVersion } from '../../db/migrations.ts';
import { isConnectionError, isMissingObjectError, type Pool } from '../../db/pool.ts';
import { errorMessage, UsageError } from '../../errors.ts';
import { queueGauges, type QueueGauges } from '../../db/outbox-queries.ts';
import {
  DeliveryRates,
  entryJson,
  EVENT_STATUSES,
  formatEntry,
  LogFollower,
  recentEntries,
  resolveLogUser,
  type EventStatus,
  type LogEntry,
} from '../../ops/tail.ts';
import { sleep } from '../../sleep.ts';
import { stopSignals } from '../../signals.ts';
import { settingsFrom, withDatabase, type GlobalFlags } from '../context.ts';
import { DURATION_HELP, durationOption, intOption } from '../options.ts';
import type { TailViewProps } from '../ui/TailView.tsx';

interface TailFlags {
  lines: number;
  follow?: boolean;
  status?: EventStatus;
  user?: string;
  json?: boolean;
  intervalMs: number;
}

export function register(program: Command): void {
  program
    .command('tail-log')
    .description("show the delivery log: each event, its status, attempts and the backend's answer")
    .option('-n, --lines <count>', 'recent events to show first', intOption(0, 100_000), 20)
    .option('-f, --follow', 'keep showing new events and status changes until Ctrl-C')
    .addOption(new Option('--status <status>', 'only events with this status').choices(EVENT_STATUSES))
    .option('--user <ref>', "only this user's events (id, email or username)")
    .option('--json', 'one JSON object per line')
    .addOption(
      new Option('--interval-ms <duration>', 'how often --follow looks for changes')
        .argParser(durationOption(20, 60_000))
        .default(1_000, '1s'),
    )
    .addHelpText('after', DURATION_HELP)
    .action(async (opts: TailFlags, cmd: Command) => {
      const settings = settingsFrom(cmd.optsWithGlobals<GlobalFlags>());
      await withDatabase(settings, async (pool) => {
        const userId = opts.user === undefined ? undefined : await resolveLogUser(pool, opts.user);
        const print = (e: LogEntry) =>
          process.stdout.write(`${opts.json ? JSON.stringify(entryJson(e)) : formatEntry(e)}\n`);
        if (!opts.follow) {
          for (const e of await recentEntries(pool, { status: opts.status, userId }, opts.lines)) print(e);
          return;
        }
        await follow(pool, opts, userId, print);
      });
    });
}

/**
 * The schema dropped under a follow (`uninstall --drop-events`): PostgreSQL's "relation does not
 * exist" becomes the sentence every command gives when suekk-sync is not installed.
 */
async function uninstalledMeanwhile(pool: Pool, err: unknown): Promise<UsageError | undefined> {
  if (!isMissingObjectError(err)) return undefined;
  if ((await installedSchemaVersion(pool)) !== 0) return undefined;
  return new UsageError(
    'suekk-sync was uninstalled from this database while tail-log followed it; run `suekk-sync install` to capture changes again.',
  );
}

async function follow(
  pool: Pool,
  opts: TailFlags,
  userId: string | undefined,
  print: (e: LogEntry) => void,
): Promise<void> {
  // Until SIGINT/SIGTERM, which ends the command with exit 0; a second signal changes nothing, as the
  // live view needs a listener to stay. A reader of a pipe that goes away ends it the same way,
  // through the handler every command has (run.ts).
  const { signal, dispose } = stopSignals({ onSecond: 'ignore' });
  const follower = new LogFollower(pool, userId);
  const shows = (e: LogEntry) => opts.status === undefined || e.status === opts.status;
  const initial = await follower.start(opts.lines, opts.status);
  // A terminal gets the live view; a pipe or --json gets plain lines, never cursor movement.
  const live = process.stdout.isTTY === true && !opts.json;
  if (!live) initial.forEach(print);

  const rates = new DeliveryRates();
  // The live view must fit the terminal: ink redraws a taller frame by clearing the screen.
  const keep = Math.max(3, (process.stdout.rows ?? 30) - 7);
  let recent = initial.slice(-keep);
  let gauges: QueueGauges | undefined;
  let problem: string | undefined;
  const scope = [userId === undefined ? undefined : `user ${opts.user}`, opts.status && `status ${opts.status}`]
    .filter(Boolean)
    .join(', ');
  const props = (): TailViewProps => ({ entries: recent, rates: rates.snapshot(), gauges, scope, problem });
  let view: { update(): void; unmount(): void } | undefined;
  if (live) {
    gauges = await queueGauges(pool);
    // Loaded only here: every other command starts faster without React and ink.
    const [{ render }, { createElement }, { TailView }] = await Promise.all([
      import('ink'),
      import('react'),
      import('../ui/TailView.tsx'),
    ]);
    const ink = render(createElement(TailView, props()), { exitOnCtrlC: false, patchConsole: false });
    view = { update: () => ink.rerender(createElement(TailView, props())), unmount: () => ink.unmount() };
  }

  try {
    while (await sleep(opts.intervalMs, signal)) {
      try {
        const changes = await follower.poll();
        rates.record(changes);
        const shown = changes.filter(shows);
        if (live) {
          gauges = await queueGauges(pool);
          recent = [...recent, ...shown].slice(-keep);
        } else {
          shown.forEach(print);
        }
        if (problem !== undefined && !live)
          process.stderr.write('suekk-sync: the database answers again; following.\n');
        problem = undefined;
      } catch (err) {
        // A database restart interrupts the follow, it does not end it: the floor has not moved.
        if (!isConnectionError(err)) throw (await uninstalledMeanwhile(pool, err).catch(() => undefined)) ?? err;
        if (problem === undefined && !live)
          process.stderr.write(`suekk-sync: the database does not answer (${errorMessage(err)}); retrying.\n`);
        problem = `The database does not answer (${errorMessage(err)}); retrying.`;
      }
      view?.update();
    }
  } finally {
    view?.unmount();
    dispose();
  }
}
