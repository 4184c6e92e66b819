import type { Command } from 'commander';
import { setPaused, type PauseResult } from '../ops/pause.ts';
import { settingsFrom, withDatabase, type GlobalFlags } from './context.ts';

function waiting(n: number): string {
  return `${n} event${n === 1 ? '' : 's'}`;
}

export function describePause(r: PauseResult): string {
  if (r.paused) {
    return r.changed
      ? `Paused: relays finish the users in flight and claim no more until \`suekk-sync resume\`; changes are still captured (${waiting(r.backlog)} waiting).`
      : 'Already paused; run `suekk-sync resume` to deliver again.';
  }
  if (!r.changed) return 'Not paused; relays are delivering as usual.';
  return r.relaysAlive > 0
    ? `Resumed: relays deliver the ${waiting(r.backlog)} waiting now.`
    : `Resumed, but no relay is alive: start \`suekk-sync relay\` to deliver the ${waiting(r.backlog)} waiting.`;
}

export function registerPause(program: Command): void {
  for (const [name, paused, description] of [
    ['pause', true, 'stop every relay from claiming users (changes are still captured) until resume'],
    ['resume', false, 'let relays deliver again after pause'],
  ] as const) {
    program
      .command(name)
      .description(description)
      .action(async (_opts: unknown, cmd: Command) => {
        const settings = settingsFrom(cmd.optsWithGlobals<GlobalFlags>());
        const result = await withDatabase(settings, (pool) => setPaused(pool, paused));
        process.stdout.write(`${describePause(result)}\n`);
      });
  }
}
