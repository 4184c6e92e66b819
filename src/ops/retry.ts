/**
 * retry: failed events, and events waiting for their next round, become due now, in order, with
 * their original webhook-id; then wait until each has had one round. skip: a failed event the
 * backend will never accept is marked skipped and its user un-parked.
 */
import { NOTIFY_CHANNEL } from '../capture/generate.ts';
import type { Settings } from '../config.ts';
import { UsageError } from '../errors.ts';
import { withTransaction, type Pool } from '../db/pool.ts';
import { ensureDelivery } from './inline-delivery.ts';
import { eventStates, waitForFirstRound, type EventState, type Verdict } from './settle.ts';
import { installedSource, resolveUserRef } from './source.ts';

export type EventSelector = { allFailed: true } | { userRef: string } | { eventIds: string[] };

/** `12`, `evt_<uuid>` or `<uuid>` → a condition on suekk_sync.events. */
function eventIdCondition(refs: string[]): { sql: string; values: unknown[] } {
  const numeric: string[] = [];
  const uuids: string[] = [];
  for (const ref of refs) {
    const bare = ref.startsWith('evt_') ? ref.slice(4) : ref;
    if (/^\d+$/.test(bare)) numeric.push(bare);
    else if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(bare)) uuids.push(bare);
    else throw new UsageError(`"${ref}" is not an event id; use the number or the evt_<uuid> that tail-log shows.`);
  }
  return { sql: '(id = any($1::bigint[]) or webhook_id = any($2::uuid[]))', values: [numeric, uuids] };
}

async function selectEvents(pool: Pool, selector: EventSelector, statuses: string[]): Promise<EventState[]> {
  let where: string;
  let values: unknown[];
  if ('allFailed' in selector) {
    // Every event held back by a failure: failed ones, and those waiting for their next round.
    where = "(status = 'failed' or (status = 'pending' and rounds > 0))";
    values = [];
  } else if ('userRef' in selector) {
    const user = await resolveUserRef(pool, await installedSource(pool), selector.userRef);
    where = 'user_id = $1';
    values = [user.userId];
  } else {
    ({ sql: where, values } = eventIdCondition(selector.eventIds));
  }
  values.push(statuses);
  // events.id, not the text "id" of the output: capture order is numeric.
  const { rows } = await pool.query<{ id: string }>(
    `select id::text from suekk_sync.events where ${where} and status = any($${values.length}::text[]) order by events.id`,
    values,
  );
  return eventStates(pool, rows.map((r) => r.id));
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
    const { rows } = await client.query<{ id: string; rounds: number }>(
      `update suekk_sync.events set status = 'pending', next_attempt_at = now()
        where user_id = any($1::text[]) and status in ('failed', 'pending')
        returning id::text, rounds`,
      [users],
    );
    await client.query(
      'update suekk_sync.streams set parked = false, next_attempt_at = now() where user_id = any($1::text[])',
      [users],
    );
    await client.query('select pg_notify($1, $2)', [NOTIFY_CHANNEL, '']);
    return rows.map((r) => ({ id: r.id, roundsBefore: r.rounds })).sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1));
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
  const users = [...new Set(failed.map((e) => e.userId))];
  await withTransaction(pool, async (client) => {
    await client.query(
      "update suekk_sync.events set status = 'skipped' where id = any($1::bigint[]) and status = 'failed'",
      [failed.map((e) => e.id)],
    );
    // Due now: the relay finds the user's later events, or nothing and marks the stream idle.
    await client.query(
      `update suekk_sync.streams s set parked = false, next_attempt_at = now()
        where user_id = any($1::text[])
          and not exists (select 1 from suekk_sync.events e where e.user_id = s.user_id and e.status = 'failed')`,
      [users],
    );
    await client.query('select pg_notify($1, $2)', [NOTIFY_CHANNEL, '']);
  });
  return { skipped: failed.map((e) => ({ ...e, status: 'skipped' as const })), unparked: users };
}
