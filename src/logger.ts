/**
 * pino, JSON lines. Whatever a caller passes, these paths are censored: a secret, token, signature
 * or password hash must never reach a log line.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export const REDACTED_PATHS = [
  'secret',
  'secrets',
  'token',
  'password',
  'authorization',
  'signature',
  '*.secret',
  '*.secrets',
  '*.token',
  '*.password',
  '*.authorization',
  '*.signature',
  'headers.authorization',
  'headers["webhook-signature"]',
  'req.headers.authorization',
];

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

export function createLogger(level = 'info', destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? process.stdout,
  );
}
