// skip: give up on a failed event the backend will never take, so its user's later events go.
import type { Command } from 'commander';
import { UsageError } from '../../errors.ts';
import { skip } from '../../ops/retry.ts';
import { settingsFrom, withDatabase, type GlobalFlags } from '../context.ts';

export function register(program: Command): void {
  program
    .command('skip [event-ids...]')
    .description('mark a failed event skipped (the backend will never take it) and un-park its user')
    .option('--user <ref>', "this user's failed event")
    .action(async (ids: string[], opts: { user?: string }, cmd: Command) => {
      if ((opts.user === undefined) === (ids.length === 0))
        throw new UsageError('Say either --user <ref> or event ids.');
      const settings = settingsFrom(cmd.optsWithGlobals<GlobalFlags>());
      await withDatabase(settings, async (pool) => {
        const result = await skip(pool, opts.user ? { userRef: opts.user } : { eventIds: ids });
        if (result.skipped.length === 0) {
          process.stdout.write(`Nothing to skip: ${opts.user} has no failed event.\n`);
          return;
        }
        for (const e of result.skipped)
          process.stdout.write(`skipped   ${e.action.padEnd(7)} ${e.username || e.userId} ${e.webhookId}\n`);
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
