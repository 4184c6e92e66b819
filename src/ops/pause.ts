/**
 * `pause` / `resume`: one switch in suekk_sync.state that every relay obeys. The NOTIFY makes
 * listening relays react at once; the others read the switch with their next heartbeat (5 s), and
 * the claim query checks it too, so no relay claims a new user once the switch has committed.
 */
import type { Pool } from '../db/pool.ts';
import { withTransaction } from '../db/pool.ts';
import { requireSchema } from '../db/migrations.ts';
import { NOTIFY_CHANNEL, RELAY_ALIVE_SECONDS } from '../db/schema.ts';
import { queueGauges } from '../db/outbox-queries.ts';

export interface PauseResult {
  paused: boolean;
  /** False when the switch already was in that position. */
  changed: boolean;
  /** Pending events (they keep being captured while paused). */
  backlog: number;
  relaysAlive: number;
}

export async function setPaused(pool: Pool, paused: boolean): Promise<PauseResult> {
  return withTransaction(pool, async (client) => {
    await requireSchema(client);
    const { rows } = await client.query<{ was: boolean }>('select paused as was from suekk_sync.state for update');
    const changed = rows[0]!.was !== paused;
    if (changed) {
      await client.query('update suekk_sync.state set paused = $1', [paused]);
      // Delivered at commit, so a relay never hears of a switch that rolled back.
      await client.query('select pg_notify($1, $2)', [NOTIFY_CHANNEL, paused ? 'pause' : 'resume']);
    }
    const { rows: counts } = await client.query<{ alive: number }>(
      `select count(*)::int as alive from suekk_sync.relays where heartbeat_at > now() - make_interval(secs => $1)`,
      [RELAY_ALIVE_SECONDS],
    );
    const { backlog } = await queueGauges(client);
    return { paused, changed, backlog, relaysAlive: counts[0]!.alive };
  });
}
