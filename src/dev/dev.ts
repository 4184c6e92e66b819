/**
 * `suekk-sync dev`: the whole loop on one machine, for a first look and for demos. An embedded
 * PostgreSQL (or --database-url) with the example users table and capture installed, the API
 * writing it, a relay delivering the changes, and a receiver printing each webhook it verifies.
 *
 * Everything it keeps lives in `./.suekk-sync/`: the database, and the generated secrets, so a
 * second run in the same folder carries on with the same users and the same tokens. Run as root
 * from a folder the database's own user cannot enter, the database lives in a staging folder
 * instead (staging.ts), named in the banner.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, relative } from 'node:path';
import { Writable } from 'node:stream';
import { createApiServer } from '../api/server.ts';
import { install } from '../capture/install.ts';
import { checkDatabaseUrl, DEFAULT_RELAY, DEFAULT_SOURCE, type Settings } from '../config.ts';
import { checkConnection, closePool, createPool, redactUrl } from '../db/pool.ts';
import { errorMessage, UsageError } from '../errors.ts';
import { createLogger } from '../logger.ts';
import { startRelay } from '../relay/start.ts';
import { generateSecret, parseSecrets } from '../webhook/signature.ts';
import { startEmbeddedPostgres, type EmbeddedPostgres } from './embedded.ts';
import { placeDataDir } from './staging.ts';
import { createReceiver, describeReceived } from './receiver.ts';

const USERS_SQL = new URL('../../sql/examples/users.sql', import.meta.url);
const HOST = '127.0.0.1';
const STATE_DIR = '.suekk-sync';
/** Printed last: from here on, stdout carries webhooks and warnings only. */
const READY_LINE = 'Waiting for webhooks (Ctrl-C stops everything):';

export interface DevOptions {
  /** The folder whose `.suekk-sync/` holds the database and the secrets. */
  cwd: string;
  /** 0 picks a free port. */
  apiPort: number;
  receiverPort: number;
  /** Another PostgreSQL instead of the embedded one. */
  databaseUrl?: string;
  /** Only read to say that DATABASE_URL is ignored. */
  env?: NodeJS.ProcessEnv;
  /** For the relay's and the API's logs; warnings by default, so their routine chatter stays out. */
  logLevel?: string;
  /** The banner, the webhooks and the warnings. */
  out?: NodeJS.WritableStream;
  /** Aborting while starting stops whatever already started; startDev then rejects. */
  signal?: AbortSignal;
  /** How the banner tells to run another command (default `suekk-sync`). */
  command?: string;
}

export interface DevSession {
  apiUrl: string;
  receiverUrl: string;
  /** Undefined with --database-url. */
  embedded: EmbeddedPostgres | undefined;
  /** Stops the API, the relay, the receiver, then PostgreSQL, in that order. */
  stop(): Promise<void>;
}

interface DevSecrets {
  webhookSecret: string;
  jwtSecret: string;
}

function loadOrCreateSecrets(stateDir: string): DevSecrets {
  const file = join(stateDir, 'secrets.json');
  if (existsSync(file)) {
    let saved: Partial<DevSecrets>;
    try {
      saved = JSON.parse(readFileSync(file, 'utf8')) as Partial<DevSecrets>;
    } catch {
      saved = {};
    }
    const usable =
      typeof saved.webhookSecret === 'string' &&
      typeof saved.jwtSecret === 'string' &&
      saved.jwtSecret.length >= 32 &&
      (() => {
        try {
          return parseSecrets(saved.webhookSecret).length === 1;
        } catch {
          return false;
        }
      })();
    if (!usable) {
      throw new UsageError(
        `${file} is damaged; delete it and dev makes new secrets (tokens issued before stop working).`,
      );
    }
    return saved as DevSecrets;
  }
  const secrets: DevSecrets = { webhookSecret: generateSecret(), jwtSecret: randomBytes(48).toString('base64url') };
  writeFileSync(file, `${JSON.stringify(secrets, null, 2)}\n`, { mode: 0o600 });
  return secrets;
}

/** Fails before the slow part (starting PostgreSQL) when a port is taken. */
function assertPortFree(port: number, flag: string): Promise<void> {
  if (port === 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) => reject(portError(port, flag, err)));
    server.listen(port, HOST, () => server.close(() => resolve()));
  });
}

function portError(port: number, flag: string, err: unknown): UsageError {
  const code = (err as NodeJS.ErrnoException).code;
  const why = code === 'EADDRINUSE' ? 'is already in use' : `cannot be used (${code ?? errorMessage(err)})`;
  return new UsageError(`Port ${port} (${flag}) ${why} on ${HOST}; choose another ${flag}.`);
}

function clock(): string {
  return new Date().toTimeString().slice(0, 8);
}

/**
 * A pino destination that prints each record as one readable line. pino writes one JSON record
 * per write; the relay's logger names levels, the API's numbers them.
 */
