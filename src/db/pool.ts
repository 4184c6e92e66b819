/** Connections to the auth database: the pool, transactions, and connection errors a person can act on. */
import pg from 'pg';
import { UsageError, WorkFailed } from '../errors.ts';

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;
/** What runs a statement: the pool, or a client inside a transaction. */
export type Queryable = Pick<Pool | PoolClient, 'query'>;

/**
 * Query parameters that can carry a secret. pg reads every parameter into its connection config,
 * so `?password=` works as well as `user:password@`, and `?sslpassword=` unlocks the client key;
 * the pattern also covers any such parameter a later pg or libpq adds.
 */
const SECRET_PARAMETER = /pass|secret|token/i;

/** The URL with its password, and every parameter that may hold a secret, replaced: for messages and logs. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    for (const name of new Set(parsed.searchParams.keys())) {
      if (SECRET_PARAMETER.test(name)) parsed.searchParams.set(name, '***');
    }
    return parsed.toString();
  } catch {
    return '<unparseable URL>';
  }
}

export interface PoolOptions {
  max?: number;
  applicationName?: string;
  /** Called for errors of idle connections (e.g. the server restarted); the pool replaces them. */
  onIdleError?: (err: Error) => void;
  /**
   * The relay's sessions: commits return before their WAL is flushed (`synchronous_commit=off`),
   * and no JIT: every statement is a short lookup, and one whose estimate crosses jit_above_cost
   * (statistics lagging behind a resync's million rows, say) would spend tens of milliseconds
   * compiling it.
   */
  relaySession?: boolean;
}

export function createPool(url: string, options: PoolOptions = {}): Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.max ?? 10,
    application_name: options.applicationName ?? 'suekk-sync',
    connectionTimeoutMillis: 10_000,
    ...(options.relaySession ? { options: '-c synchronous_commit=off -c jit=off' } : {}),
    // A connection the server killed must not crash the process: pg emits these on the pool.
  });
  pool.on('error', (err) => options.onIdleError?.(err));
  return pool;
}

/**
 * Ends the pool and waits until every connection is closed. pg's `end()` resolves as soon as it
 * has asked each connection to close, so a server stopped right after (as `dev` does) could still
 * find sessions open and terminate them.
 */
export async function closePool(pool: Pool, waitMs = 5_000): Promise<void> {
  let open = pool.totalCount;
  let timer: NodeJS.Timeout | undefined;
  const closed = new Promise<void>((resolve) => {
    if (open === 0) resolve();
    pool.on('remove', () => {
      if (--open <= 0) resolve();
    });
    // A connection that never confirms must not hold a stop up for good.
    timer = setTimeout(resolve, waitMs);
  });
  await pool.end();
  await closed;
  clearTimeout(timer);
}

const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'ECONNRESET',
  'EHOSTUNREACH',
  '57P01', // admin shutdown
  '57P03', // cannot connect now (starting up)
]);

/**
 * A suekk_sync schema, relation, function or column missing: the schema was dropped under a
 * running command (uninstall --drop-events) or replaced by another version's.
 */
const MISSING_OBJECT_CODES = new Set(['3F000', '42P01', '42883', '42703']);

export function isMissingObjectError(err: unknown): boolean {
  return MISSING_OBJECT_CODES.has((err as { code?: string } | undefined)?.code ?? '');
}

/** Whether an error means "the database is not there right now" rather than "the query is wrong". */
export function isConnectionError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: string }).code;
  if (code !== undefined && (UNREACHABLE_CODES.has(code) || code.startsWith('08'))) return true;
  return /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|connection is closed/i.test(
    err.message,
  );
}

/** Turns a failure to connect into one sentence that names the database (without its password). */
export function describeConnectError(err: unknown, url: string): Error {
  const e = err as { code?: string; message?: string };
  const where = redactUrl(url);
  if (e.code === '3D000') {
    return new UsageError(`The database in ${where} does not exist; create it or fix DATABASE_URL.`);
  }
  if (e.code === '28P01' || e.code === '28000') {
    return new UsageError(
      `The database at ${where} refused the login (${e.message}); fix the user or password in DATABASE_URL.`,
    );
  }
  return new WorkFailed(
    `Cannot reach the database at ${where} (${e.code ?? e.message}); check DATABASE_URL and that PostgreSQL is running.`,
  );
}

/** Connects once to fail fast with a readable message instead of on the first query. */
export async function checkConnection(pool: Pool, url: string): Promise<void> {
  try {
    const client = await pool.connect();
    client.release();
  } catch (err) {
    throw describeConnectError(err, url);
  }
}

export interface TransactionOptions {
  /** The statement that opens it, e.g. `begin isolation level repeatable read read only`. */
  begin?: string;
  /** Roll back even when the work succeeds: a dry run, or a check that must change nothing. */
  rollback?: boolean;
}

/** Runs `work` in a transaction on a client the caller holds (and may use after it). */
export async function inTransaction<T>(
  client: PoolClient,
  work: (client: PoolClient) => Promise<T>,
  options: TransactionOptions = {},
): Promise<T> {
  await client.query(options.begin ?? 'begin');
  try {
    const result = await work(client);
    await client.query(options.rollback ? 'rollback' : 'commit');
    return result;
  } catch (err) {
    await client.query('rollback').catch(() => undefined);
    throw err;
  }
}

/** Runs `work` in a transaction on a client of the pool. */
export async function withTransaction<T>(
  pool: Pool,
  work: (client: PoolClient) => Promise<T>,
  options: TransactionOptions = {},
): Promise<T> {
  const client = await pool.connect();
  try {
    return await inTransaction(client, work, options);
  } finally {
    client.release();
  }
}
