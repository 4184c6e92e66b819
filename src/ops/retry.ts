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
import { ensureDelivery, type DeliveryHandle } from './inline-delivery.ts';
import {
  explainPending,
  judge,
  settleTargets,
  type EventState,
  type Target,
  type Verdict,
  type WaitOptions,
} from './settle.ts';
import { installedSource, resolveUserRef } from '../db/source.ts';

export type EventSelector = { allFailed: true } | { waiting: true } | { userRef: string } | { eventIds: string[] };

/** `12`, `evt_<uuid>` or `<uuid>` → event ids and webhook ids. */
function parseEventRefs(refs: string[]): { ids: string[]; webhookIds: string[] } {
  const ids: string[] = [];
  const webhookIds: string[] = [];
  for (const ref of refs) {
    const bare = ref.startsWith('evt_') ? ref.slice(4) : ref;
    if (/^\d+$/.test(bare)) ids.push(bare);
    else if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(bare))
      webhookIds.push(bare.toLowerCase());
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
    const found = new Set(events.flatMap((e) => [e.id, e.webhookId.slice(4).toLowerCase()]));
    const missing = selector.eventIds.filter(
      (ref) => !found.has((ref.startsWith('evt_') ? ref.slice(4) : ref).toLowerCase()),
    );
    if (missing.length > 0) {
      throw new UsageError(
        `There is no event ${missing.join(', ')}; find event ids with \`suekk-sync tail-log\` (add --user <ref> or --status failed to narrow it down).`,
      );
    }
  }
  return events.filter((e) => statuses.includes(e.status));
}

export interface RetryResult {
  /** The users' open events, in order: the ones selected and those queued behind them, which go too. */
  events: { state: EventState; verdict: Verdict }[];
  users: number;
  delivery: 'relay' | 'inline' | 'none';
  /** The wait ended (time ran out, or interrupted) before every event had its round. */
  timedOut: boolean;
  /** Why each event that is not through yet still waits, by event id. */
  reasons: Map<string, string>;
  /** Nothing was selected: why, in a sentence. */
  nothing?: string;
}

/**
 * A user's stream is retried whole: its held-back head goes again, then its later events in order.
 * So the dry run and the run select the same users and count the same events: every open event of
 * each user that has a selected event.
 */
export async function retry(
  pool: Pool,
  settings: Settings,
  selector: EventSelector,
  options: WaitOptions & { dryRun?: boolean } = {},
): Promise<RetryResult> {
  const chosen = await selectEvents(pool, selector, ['failed', 'pending']);
  const users = [...new Set(chosen.map((e) => e.userId))];
  if (users.length === 0) {
    const nothing =
      'eventIds' in selector
        ? `Nothing to retry: ${(await selectEvents(pool, selector, ['delivered', 'skipped', 'superseded'])).map((e) => `${e.webhookId} is ${e.status}`).join(', ')}.`
        : 'userRef' in selector
          ? `Nothing to retry: ${selector.userRef} has no failed or pending events.`
          : 'waiting' in selector
            ? 'Nothing to retry: no user waits for a later round.'
            : 'Nothing to retry: no event failed, and no user waits for a later round.';
    return { events: [], users: 0, delivery: 'none', timedOut: false, reasons: new Map(), nothing };
  }
  if (options.dryRun) {
    const open = await openEventsOf(pool, users);
    // As they stand: a failed or waiting head, and the events behind it.
    const verdicts = judge(
      open.map((e) => ({ id: e.id, roundsBefore: 0 })),
      open,
    );
    return {
      events: open.map((state) => ({ state, verdict: verdicts.get(state.id)! })),
      users: users.length,
      delivery: 'none',
      timedOut: false,
      reasons: await explainPending(pool, open, verdicts),
    };
  }
  const wait = options.wait ?? true;
  // Before anything is written: a retry that cannot be delivered changes nothing.
  const delivery: DeliveryHandle | undefined = wait
    ? await ensureDelivery(pool, settings, { onlyUsers: users })
    : undefined;
  try {
    const targets = await withTransaction(pool, async (client) => {
      await makeUsersDue(client, users, { unpark: true });
      await client.query('select pg_notify($1, $2)', [NOTIFY_CHANNEL, '']);
      return (await openEventsOf(client, users)).map((e): Target => ({ id: e.id, roundsBefore: e.rounds }));
    });
    await delivery?.start();
    const settled = await settleTargets(pool, targets, delivery !== undefined, options);
    const { states, verdicts } = settled;
    return {
      events: states.map((state) => ({ state, verdict: verdicts.get(state.id)! })),
      users: users.length,
      delivery: delivery?.mode ?? 'none',
      timedOut: settled.timedOut,
      reasons: await explainPending(pool, states, verdicts),
    };
  } finally {
    await delivery?.stop();
  }
}

export interface SkipResult {
  skipped: EventState[];
  unparked: string[];
  /**
   * Each skipped user's next pending event, now the head of its stream and sent next (undefined
   * when nothing else is pending): if the backend rejects it too, the user is parked again.
   */
  next: Map<string, EventState | undefined>;
}

export async function skip(pool: Pool, selector: { userRef: string } | { eventIds: string[] }): Promise<SkipResult> {
  const failed = await selectEvents(pool, selector, ['failed']);
  if (failed.length === 0) {
    if ('eventIds' in selector) {
      const any = await selectEvents(pool, selector, ['pending', 'delivered', 'skipped', 'superseded']);
      throw new UsageError(
        `Only failed events can be skipped; ${any.map((e) => `${e.webhookId} is ${e.status}`).join(', ')}.`,
      );
    }
    return { skipped: [], unparked: [], next: new Map() };
  }
  const { users, open } = await withTransaction(pool, async (client) => {
    // Due at once when more waits: the relay finds the user's later events.
    const unparked = await skipFailed(
      client,
      failed.map((e) => e.id),
    );
    await client.query('select pg_notify($1, $2)', [NOTIFY_CHANNEL, '']);
    return { users: unparked, open: await openEventsOf(client, [...new Set(failed.map((e) => e.userId))]) };
  });
  const next = new Map<string, EventState | undefined>();
  for (const e of failed)
    next.set(
      e.userId,
      open.find((o) => o.userId === e.userId),
    );
  return { skipped: failed.map((e) => ({ ...e, status: 'skipped' as const })), unparked: users, next };
}
