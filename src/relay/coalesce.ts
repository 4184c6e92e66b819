/**
 * Coalescing (`relay --coalesce`): a user's run of pending events goes out as one call carrying the
 * newest state, under the newest event's webhook-id. created + updated… is one `created`,
 * updated… one `updated`, a run ending in a delete one `deleted`. A run never reaches past a
 * `deleted` that a `created` follows (a restore): the backend must see the user go and come back.
 */
import type { WebhookAction } from '../webhook/body.ts';

interface Captured {
  action: WebhookAction;
  body: string;
}

/** How many of `events` (in capture order) go in the call at their head: at least one. */
export function runLength(events: readonly Captured[]): number {
  let n = 1;
  while (n < events.length && !(events[n - 1]!.action === 'deleted' && events[n]!.action === 'created')) n++;
  return n;
}

/** The action a run's call carries. */
export function runAction(run: readonly Captured[]): WebhookAction {
  if (run.at(-1)!.action === 'deleted') return 'deleted';
  return run[0]!.action === 'created' ? 'created' : 'updated';
}

const ACTION_KEY = ',"action":"';

/**
 * A stored body with another action: capture renders `action` last, so it is replaced at the end
 * without parsing the rest.
 */
export function withAction(body: string, action: WebhookAction): string {
  const at = body.lastIndexOf(ACTION_KEY);
  if (at < 0 || !body.endsWith('"}')) throw new TypeError('a body capture rendered ends with its action');
  return `${body.slice(0, at)}${ACTION_KEY}${action}"}`;
}
