/**
 * Every failure the API answers becomes `{"error": "<sentence>", "details"?: [{field, message}]}`
 * with the right status. Bad input of any kind (fields, JSON, size, media type, values the users
 * table refuses) is a 4xx; only our own faults are a 500, and an unreachable database is a 503.
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { isConnectionError } from '../db/pool.ts';
import { FORMAT_MESSAGES, PATTERN_MESSAGES } from './schemas.ts';

export interface FieldError {
  field: string;
  message: string;
}

export interface ErrorBody {
  error: string;
  details?: FieldError[];
}

export class ApiError extends Error {
  override name = 'ApiError';

  constructor(
    readonly statusCode: number,
    message: string,
    readonly details?: FieldError[],
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** The shape Fastify gives ajv's errors (a subset of ajv's ErrorObject). */
interface ValidationIssue {
  keyword: string;
  instancePath: string;
  params: Record<string, unknown>;
  message?: string;
}

// A 16 KiB body can carry hundreds of unknown keys; a client needs the first few, not all.
const MAX_DETAILS = 20;

function fieldName(instancePath: string): string {
  return instancePath.replace(/^\//, '').split('/').join('.');
}

function characters(limit: unknown): string {
  return limit === 1 ? '1 character' : `${String(limit)} characters`;
}

function issueToDetail(issue: ValidationIssue): FieldError {
  const field = fieldName(issue.instancePath);
  const p = issue.params;
  switch (issue.keyword) {
    case 'required':
      return { field: String(p.missingProperty), message: 'is required' };
    case 'additionalProperties':
      return { field: String(p.additionalProperty), message: 'is not an accepted field' };
    case 'type':
      return { field, message: `must be ${p.type === 'object' ? 'an' : 'a'} ${String(p.type)}` };
    case 'minLength':
      return { field, message: `must be at least ${characters(p.limit)} long` };
    case 'maxLength':
      return { field, message: `must be at most ${characters(p.limit)} long` };
    case 'format':
      return { field, message: FORMAT_MESSAGES[String(p.format)] ?? 'has the wrong format' };
    case 'pattern':
      return { field, message: PATTERN_MESSAGES[field] ?? 'has the wrong format' };
    default:
      return { field, message: issue.message ?? 'is invalid' };
  }
}

/** ajv's errors as one sentence and field details; problems with the body as a whole get no details. */
function validationError(issues: readonly ValidationIssue[]): ApiError {
  const whole = issues.find(
    (i) => i.instancePath === '' && i.keyword !== 'required' && i.keyword !== 'additionalProperties',
  );
  if (whole?.keyword === 'type') return new ApiError(400, 'The request body must be a JSON object.');
  if (whole?.keyword === 'minProperties') {
    return new ApiError(400, 'The request body must set at least one field.');
  }
  // One message per field: an empty name breaks both its length and its "not blank" rule.
  const byField = new Map<string, FieldError>();
  for (const issue of issues) {
    const detail = issueToDetail(issue);
    if (!byField.has(detail.field) && byField.size < MAX_DETAILS) byField.set(detail.field, detail);
  }
  return new ApiError(400, 'Some fields are invalid; see details.', [...byField.values()]);
}

// Postgres SQLSTATEs that mean "these values do not fit the table": a constraint a DBA added, a
// varchar shorter than our limits. The input is at fault, not the server.
function isDataError(code: string): boolean {
  return code.startsWith('22') || code === '23502' || code === '23514';
}

function toApiError(err: FastifyError | ApiError, bodyLimit: number): ApiError {
  if (err instanceof ApiError) return err;
  if (err.validation) return validationError(err.validation);
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ApiError(413, `The request body is larger than ${bodyLimit} bytes.`);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ApiError(415, 'Send the request body as JSON, with Content-Type: application/json.');
    case 'FST_ERR_BAD_URL':
      return new ApiError(400, 'The URL is not validly percent-encoded; write a literal % as %25.');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new ApiError(400, 'The request body does not match its Content-Length.');
    case '23505':
      return new ApiError(409, 'That value is already taken.');
  }
  if (typeof err.code === 'string' && isDataError(err.code)) {
    return new ApiError(400, 'The users table refused these values.');
  }
  const status = err.statusCode;
  if (status !== undefined && status >= 400 && status < 500) {
    return new ApiError(status, 'The request could not be understood.');
  }
  if (isConnectionError(err)) return new ApiError(503, 'The database is not answering; try again shortly.');
  return new ApiError(500, 'Something went wrong on our side; it has been logged.');
}

/**
 * What a 5xx logs: never the whole error object, because a Postgres error's `detail` can spell out
 * the failing row, password hash included.
 */
function loggable(err: Error & { code?: unknown }): Record<string, unknown> {
  return { type: err.name, message: err.message, code: err.code, stack: err.stack };
}

export function errorHandler(bodyLimit: number) {
  return (err: FastifyError | ApiError, request: FastifyRequest, reply: FastifyReply): void => {
    const apiError = toApiError(err, bodyLimit);
    if (apiError.statusCode >= 500) request.log.error({ err: loggable(err) }, 'request failed');
    const body: ErrorBody = { error: apiError.message };
    if (apiError.details !== undefined) body.details = apiError.details;
    void reply.code(apiError.statusCode).headers(apiError.headers).send(body);
  };
}

export function notFoundHandler(request: FastifyRequest, reply: FastifyReply): void {
  const path = request.url.split('?')[0]!.slice(0, 200);
  void reply.code(404).send({ error: `There is no route ${request.method} ${path}.` } satisfies ErrorBody);
}

/**
 * Answers what fails before there is a request to route (malformed HTTP, headers too large, a
 * request that arrives too slowly) in the same shape; Fastify's default writes a body of its own.
 */
export function clientErrorHandler(err: Error & { code?: string }, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, message] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'The request did not arrive in time.']
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'The request headers are too large.']
        : [400, 'The request is not valid HTTP.'];
  const body = JSON.stringify({ error: message } satisfies ErrorBody);
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        `Content-Type: application/json; charset=utf-8\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(err);
}
