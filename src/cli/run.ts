/**
 * The one place errors become exit codes: 2 for usage/configuration, 1 for work that failed.
 * A person sees one sentence; the stack only with LOG_LEVEL=debug.
 */
import { CommanderError } from 'commander';
import { UsageError, WorkFailed } from '../errors.ts';

/** What every error line starts with, ours and commander's alike. */
const PREFIX = 'suekk-sync: ';

export function exitCodeFor(err: unknown): number {
  if (err instanceof UsageError) return 2;
  if (err instanceof WorkFailed) return 1;
  if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
  return 1;
}

export function reportError(err: unknown, stderr: NodeJS.WritableStream = process.stderr): number {
  const code = exitCodeFor(err);
  if (err instanceof CommanderError) return code; // commander already printed it (usageErrorLine)
  const debug = debugLevel() !== undefined;
  const message = err instanceof Error ? err.message : String(err);
  stderr.write(`${PREFIX}${message}\n`);
  if (debug && err instanceof Error && err.stack) stderr.write(`${err.stack}\n`);
  return code;
}

/**
 * The one reading of LOG_LEVEL outside the settings: `debug` or `trace` (in any case) when the
 * operator is debugging suekk-sync itself, which earns stack traces and dev's routine logs.
 */
export function debugLevel(env: NodeJS.ProcessEnv = process.env): 'debug' | 'trace' | undefined {
  const level = (env.LOG_LEVEL ?? '').toLowerCase();
  return level === 'debug' || level === 'trace' ? level : undefined;
}

/**
 * Commander's message for a usage mistake as one line of ours: `error: unknown command 'x'\n(Did
 * you mean y?)` becomes `suekk-sync: unknown command 'x' (did you mean y?); run `suekk-sync --help`
 * for usage.` The help to run is the command's own.
 */
export function usageErrorLine(text: string, commandPath: string): string {
  const message = text
    .trim()
    .replace(/^error: /, '')
    .replace(/\s*\n\s*\(Did you mean (.*?)\)/g, ' (did you mean $1)')
    .replace(/\s*\n\s*/g, ' ')
    .replace(/\.$/, '');
  return `${PREFIX}${message}; run \`${commandPath} --help\` for usage.\n`;
}

/**
 * A reader that goes away (`suekk-sync tail-log | head -1`) ends the command quietly, as it ends
 * any command-line tool: exit 0, or the exit code the command had already settled on (an unhealthy
 * `status`). Node ignores SIGPIPE, so without this the next write fails with an EPIPE error that
 * nobody handles: a stack trace and exit 1.
 */
export function endQuietlyWhenOutputCloses(streams: NodeJS.WriteStream[] = [process.stdout, process.stderr]): void {
  for (const stream of streams) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
      process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
    });
  }
}

/**
 * For a long-running command whose log has its own stream (pino's, on the same fd 1): calls
 * `onGone` once when the reader goes away, so the command can stop as on SIGTERM and exit 0.
 */
export function whenReaderGoes(stream: NodeJS.EventEmitter, onGone: () => void): void {
  let gone = false;
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE' || gone) return;
    gone = true;
    onGone();
  });
}
