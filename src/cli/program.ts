/**
 * The suekk-sync program: its global options, how help and commander's own errors read, and which
 * commands it registers for the command line it is given.
 */
import { Command, Help, type Option } from 'commander';
import { VERSION } from '../version.ts';
import { withDefault } from './options.ts';
import { usageErrorLine } from './run.ts';

/** What every module under commands/ exports: it adds its one command to the program. */
interface CommandModule {
  register(program: Command): void;
}

/**
 * Each command's module is loaded only when that command runs: the modules pull in fastify, ink,
 * undici and the rest, and loading all of them cost every invocation about a second. In the order
 * help lists them.
 */
const COMMANDS: Record<string, () => Promise<CommandModule>> = {
  install: () => import('./commands/install.ts'),
  uninstall: () => import('./commands/uninstall.ts'),
  relay: () => import('./commands/relay.ts'),
  resync: () => import('./commands/resync.ts'),
  push: () => import('./commands/push.ts'),
  retry: () => import('./commands/retry.ts'),
  skip: () => import('./commands/skip.ts'),
  pause: () => import('./commands/pause.ts'),
  resume: () => import('./commands/resume.ts'),
  'tail-log': () => import('./commands/tail-log.ts'),
  status: () => import('./commands/status.ts'),
  serve: () => import('./commands/serve.ts'),
  receive: () => import('./commands/receive.ts'),
  dev: () => import('./commands/dev.ts'),
};
const GLOBAL_OPTIONS_WITH_VALUE = new Set(['--config', '--database-url']);

/** The command named on the command line, if any, skipping the global options. */
export function commandName(args: string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (GLOBAL_OPTIONS_WITH_VALUE.has(arg)) i++;
    else if (!arg.startsWith('-')) return arg;
  }
  return undefined;
}

/**
 * Every command's help lists the global options too (a subcommand's own option of the same name,
 * dev's --database-url, is the one that applies there), and shows each default one way: commander's
 * `(default: X)`, a text default as the operator would type it, an empty list not at all.
 */
const HELP: Partial<Help> = {
  showGlobalOptions: true,
  visibleGlobalOptions(this: Help, cmd: Command): Option[] {
    const own = new Set(cmd.options.map((o) => o.long));
    return Help.prototype.visibleGlobalOptions
      .call(this, cmd)
      .filter((o) => o.long !== '--version' && !own.has(o.long));
  },
  optionDescription(this: Help, option: Option): string {
    const value: unknown = option.defaultValue;
    if (
      option.defaultValueDescription === undefined &&
      (typeof value === 'string' || (Array.isArray(value) && value.length === 0))
    ) {
      const shown = Object.assign(Object.create(Object.getPrototypeOf(option) as object) as Option, option);
      if (typeof value === 'string') shown.defaultValueDescription = value;
      else shown.defaultValue = undefined;
      return Help.prototype.optionDescription.call(this, shown);
    }
    return Help.prototype.optionDescription.call(this, option);
  },
};

/** Commander's own mistakes (an unknown option, a bad value) read like ours: one line, same prefix. */
function sameErrorLines(cmd: Command, path: string): void {
  cmd.configureOutput({ outputError: (text, write) => write(usageErrorLine(text, path)) });
  for (const sub of cmd.commands) sameErrorLines(sub, `${path} ${sub.name()}`);
}

export async function buildProgram(args: string[]): Promise<Command> {
  const program = new Command('suekk-sync')
    .description("Keeps a backend's copy of users in step with an auth database.")
    .version(VERSION)
    .configureHelp(HELP)
    .option('--config <file>', withDefault('config file', './suekk-sync.json when it exists'))
    .option('--database-url <url>', withDefault('the auth database', '$DATABASE_URL'))
    .exitOverride();
  const name = commandName(args);
  // Help, a typo or no command at all: register everything, so commander can list or suggest.
  const wantsVersion = name === undefined && (args.includes('--version') || args.includes('-V'));
  const loaders = wantsVersion
    ? []
    : name !== undefined && Object.hasOwn(COMMANDS, name)
      ? [COMMANDS[name]!]
      : Object.values(COMMANDS);
  for (const command of await Promise.all(loaders.map((load) => load()))) command.register(program);
  sameErrorLines(program, 'suekk-sync');
  return program;
}