function readableLog(component: string, out: NodeJS.WritableStream): Writable {
  const names: Record<number, string> = {
    10: 'trace',
    20: 'debug',
    30: 'info',
    40: 'warning',
    50: 'error',
    60: 'fatal',
  };
  return new Writable({
    write(chunk: Buffer | string, _encoding, done) {
      for (const line of chunk.toString().split('\n')) {
        if (line.trim() === '') continue;
        try {
          const record = JSON.parse(line) as { level?: string | number; msg?: string; err?: { message?: string } };
          const level =
            typeof record.level === 'number'
              ? (names[record.level] ?? String(record.level))
              : record.level === 'warn'
                ? 'warning'
                : record.level;
          const err =
            record.err?.message !== undefined && !(record.msg ?? '').includes(record.err.message)
              ? ` (${record.err.message})`
              : '';
          out.write(`${clock()} ${component} ${level ?? 'log'}: ${record.msg ?? ''}${err}\n`);
        } catch {
          out.write(`${clock()} ${component}: ${line}\n`);
        }
      }
      done();
    },
  });
}

/** What the embedded server keeps under the temp folder because its user cannot reach it here. */
interface Staged {
  /** The project folder's staging folder, holding the database. */
  data?: string;
  /** The install's staging folder, holding a copy of the server's programs. */
  programs?: string;
  /** The first folder on the way that the server's user cannot enter. */
  blocked: string;
}

function stagedLines(staged: Staged | undefined): string[] {
  if (staged === undefined || (staged.data === undefined && staged.programs === undefined)) return [];
  return [
    `  staged    the postgres user the database runs as cannot enter ${staged.blocked}; kept for the next run:`,
    ...(staged.data === undefined ? [] : [`            the database in ${staged.data}`]),
    ...(staged.programs === undefined ? [] : [`            its programs in ${staged.programs}`]),
  ];
}

function banner(info: {
  apiUrl: string;
  receiverUrl: string;
  database: string;
  stateDir: string;
  embedded: boolean;
  staged: Staged | undefined;
  command: string;
}): string {
  const api = info.apiUrl;
  const json = "-H 'content-type: application/json'";
  const auth = '-H "authorization: Bearer $TOKEN"';
  const outbox = info.embedded
    ? `DATABASE_URL="$(cat ${info.stateDir}/database-url)" ${info.command} tail-log -f`
    : `DATABASE_URL=<the --database-url> ${info.command} tail-log -f`;
  return [
    '',
    'suekk-sync dev is running',
    `  database  ${info.database}`,
    `  API       ${api}`,
    `  receiver  ${info.receiverUrl} (verifying signatures)`,
    '  relay     delivering every change of public.users to the receiver',
    `  secrets   ${info.stateDir}/secrets.json (webhookSecret, jwtSecret), reused by the next run here`,
    ...stagedLines(info.staged),
    '',
    'Try it; each change arrives below as a signed webhook:',
    '',
    '  # register (→ created)',
    `  curl -s ${api}/api/v1/auth/register ${json} \\`,
    `    -d '{"email":"alice@example.com","username":"alice","password":"correct-horse","firstName":"Alice","lastName":"Liddell"}'`,
    '',
    '  # log in and keep the token',
    `  TOKEN=$(curl -s ${api}/api/v1/auth/login ${json} \\`,
    `    -d '{"username":"alice","password":"correct-horse"}' | sed -E 's/.*"token":"([^"]+)".*/\\1/')`,
    '',
    '  # get the profile',
    `  curl -s ${api}/api/v1/users/profile ${auth}`,
    '',
    '  # update the profile (→ updated)',
    `  curl -s -X PUT ${api}/api/v1/users/profile ${auth} ${json} -d '{"firstName":"Alicia"}'`,
    '',
    '  # delete the account (→ deleted)',
    `  curl -s -X DELETE ${api}/api/v1/users/profile ${auth}`,
    '',
    `  # the outbox, from another terminal`,
    `  ${outbox}`,
    '',
    READY_LINE,
    '',
  ].join('\n');
}

