import { Command, Help, type Option } from 'commander';
import { VERSION } from '../version.ts';
import { withDefault } from './options.ts';
import { endQuietlyWhenOutputCloses, reportError, usageErrorLine } from './run.ts';

type Register = (program: Command) => void;

/**
 * Each command's module is loaded only when that command runs: the modules pull in fastify, ink,
 * undici and the rest, and loading all of them cost every invocation about a second.
 */
const COMMANDS: Record<string, () => Promise<Register>> = {
  install: () => import('./install.ts').then((m) => m.registerInstall),
  relay: () => import('./relay.ts').then((m) => m.registerRelay),
  resync: () => import('./sync-commands.ts').then((m) => m.registerSyncCommands),
  pause: () => import('./pause.ts').then((m) => m.registerPause),
  'tail-log': () => import('./tail-log.ts').then((m) => m.registerTailLog),
  status: () => import('./status.ts').then((m) => m.registerStatus),
  serve: () => import('./serve.ts').then((m) => m.registerServe),
  receive: () => import('./receive.ts').then((m) => m.registerReceive),
  dev: () => import('./dev.ts').then((m) => m.registerDev),
};
/** Commands registered by another command's module. */
const ALIASES: Record<string, string> = { uninstall: 'install', push: 'resync', retry: 'resync', skip: 'resync', resume: 'pause' };
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
    return Help.prototype.visibleGlobalOptions.call(this, cmd).filter((o) => o.long !== '--version' && !own.has(o.long));
  },
  optionDescription(this: Help, option: Option): string {
    const value: unknown = option.defaultValue;
    if (option.defaultValueDescription === undefined && (typeof value === 'string' || (Array.isArray(value) && value.length === 0))) {
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
    .description('Keeps a backend\'s copy of users in step with an auth database.')
    .version(VERSION)
    .configureHelp(HELP)
    .option('--config <file>', withDefault('config file', './suekk-sync.json when it exists'))
    .option('--database-url <url>', withDefault('the auth database', '$DATABASE_URL'))
    .exitOverride();
  const name = commandName(args);
  const key = name === undefined ? undefined : (ALIASES[name] ?? name);
  // Help, a typo or no command at all: register everything, so commander can list or suggest.
  const wantsVersion = name === undefined && (args.includes('--version') || args.includes('-V'));
  const loaders = wantsVersion ? [] : key !== undefined && COMMANDS[key] ? [COMMANDS[key]] : Object.values(COMMANDS);
  for (const register of await Promise.all(loaders.map((load) => load()))) register(program);
  sameErrorLines(program, 'suekk-sync');
  return program;
}

endQuietlyWhenOutputCloses();
try {
  const program = await buildProgram(process.argv.slice(2));
  await program.parseAsync(process.argv);
} catch (err) {
  // Exit now: a half-started component must not keep a failed command alive.
  process.exit(reportError(err));
}
