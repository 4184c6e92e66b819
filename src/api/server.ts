/**
 * The register/profile HTTP API as a Fastify instance that the caller listens with
 * and closes. It only writes the users table; the capture trigger and the relay do the syncing.
 */
import rateLimit from '@fastify/rate-limit';
import fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Pool } from '../db/pool.ts';
import { errorMessage } from '../errors.ts';
import { parseJsonBody } from './body.ts';
import { ApiError, clientErrorHandler, errorHandler, notFoundHandler } from './errors.ts';
import { PasswordChecker } from './passwords.ts';
import { apiRoutes } from './routes.ts';
import { customFormats } from './schemas.ts';
import { TokenService } from './tokens.ts';
import { checkCaptureTriggers } from '../db/source.ts';
import { USERS_TABLE } from './users.ts';

export interface ApiServerOptions {
  pool: Pool;
  jwtSecret: string;
  /** Lifetime of issued tokens (default 24 h). */
  jwtExpiresInSeconds?: number;
  /** Requests per client address per minute (defaults: register 5, login 10, unknown routes 60). */
  rateLimits?: { register?: number; login?: number; notFound?: number };
  /**
   * Behind a reverse proxy: which peers' X-Forwarded-For to believe, so that rate limits count
   * clients rather than the proxy. `true` believes any peer (then anyone who can reach the API
   * directly picks their own address); a list of addresses or CIDR ranges believes only those.
   * Off by default.
   */
  trustProxy?: boolean | string[];
  /** A pino logger; nothing is logged without one. */
  logger?: FastifyBaseLogger;
  /** Largest accepted request body in bytes (default 16 KiB). */
  bodyLimit?: number;
}

const ONE_MINUTE = 60_000;

export function createApiServer(options: ApiServerOptions): FastifyInstance {
  const bodyLimit = options.bodyLimit ?? 16 * 1024;
  // Made first, so a secret too short to sign with fails here rather than at listen().
  const tokens = new TokenService(options.jwtSecret, options.jwtExpiresInSeconds ?? 86_400);
  const handleError = errorHandler(bodyLimit);
  const app = fastify({
    ...(options.logger ? { loggerInstance: options.logger } : { logger: false }),
    bodyLimit,
    trustProxy: options.trustProxy ?? false,
    // Errors met before routing (a URL that does not percent-decode, malformed HTTP) get the
    // same {error} body as every other.
    frameworkErrors: handleError,
    clientErrorHandler,
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

  // JSON only, through our parser (body.ts): Fastify would otherwise accept text/plain and hand
  // the handlers a string.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    try {
      done(null, parseJsonBody(body as string));
    } catch (err) {
      done(err as ApiError, undefined);
    }
  });

  app.setErrorHandler(handleError);
  app.setNotFoundHandler(notFoundHandler);

  app.addHook('onReady', async () => {
    try {
      const triggers = await checkCaptureTriggers(options.pool, USERS_TABLE);
      if (triggers.missing.length > 0) {
        app.log.warn(
          `suekk-sync is not installed on ${USERS_TABLE}: changes will not be synced; run \`suekk-sync install\``,
        );
      } else if (triggers.disabled.length > 0) {
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
  // Unknown routes are limited too, before their body is read: a scanner or a flood of bad
  // requests would otherwise cost a parse each, without bound.
  app.after(() => {
    const notFoundLimit = app.rateLimit({ max: options.rateLimits?.notFound ?? 60, timeWindow: ONE_MINUTE });
    app.addHook('onRequest', async (request, reply) => {
      if (request.is404) await notFoundLimit.call(app, request, reply);
    });
  });

  // Registered after the rate limiter so its onRoute hook sees these routes' limits.
  // A plugin fastify awaits (a promise) rather than one that calls done.
  void app.register((scope) =>
    Promise.resolve(
      apiRoutes(scope, {
        pool: options.pool,
        tokens,
        passwords: new PasswordChecker(),
        rateLimits: { register: options.rateLimits?.register ?? 5, login: options.rateLimits?.login ?? 10 },
      }),
    ),
  );

  return app;
}
