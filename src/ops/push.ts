/**
 * push: send a user's current state now, through the outbox, behind whatever of theirs is still
 * waiting (which becomes due now too). A parked user is refused: push never jumps a failed event.
 */
import { NOTIFY_CHANNEL } from '../db/schema.ts';
import type { Settings } from '../config.ts';
import { WorkFailed } from '../errors.ts';
import { withTransaction, type Pool } from '../db/pool.ts';
import { enqueueBatch } from '../db/enqueue.ts';
import type { Action } from '../db/schema.ts';
import { makeUsersDue, openEventsOf } from '../db/outbox-queries.ts';
import { ensureDelivery, type DeliveryHandle } from './inline-delivery.ts';
import {
  explainPending,
  settleTargets,
  type EventState,
  type Target,
  type Verdict,
  type WaitOptions,
} from './settle.ts';
import { installedSource, resolveUserRef } from '../db/source.ts';

export interface PushResult {
  userId: string;
  username: string;
  event: EventState;
  verdict: Verdict;
  /** The user's events that went (or tried to go) before this one. */
  ahead: { state: EventState; verdict: Verdict }[];
  delivery: 'relay' | 'inline' | 'none';
  /** The wait ended (time ran out, or interrupted) before every event had its round. */
  timedOut: boolean;
  /** Why each event that is not through yet still waits, by event id. */
  reasons: Map<string, string>;
}

export async function push(
  pool: Pool,
  settings: Settings,
  ref: string,
  options: WaitOptions & { action?: Action } = {},
): Promise<PushResult> {
  const source = await installedSource(pool);
  const user = await resolveUserRef(pool, source, ref);
  const { rows: parked } = await pool.query<{ parked: boolean }>(
    'select parked from suekk_sync.streams where user_id = $1',
    [user.userId],
  );
  if (parked[0]?.parked) {
    throw new WorkFailed(
      `User ${user.username || user.userId} is parked by a failed event; run \`suekk-sync retry --user ${user.userId}\` to send it again or \`suekk-sync skip --user ${user.userId}\` to drop it, then push.`,
    );
  }
  const wait = options.wait ?? true;
  // Before anything is written: a push that cannot be delivered changes nothing.
  const delivery: DeliveryHandle | undefined = wait
    ? await ensureDelivery(pool, settings, { onlyUsers: [user.userId] })
    : undefined;
  try {
    const targets = await withTransaction(pool, async (client) => {
      const batch = await enqueueBatch(client, source, {
        filter: { userIds: [user.userId] },
        limit: 1,
        action: options.action ?? null,
        eventSource: 'push',
        runId: null,
      });
      // "Sync this user now" means the whole stream of that user, in order: one waiting for its next
      // round goes now.
      await makeUsersDue(client, [user.userId], { unpark: false });
      await client.query('select pg_notify($1, $2)', [NOTIFY_CHANNEL, '']);
      const own = BigInt(batch.eventIds[0]!);
      return (await openEventsOf(client, [user.userId]))
        .filter((e) => BigInt(e.id) <= own)
        .map((e): Target => ({ id: e.id, roundsBefore: e.rounds }));
    });
    await delivery?.start();
    const settled = await settleTargets(pool, targets, delivery !== undefined, options);
    const { states, verdicts } = settled;
    const reasons = await explainPending(pool, states, verdicts);
    const event = states[states.length - 1]!;
    return {
      userId: user.userId,
      username: user.username,
      event,
      verdict: verdicts.get(event.id)!,
      ahead: states.slice(0, -1).map((state) => ({ state, verdict: verdicts.get(state.id)! })),
      delivery: delivery?.mode ?? 'none',
      timedOut: settled.timedOut,
      reasons,
    };
  } finally {
    await delivery?.stop();
  }
}
