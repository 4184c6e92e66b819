/**
 * The API's pino logger. Fastify's own request serializer already leaves out headers and bodies;
 * the redaction is for anything logged by hand that might carry a credential anyway.
 */
import { pino, type DestinationStream, type Logger } from 'pino';
import { UsageError } from '../errors.ts';

const REDACT = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.body',
  '*.password',
  '*.passwordHash',
  '*.token',
];

export function createApiLogger(level: string, destination?: DestinationStream): Logger {
  if (level !== 'silent' && !(level in pino.levels.values)) {
    throw new UsageError(
      `LOG_LEVEL must be one of ${Object.keys(pino.levels.values).join(', ')} or silent, not "${level}".`,
    );
  }
  return pino({ level, redact: { paths: REDACT, censor: '[redacted]' } }, destination ?? pino.destination(1));
}
