/**
 * The API's JSON body parser, in place of Fastify's: the same JSON.parse, then one pass over the
 * result that refuses what no route has a use for, each with its own 400 rather than a blanket
 * "not valid JSON": nesting deeper than a flat object needs, NUL characters (Postgres refuses them
 * in text), and `__proto__` or `constructor.prototype` keys (prototype poisoning).
 *
 * The pass is a loop over an explicit stack, never recursion: a 16 KiB body holds 8,000 nested
 * arrays, and a recursive walk of those overflows the call stack, a 500 anyone can send to any
 * route (test/api-security.test.ts, "deep nesting").
 */
import { ApiError } from './errors.ts';

/** Every route takes a flat object; the margin is for clients that send a little more. */
const MAX_BODY_DEPTH = 32;

function nul(field: string): ApiError {
  return new ApiError(400, 'Text must not contain NUL characters.', [
    { field, message: 'must not contain NUL (\\u0000) characters' },
  ]);
}

function poisoning(field: string, key: string): ApiError {
  return new ApiError(400, `The request body must not contain a "${key}" key.`, [
    { field, message: 'is not an accepted key' },
  ]);
}

function isObject(value: unknown): value is object {
  return value !== null && typeof value === 'object';
}

/** Throws the ApiError for the first thing in a parsed body that no route accepts. */
function checkBody(root: unknown): void {
  const stack: { value: unknown; path: string; depth: number }[] = [{ value: root, path: '', depth: 0 }];
  for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
    const { value, path, depth } = next;
    if (typeof value === 'string') {
      if (value.includes('\u0000')) throw nul(path);
      continue;
    }
    if (!isObject(value)) continue;
    if (depth >= MAX_BODY_DEPTH) {
      throw new ApiError(
        400,
        `The request body is nested more than ${MAX_BODY_DEPTH} levels deep; send a flat JSON object.`,
      );
    }
    const children: typeof stack = [];
    for (const [key, child] of Object.entries(value)) {
      const childPath = path === '' ? key : `${path}.${key}`;
      if (key.includes('\u0000')) throw nul(childPath);
      // JSON.parse makes these own keys; a later merge or Object.assign would make them prototypes.
      if (key === '__proto__') throw poisoning(childPath, '__proto__');
      if (key === 'constructor' && isObject(child) && Object.hasOwn(child, 'prototype')) {
        throw poisoning(childPath, 'constructor.prototype');
      }
      children.push({ value: child, path: childPath, depth: depth + 1 });
    }
    // Reversed onto the stack, so the first offending field in the body is the one reported.
    stack.push(...children.reverse());
  }
}

export function parseJsonBody(text: string): unknown {
  if (text.length === 0) throw new ApiError(400, 'The request body is empty; send a JSON object.');
  let value: unknown;
  try {
    // A byte order mark is valid in a JSON text, though JSON.parse refuses it.
    value = JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  } catch {
    throw new ApiError(400, 'The request body is not valid JSON.');
  }
  checkBody(value);
  return value;
}
