/**
 * The webhook body bytes: the mapped user fields, then `action`, as one JSON object. Built by hand
 * rather than by stringifying an object so the key order, the key set and the NULL handling are
 * fixed by this file alone, whatever shape the stored jsonb snapshot comes back in (jsonb reorders
 * keys and may carry extra ones).
 */
import { PAYLOAD_FIELDS } from '../config.ts';
import { ACTIONS, type Action } from '../db/schema.ts';

/** The contract's name for the action; the outbox stores the same three. */
export type WebhookAction = Action;

export const WEBHOOK_ACTIONS: readonly WebhookAction[] = ACTIONS;

/** The body's keys, in the order they are written. */
export const WEBHOOK_BODY_KEYS = [...PAYLOAD_FIELDS, 'action'] as const;

export type WebhookBodyKey = (typeof WEBHOOK_BODY_KEYS)[number];

// NULL becomes "" because that is what the Go backend's string fields decode to anyway.
function jsonString(value: unknown): string {
  if (value === null || value === undefined) return '""';
  // Numbers, booleans, bigints and dates: String() spells them as the SQL rendering's ::text does.
  // eslint-disable-next-line @typescript-eslint/no-base-to-string
  return JSON.stringify(typeof value === 'string' ? value : String(value));
}

// Postgres text output spells booleans 't'/'f', so a snapshot that went through text still reads right.
function isTrue(value: unknown): boolean {
  return value === true || value === 't' || value === 'true';
}

export function buildWebhookBody(payload: Record<string, unknown>, action: WebhookAction): string {
  // The type already says this; the check is for snapshots read back from the database, where a
  // bad action would otherwise reach the backend as a contract violation.
  if (!WEBHOOK_ACTIONS.includes(action)) {
    throw new TypeError(`webhook action must be created, updated or deleted, not ${JSON.stringify(action)}`);
  }
  return (
    '{"id":' +
    jsonString(payload.id) +
    ',"email":' +
    jsonString(payload.email) +
    ',"username":' +
    jsonString(payload.username) +
    ',"displayName":' +
    jsonString(payload.displayName) +
    ',"avatar":' +
    jsonString(payload.avatar) +
    ',"role":' +
    jsonString(payload.role) +
    ',"isActive":' +
    (isTrue(payload.isActive) ? 'true' : 'false') +
    ',"action":"' +
    action +
    '"}'
  );
}

/**
 * The username in a body capture rendered (for the log lines), without parsing the
 * whole body. The first `"username":"` is the key itself: inside a JSON string a quote is always
 * escaped, so `":"` cannot occur in a value. Empty when absent.
 */
export function usernameOf(body: string): string {
  const marker = '"username":"';
  const start = body.indexOf(marker);
  if (start < 0) return '';
  let end = start + marker.length;
  let escaped = false;
  for (; end < body.length; end++) {
    const c = body.charCodeAt(end);
    if (c === 0x22) break;
    if (c === 0x5c) {
      escaped = true;
      end++; // the escaped character, a quote perhaps
    }
  }
  const raw = body.slice(start + marker.length, end);
  if (!escaped) return raw;
  try {
    return JSON.parse(`"${raw}"`) as string;
  } catch {
    return raw;
  }
}
