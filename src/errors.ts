/**
 * The two ways a command can end badly. One place (cli/run.ts) maps them to exit codes, so the
 * library never calls process.exit and every message is one sentence a person can act on.
 */

/** Usage or configuration is wrong: exit 2. */
export class UsageError extends Error {
  override name = 'UsageError';
  readonly exitCode = 2;
}

/** The work ran but did not succeed (not delivered, unhealthy, database unreachable): exit 1. */
export class WorkFailed extends Error {
  override name = 'WorkFailed';
  readonly exitCode = 1;
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
