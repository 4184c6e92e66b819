/**
 * The routes under /api/v1: register, login, and the caller's own profile (get, update, delete).
 * Handlers get validated bodies; every failure is thrown as an ApiError.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Pool } from '../db/pool.ts';
import { ApiError, type FieldError } from './errors.ts';
import { hashPassword, type PasswordChecker } from './passwords.ts';
import {
  loginBody,
  profileBody,
  registerBody,
  registeredJson,
  tokenJson,
  userJson,
  type LoginBody,
  type ProfileBody,
  type RegisterBody,
} from './schemas.ts';
import type { TokenService } from './tokens.ts';
import {
  findActiveUser,
  findLoginCandidate,
  recordLogin,
  registerUser,
  softDeleteUser,
  updateProfile,
  type IdentityField,
  type Registration,
  type UserJson,
} from './users.ts';

export interface RouteDeps {
  pool: Pool;
  tokens: TokenService;
  passwords: PasswordChecker;
  rateLimits: { register: number; login: number };
}

const ONE_MINUTE = 60_000;
const HEALTH_TIMEOUT_MS = 2_000;

// One message for every way a login can be wrong, so the answer does not tell which part was.
const BAD_CREDENTIALS = 'The email or username and password do not match an active account.';

function unauthorized(message: string, invalidToken: boolean): ApiError {
  // RFC 6750: a missing token gets a bare challenge, a rejected one says it was invalid.
  const challenge = invalidToken ? 'Bearer error="invalid_token"' : 'Bearer';
  return new ApiError(401, message, undefined, { 'www-authenticate': challenge });
}

const INVALID_TOKEN = 'The token is invalid or has expired, or its user no longer exists; log in again.';

const TAKEN_DETAILS: Record<IdentityField, FieldError> = {
  email: { field: 'email', message: 'is already registered' },
  username: { field: 'username', message: 'is already taken' },
};

function taken(fields: readonly IdentityField[]): ApiError {
  const message =
    fields.length === 1
      ? fields[0] === 'email'
        ? 'That email address is already registered.'
        : 'That username is already taken.'
      : 'That email address and that username are already taken.';
  return new ApiError(
    409,
    message,
    fields.map((f) => TAKEN_DETAILS[f]),
  );
}

/**
 * A unique index refused the row: another writer won a race with our check. Postgres names the
 * index's key in `detail`: `Key (email)=...`, `Key (lower(email))=...`, `Key (lower((email)::text))=...`.
 */
function uniqueViolation(err: unknown): ApiError | undefined {
  const e = err as { code?: string; detail?: string };
  if (e.code !== '23505') return undefined;
  const key = /^Key \((.*?)\)=\(/.exec(e.detail ?? '')?.[1] ?? '';
  const fields = (['email', 'username'] as const).filter((f) => new RegExp(`\\b${f}\\b`).test(key));
  return fields.length > 0 ? taken(fields) : new ApiError(409, 'That email address or username is already taken.');
}

export function apiRoutes(app: FastifyInstance, deps: RouteDeps): void {
  const { pool, tokens, passwords } = deps;

  // Who each request authenticated as. Kept here rather than decorated onto every Fastify request
  // in the process, which would change the FastifyRequest type for unrelated servers too.
  const users = new WeakMap<FastifyRequest, UserJson>();

  /**
   * Resolves the Bearer token to its user, looked up on every request so a deleted or deactivated
   * user's token dies with them. Runs as onRequest: an anonymous client gets a 401 before its
   * body is even read, never a 400 that tells it about the fields.
   */
  async function authenticate(request: FastifyRequest): Promise<void> {
    const match = /^Bearer +(\S+)$/i.exec(request.headers.authorization ?? '');
    if (!match) {
      throw unauthorized('Send Authorization: Bearer <token>; get a token from /api/v1/auth/login.', false);
    }
    const userId = await tokens.verify(match[1]!);
    const user = userId === undefined ? undefined : await findActiveUser(pool, userId);
    if (user === undefined) throw unauthorized(INVALID_TOKEN, true);
    users.set(request, user);
  }

  const currentUser = (request: FastifyRequest): UserJson => users.get(request)!;

  app.post<{ Body: RegisterBody }>(
    '/api/v1/auth/register',
    {
      schema: { body: registerBody, response: { 201: registeredJson } },
      config: { rateLimit: { max: deps.rateLimits.register, timeWindow: ONE_MINUTE } },
    },
    async (request, reply) => {
      const hash = await hashPassword(request.body.password);
      let registration: Registration;
      try {
        registration = await registerUser(pool, request.body, hash);
      } catch (err) {
        throw uniqueViolation(err) ?? err;
      }
      if ('taken' in registration) throw taken(registration.taken);
      const { user } = registration;
      const token = await tokens.issue(user);
      return reply.code(201).send({ user, token });
    },
  );

  app.post<{ Body: LoginBody }>(
    '/api/v1/auth/login',
    {
      schema: { body: loginBody, response: { 200: tokenJson } },
      config: { rateLimit: { max: deps.rateLimits.login, timeWindow: ONE_MINUTE } },
    },
    async (request) => {
      const { email, username, password } = request.body;
      if ((email === undefined) === (username === undefined)) {
        throw new ApiError(
          400,
          'Log in with either email or username, and password.',
          email === undefined
            ? [{ field: 'email', message: 'is required unless username is given' }]
            : [{ field: 'username', message: 'must not be given together with email' }],
        );
      }
      const candidate =
        email !== undefined
          ? await findLoginCandidate(pool, 'email', email)
          : await findLoginCandidate(pool, 'username', username!);
      const matches = await passwords.check(password, candidate?.passwordHash);
      if (!candidate || !matches || !candidate.allowed) throw new ApiError(401, BAD_CREDENTIALS);
      await recordLogin(pool, candidate.id);
      return { token: await tokens.issue(candidate) };
    },
  );

  app.get('/api/v1/users/profile', { onRequest: authenticate, schema: { response: { 200: userJson } } }, (request) =>
    Promise.resolve(currentUser(request)),
  );

  app.put<{ Body: ProfileBody }>(
    '/api/v1/users/profile',
    { onRequest: authenticate, schema: { body: profileBody, response: { 200: userJson } } },
    async (request) => {
      const updated = await updateProfile(pool, currentUser(request).id, request.body);
      if (updated === undefined) throw unauthorized(INVALID_TOKEN, true);
      return updated;
    },
  );

  app.delete('/api/v1/users/profile', { onRequest: authenticate }, async (request, reply) => {
    if (!(await softDeleteUser(pool, currentUser(request).id))) throw unauthorized(INVALID_TOKEN, true);
    return reply.code(204).send();
  });

  app.get('/healthz', async (_request, reply) => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('timed out')), HEALTH_TIMEOUT_MS);
    });
    try {
      await Promise.race([pool.query('select 1'), timeout]);
      return { status: 'ok' };
    } catch {
      return reply.code(503).send({ error: 'The database is not answering.' });
    } finally {
      clearTimeout(timer);
    }
  });
}
