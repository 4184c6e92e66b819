/**
 * retry: failed events, and events waiting for their next round, become due now, in order, with
 * their original webhook-id; then wait until each has had one round. skip: a failed event the
 * backend will never accept is marked skipped and its user un-parked.
 */
import { NOTIFY_CHANNEL } from '../db/schema.ts';
import type { Settings } from '../config.ts';
import { UsageError } from '../errors.ts';
import { withTransaction, type Pool } from '../db/pool.ts';
import { findEvents, heldBackEvents, makeUsersDue, openEventsOf, skipFailed } from '../db/outbox-queries.ts';
import { ensureDelivery } from './inline-delivery.ts';
import { waitForFirstRound, type EventState, type Verdict } from './settle.ts';
import { installedSource, resolveUserRef } from './source.ts';

export type EventSelector = { allFailed: true } | { waiting: true } | { userRef: string } | { eventIds: string[] };

/** `12`, `evt_<uuid>` or `<uuid>` → event ids and webhook ids. */
function parseEventRefs(refs: string[]): { ids: string[]; webhookIds: string[] } {
  const ids: string[] = [];
  const webhookIds: string[] = [];
  for (const ref of refs) {
    const bare = ref.startsWith('evt_') ? ref.slice(4) : ref;
    if (/^\d+$/.test(bare)) ids.push(bare);
    else if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(bare)) webhookIds.push(bare.toLowerCase());
    else throw new UsageError(`"${ref}" is not an event id; use the number or the evt_<uuid> that tail-log shows.`);
  }
  return { ids, webhookIds };
}

async function selectEvents(pool: Pool, selector: EventSelector, statuses: string[]): Promise<EventState[]> {
  let events: EventState[];
  if ('allFailed' in selector) {
    // Every event held back by a failure: failed ones, and those waiting for their next round.
    events = await heldBackEvents(pool);
  } else if ('waiting' in selector) {
    // Only those waiting for a later round: an operator who knows the backend is back.
    events = (await heldBackEvents(pool)).filter((e) => e.status === 'pending');
  } else if ('userRef' in selector) {
    const user = await resolveUserRef(pool, await installedSource(pool), selector.userRef);
    events = await openEventsOf(pool, [user.userId]);
  } else {
    const { ids, webhookIds } = parseEventRefs(selector.eventIds);
    events = await findEvents(pool, ids, webhookIds);
  }
  return events.filter((e) => statuses.includes(e.status));
}

export interface RetryResult {
  events: { state: EventState; verdict: Verdict }[];
  delivery: 'relay' | 'inline' | 'none';
}

export async function retry(
  pool: Pool,
  settings: Settings,
  selector: EventSelector,
  options: { dryRun?: boolean; signal?: AbortSignal } = {},
): Promise<RetryResult> {
  const chosen = await selectEvents(pool, selector, ['failed', 'pending']);
  // A user's stream is retried whole: its pending events go right after the failed one.
  const users = [...new Set(chosen.filter((e) => e.status === 'failed' || e.rounds > 0).map((e) => e.userId))];
  if (users.length === 0 || options.dryRun) {
    return { events: chosen.map((state) => ({ state, verdict: state.status === 'failed' ? 'failed' : 'waiting' })), delivery: 'none' };
  }
  const targets = await withTransaction(pool, async (client) => {
    await makeUsersDue(client, users, { unpark: true });
    await client.query('select pg_notify($1, $2)', [NOTIFY_CHANNEL, '']);
    return (await openEventsOf(client, users)).map((e) => ({ id: e.id, roundsBefore: e.rounds }));
  });
  const delivery = await ensureDelivery(pool, settings);
  try {
    const { states, verdicts } = await waitForFirstRound(pool, targets, { signal: options.signal });
    return { events: states.map((state) => ({ state, verdict: verdicts.get(state.id)! })), delivery: delivery.mode };
  } finally {
    await delivery.stop();
  }
}

export interface SkipResult {
  skipped: EventState[];
  unparked: string[];
}

export async function skip(pool: Pool, selector: { userRef: string } | { eventIds: string[] }): Promise<SkipResult> {
  const failed = await selectEvents(pool, selector, ['failed']);
  if (failed.length === 0) {
    if ('eventIds' in selector) {
      const any = await selectEvents(pool, selector, ['pending', 'delivered', 'skipped']);
      if (any.length > 0) {
        throw new UsageError(
          `Only failed events can be skipped; ${any.map((e) => `${e.webhookId} is ${e.status}`).join(', ')}.`,
        );
      }
      throw new UsageError(`No event matches ${selector.eventIds.join(', ')}; check the ids with \`suekk-sync tail-log --status failed\`.`);
    }
    return { skipped: [], unparked: [] };
  }
  const users = await withTransaction(pool, async (client) => {
    // Due at once when more waits: the relay finds the user's later events.
    const unparked = await skipFailed(client, failed.map((e) => e.id));
    await client.query('select pg_notify($1, $2)', [NOTIFY_CHANNEL, '']);
    return unparked;
  });
  return { skipped: failed.map((e) => ({ ...e, status: 'skipped' as const })), unparked: users };
}
