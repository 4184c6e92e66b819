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
