/**
 * The peer: graphile-worker 0.16, the job queue whose design suekk-sync's streams follow, set up
 * to do the same job as suekk-sync as fairly as we can:
 *   - the same receiver, the same body bytes (buildWebhookBody) and the same client
 *     (createWebhookSender: one undici Pool, keep-alive, the same headers, timeout and body read);
 *   - per-user order through `queue_name` = the user, the guarantee suekk-sync gives;
 *   - jobs added set-based (add_jobs), or by a trigger on users (add_job) for the latency run.
 * Its job payload carries what an outbox row carries: a webhook id, the action, the snapshot.
 */
import pg from 'pg';
import { Logger, run, runMigrations, type Runner, type Task } from 'graphile-worker';
import { buildWebhookBody, type WebhookAction } from '../../src/webhook/body.ts';
import { createWebhookSender } from '../../src/webhook/sender.ts';

/** graphile-worker logs every job at info; like the relay at 'warn', it keeps quiet here. */
export const silentGraphileLogger = new Logger(() => () => undefined);

export const PEER_TASK = 'deliver_user';

interface PeerJob {
  webhookId: string;
  action: WebhookAction;
  payload: Record<string, unknown>;
}

/** The snapshot the trigger puts in a job: the default mapping's payload, in SQL. */
const PAYLOAD_SQL = (r: string) => `json_build_object(
      'id', ${r}.id, 'email', ${r}.email, 'username', ${r}.username,
      'displayName', coalesce(nullif(trim(concat_ws(' ', ${r}.first_name, ${r}.last_name)), ''), ${r}.username),
      'avatar', ${r}.avatar, 'role', ${r}.role, 'isActive', ${r}.is_active)`;

/**
 * A trigger like suekk-sync's, enqueuing into graphile-worker instead: one job per changed row,
 * queued per user. (It skips suekk-sync's "did the payload change" test: the bench's writers only
 * make payload-changing updates.)
 */
export const PEER_TRIGGER_SQL = `
create function bench_enqueue_user() returns trigger language plpgsql as $$
begin
  perform graphile_worker.add_job(
    '${PEER_TASK}',
    json_build_object('webhookId', gen_random_uuid(), 'action', case tg_op when 'INSERT' then 'created' else 'updated' end, 'payload', ${PAYLOAD_SQL('new')}),
    queue_name := new.id::text);
  return null;
end $$;
create trigger bench_enqueue_user after insert or update on users
  for each row execute function bench_enqueue_user();
`;

/** graphile-worker's schema and the enqueuing trigger, for the peer's template database. */
export async function preparePeerDatabase(url: string): Promise<void> {
  await runMigrations({ connectionString: url, logger: silentGraphileLogger });
  const client = new pg.Client({ connectionString: url, application_name: 'suekk-bench setup' });
  await client.connect();
  try {
    await client.query(PEER_TRIGGER_SQL);
  } finally {
    await client.end();
  }
}

/**
 * Jobs for users u1…u<users>, `perUser` each, in the same order the suekk-sync drain captures its
 * events (every user's first change, then every user's second, …), in one add_jobs call per round.
 * `ordered` puts each user's jobs in the user's own queue.
 */
export async function prefillJobs(url: string, users: number, perUser: number, ordered: boolean): Promise<void> {
  const client = new pg.Client({ connectionString: url, application_name: 'suekk-bench setup' });
  await client.connect();
  try {
    for (let round = 0; round < perUser; round++) {
      await client.query(
        `select count(*) from graphile_worker.add_jobs(array(
           select row(
             $1::text,
             json_build_object('webhookId', gen_random_uuid(), 'action', case when $4::int = 0 then 'created' else 'updated' end,
               'payload', json_build_object('id', md5('u' || g)::uuid, 'email', 'u' || g || '@bench.test', 'username', 'u' || g,
                 'displayName', 'v' || $4::int || ' l', 'avatar', null, 'role', 'user', 'isActive', true)),
             case when $3::boolean then md5('u' || g)::uuid::text end,
             null, null, null, null, null)::graphile_worker.job_spec
           from generate_series(1, $2::int) g order by g))`,
        [PEER_TASK, users, ordered, round],
      );
    }
    await client.query('vacuum analyze graphile_worker._private_jobs');
    await client.query('vacuum analyze graphile_worker._private_job_queues');
  } finally {
    await client.end();
  }
}

export interface PeerWorker {
  runner: Runner;
  pool: pg.Pool;
  stop(): Promise<void>;
}

/** Starts graphile-worker's runner (its library API) with a task that POSTs like the relay does. */
export async function startPeer(
  url: string,
  receiverUrl: string,
  concurrency: number,
  poolSize: number,
): Promise<PeerWorker> {
  const sender = createWebhookSender({ url: receiverUrl, secrets: [], timeoutMs: 10_000, connections: concurrency });
  const task: Task = async (raw) => {
    const job = raw as PeerJob;
    const outcome = await sender.send({
      webhookId: `evt_${job.webhookId}`,
      body: buildWebhookBody(job.payload, job.action),
    });
    // A failure goes back to graphile-worker's own retry, as the relay's would go to its next round.
    if (outcome.kind !== 'delivered') throw new Error(outcome.error ?? `HTTP ${outcome.status}`);
  };
  const pool = new pg.Pool({ connectionString: url, max: poolSize, application_name: 'suekk-bench graphile-worker' });
  pool.on('error', () => undefined);
  const runner = await run({
    pgPool: pool,
    concurrency,
    noHandleSignals: true,
    pollInterval: 2_000,
    logger: silentGraphileLogger,
    taskList: { [PEER_TASK]: task },
  });
  return {
    runner,
    pool,
    async stop() {
      await runner.stop();
      await sender.close();
      await pool.end();
    },
  };
}

/** Jobs not yet completed (graphile-worker deletes a job when it succeeds). */
export async function jobsLeft(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ n: number }>('select count(*)::int as n from graphile_worker._private_jobs');
  return rows[0]!.n;
}