export async function startDev(options: DevOptions): Promise<DevSession> {
  const out = options.out ?? process.stdout;
  const env = options.env ?? process.env;
  const level = options.logLevel ?? 'warn';
  const { apiPort, receiverPort, signal } = options;
  if (apiPort !== 0 && apiPort === receiverPort) {
    throw new UsageError(`--api-port and --receiver-port are both ${apiPort}; give them different ports.`);
  }
  const databaseFlag =
    options.databaseUrl === undefined ? undefined : checkDatabaseUrl(options.databaseUrl, '--database-url');
  // Both loggers validate before anything starts, so a bad LOG_LEVEL costs nothing to clean up.
  const apiLogger = createLogger(level, readableLog('api', out));
  const relayLogger = createLogger(level, readableLog('relay', out));
  await assertPortFree(apiPort, '--api-port');
  await assertPortFree(receiverPort, '--receiver-port');

  if (databaseFlag === undefined && (env.DATABASE_URL ?? '') !== '') {
    out.write('DATABASE_URL is ignored: dev uses its own embedded PostgreSQL unless you pass --database-url.\n');
  }
  const stateDir = join(options.cwd, STATE_DIR);
  if (!existsSync(stateDir)) {
    mkdirSync(stateDir, { recursive: true });
    // Run as root, the embedded server's own user must pass through here; a strict umask would not let it.
    chmodSync(stateDir, 0o755);
  }
  const secrets = loadOrCreateSecrets(stateDir);
  const shownStateDir = relative(process.cwd(), stateDir) || '.';

  // What has started, stopped in reverse: API, relay, receiver, pool, then PostgreSQL.
  const started: (() => Promise<unknown>)[] = [];
  const stopAll = async () => {
    for (let next = started.pop(); next !== undefined; next = started.pop()) {
      await next().catch((err: unknown) => out.write(`${clock()} dev warning: while stopping: ${errorMessage(err)}\n`));
    }
  };
  try {
    let databaseUrl: string;
    let embedded: EmbeddedPostgres | undefined;
    let database: string;
    let staged: Staged | undefined;
    if (databaseFlag !== undefined) {
      databaseUrl = databaseFlag;
      database = redactUrl(databaseUrl);
    } else {
      const place = placeDataDir(options.cwd, join(stateDir, 'pgdata'));
      const pg = await startEmbeddedPostgres({ dataDir: place.dataDir });
      embedded = pg;
      started.push(() => pg.stop());
      const blocked = place.blocked ?? pg.stagedBinaries?.blocked;
      if (blocked !== undefined) staged = { data: place.stagedIn, programs: pg.stagedBinaries?.dir, blocked };
      databaseUrl = pg.url;
      const where = place.stagedIn === undefined ? `${shownStateDir}/pgdata` : place.dataDir;
      database = `embedded PostgreSQL in ${where}, on ${HOST}:${pg.port}`;
      // For other suekk-sync commands (tail-log, status, …) while dev runs; the port changes per run.
      const urlFile = join(stateDir, 'database-url');
      writeFileSync(urlFile, `${databaseUrl}\n`, { mode: 0o600 });
      started.push(() => Promise.resolve(rmSync(urlFile, { force: true })));
    }
    signal?.throwIfAborted();

    const pool = createPool(databaseUrl, {
      // The writer's application_name is recorded with every event, so tail-log shows the API.
      applicationName: 'suekk-sync api',
      onIdleError: (err) => apiLogger.warn(`database connection lost: ${errorMessage(err)}`),
    });
    started.push(() => closePool(pool));
    await checkConnection(pool, databaseUrl);
    await pool.query(readFileSync(USERS_SQL, 'utf8'));
    await install(pool, { source: DEFAULT_SOURCE });
    signal?.throwIfAborted();

    const webhookSecrets = parseSecrets(secrets.webhookSecret);
    const receiver = createReceiver({
      secrets: webhookSecrets,
      onEvent: (r) => out.write(`${clock()} ${describeReceived(r)}\n`),
    });
    const receiverUrl = await receiver.listen(receiverPort, HOST).catch((err: unknown) => {
      throw portError(receiverPort, '--receiver-port', err);
    });
    started.push(() => receiver.close());

    const settings: Settings = {
      databaseUrl,
      databaseListenUrl: undefined,
      backendSyncUrl: new URL(receiverUrl),
      webhookSecrets,
      backendSyncToken: undefined,
      jwtSecret: secrets.jwtSecret,
      logLevel: level,
      source: DEFAULT_SOURCE,
      relay: DEFAULT_RELAY,
      configFile: undefined,
    };
    const relay = await startRelay(settings, relayLogger);
    started.push(async () => {
      await relay.relay.stop();
      await relay.close();
    });
    signal?.throwIfAborted();

    const app = createApiServer({ pool, jwtSecret: secrets.jwtSecret, logger: apiLogger });
    let apiUrl: string;
    try {
      apiUrl = await app.listen({ port: apiPort, host: HOST });
    } catch (err) {
      await app.close().catch(() => undefined);
      throw portError(apiPort, '--api-port', err);
    }
    started.push(() => app.close());
    signal?.throwIfAborted();

    out.write(
      banner({
        apiUrl,
        receiverUrl,
        database,
        stateDir: shownStateDir,
        embedded: embedded !== undefined,
        staged,
        command: options.command ?? 'suekk-sync',
      }),
    );
    let stopping: Promise<void> | undefined;
    return {
      apiUrl,
      receiverUrl,
      embedded,
      stop: () => (stopping ??= stopAll()),
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
