/**
 * The register/profile HTTP API (DESIGN.md §7) as a Fastify instance that the caller listens with
 * and closes. It only writes the users table; the capture trigger and the relay do the syncing.
 */
import rateLimit from '@fastify/rate-limit';
import fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Pool } from '../db/pool.ts';
import { errorMessage } from '../errors.ts';
import { ApiError, errorHandler, findNul, notFoundHandler } from './errors.ts';
import { PasswordChecker } from './passwords.ts';
import { apiRoutes } from './routes.ts';
import { customFormats } from './schemas.ts';
import { TokenService } from './tokens.ts';
import { captureTriggerState, USERS_TABLE } from './users.ts';

export interface ApiServerOptions {
  pool: Pool;
  jwtSecret: string;
  /** Lifetime of issued tokens (default 24 h). */
  jwtExpiresInSeconds?: number;
  /** Requests per client address per minute (defaults: register 5, login 10). */
  rateLimits?: { register?: number; login?: number };
  /** A pino logger; nothing is logged without one. */
  logger?: FastifyBaseLogger;
  /** Largest accepted request body in bytes (default 16 KiB). */
  bodyLimit?: number;
}

export function createApiServer(options: ApiServerOptions): FastifyInstance {
  const bodyLimit = options.bodyLimit ?? 16 * 1024;
  const app = fastify({
    ...(options.logger ? { loggerInstance: options.logger } : { logger: false }),
    bodyLimit,
    ajv: {
      customOptions: {
        // Reject rather than repair: unknown keys are errors, not silently dropped, and a number
        // is not quietly turned into a string.
        removeAdditional: false,
        coerceTypes: false,
        useDefaults: false,
        // Every field error at once; the body limit bounds how many there can be.
        allErrors: true,
        formats: customFormats,
      },
    },
  });

  // JSON only: Fastify would otherwise accept text/plain and hand the handlers a string.
  app.removeContentTypeParser('text/plain');

  app.setErrorHandler(errorHandler(bodyLimit));
  app.setNotFoundHandler(notFoundHandler);

  app.addHook('preValidation', async (request) => {
    const field = findNul(request.body);
    if (field !== undefined) {
      throw new ApiError(400, 'Text must not contain NUL characters.', [
        { field, message: 'must not contain NUL (\\u0000) characters' },
      ]);
    }
  });

  app.addHook('onReady', async () => {
    try {
      const state = await captureTriggerState(options.pool);
      if (state === 'missing') {
        app.log.warn(
          `suekk-sync is not installed on ${USERS_TABLE}: changes will not be synced; run \`suekk-sync install\``,
        );
      } else if (state === 'disabled') {
        app.log.warn(`the suekk-sync capture trigger on ${USERS_TABLE} is disabled: changes will not be synced`);
      }
    } catch (err) {
      app.log.warn(`could not check whether suekk-sync is installed on ${USERS_TABLE}: ${errorMessage(err)}`);
    }
  });

  void app.register(rateLimit, {
    global: false,
    errorResponseBuilder: (_request, context) =>
      new ApiError(context.statusCode, `Too many requests; try again in ${context.after}.`),
  });

  // Registered after the rate limiter so its onRoute hook sees these routes' limits.
  void app.register(async (scope) =>
    apiRoutes(scope, {
      pool: options.pool,
      tokens: new TokenService(options.jwtSecret, options.jwtExpiresInSeconds ?? 86_400),
      passwords: new PasswordChecker(),
      rateLimits: { register: options.rateLimits?.register ?? 5, login: options.rateLimits?.login ?? 10 },
    }),
  );

  return app;
}
