/**
 * The one place errors become exit codes: 2 for usage/configuration, 1 for work that failed.
 * A person sees one sentence; the stack only with LOG_LEVEL=debug.
 */
import { CommanderError } from 'commander';
import { UsageError, WorkFailed } from '../errors.ts';

export function exitCodeFor(err: unknown): number {
  if (err instanceof UsageError) return 2;
  if (err instanceof WorkFailed) return 1;
  if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
  return 1;
}

export function reportError(err: unknown, stderr: NodeJS.WritableStream = process.stderr): number {
  const code = exitCodeFor(err);
  if (err instanceof CommanderError) return code; // commander already printed it
  const debug = (process.env.LOG_LEVEL ?? '').toLowerCase() === 'debug' || process.env.LOG_LEVEL === 'trace';
  const message = err instanceof Error ? err.message : String(err);
  stderr.write(`suekk-sync: ${message}\n`);
  if (debug && err instanceof Error && err.stack) stderr.write(`${err.stack}\n`);
  return code;
}
