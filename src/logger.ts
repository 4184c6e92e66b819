/**
 * The one logger of every command (relay, serve, dev): pino, JSON lines. Whatever a caller passes,
 * sensitive keys are censored: a secret, token, signature, cookie, password or password hash must
 * never reach a log line.
 */
import { pino, type DestinationStream, type Logger } from 'pino';
import { UsageError } from './errors.ts';

export type { Logger };

/**
 * Keys whose values never reach a log line, at the top of a line's fields or nested in them
 * (compared lower-cased). A request body is censored whole: it may hold a password.
 */
const REDACTED_KEYS = new Set([
  'secret',
  'secrets',
  'token',
  'password',
  'passwordhash',
  'password_hash',
  'authorization',
  'cookie',
  'signature',
  'webhook-signature',
  'body',
]);
const CENSOR = '[redacted]';
/** How deep censoring looks: `headers.authorization`, `req.headers.authorization`. */
const CENSOR_DEPTH = 3;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Error);
}

/**
 * The line's fields with every sensitive key censored, copied only where one is found. pino's
 * own path-based redaction did the same through wildcard paths at about 11 µs a line, the largest
 * part of what the relay's per-delivery info line cost; a walk of a few small objects costs about
 * nothing.
 */
export function censorFields(fields: Record<string, unknown>, depth = CENSOR_DEPTH): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  for (const key in fields) {
    const value = fields[key];
    let censored: unknown = value;
    if (REDACTED_KEYS.has(key.toLowerCase())) censored = value === undefined ? value : CENSOR;
    else if (depth > 1 && isPlainObject(value)) censored = censorFields(value, depth - 1);
    if (censored !== value) (out ??= { ...fields })[key] = censored;
  }
  return out ?? fields;
}

/**
 * Where the relay daemon logs: its standard output (or a file), written asynchronously. Lines that
 * come while a write is under way go together in the next one, so a busy relay makes a write per
 * batch of lines instead of one per delivery, and a quiet one still writes each line at once. What is
 * buffered is written out when the process exits (pino flushes its destinations then); a SIGKILL
 * can lose the last lines, never an event.
 */
export function logDestination(dest: number | string = 1): NodeJS.WritableStream {
  return pino.destination({ dest, sync: false }) as unknown as NodeJS.WritableStream;
}

export const LOG_LEVELS = [...Object.keys(pino.levels.values), 'silent'];

export function createLogger(level = 'info', destination?: NodeJS.WritableStream | DestinationStream): Logger {
  if (!LOG_LEVELS.includes(level)) {
    throw new UsageError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, not "${level}".`);
  }
  return pino(
    {
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }), log: censorFields },
    },
    destination ?? process.stdout,
  );
}
