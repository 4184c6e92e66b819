/**
 * Every setting in one typed place. Precedence: command-line flags, then environment, then the
 * config file (`--config`, default `./suekk-sync.json` when it exists), then the defaults below.
 */
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { z } from 'zod';
import { parseDuration, parseSchedule } from './duration.ts';
import { UsageError } from './errors.ts';

export const PAYLOAD_FIELDS = [
  'id',
  'email',
  'username',
  'displayName',
  'avatar',
  'role',
  'isActive',
] as const;
export type PayloadField = (typeof PAYLOAD_FIELDS)[number];

export interface SourceMapping {
  /** The users table, optionally schema-qualified; quote mixed-case parts as in SQL. */
  table: string;
  softDeleteColumn: string | null;
  updatedAtColumn: string | null;
  /** One SQL expression over the table's columns per payload field. */
  columns: Record<PayloadField, string>;
}

/** Fits a GORM-style users table, as in sql/examples/users.sql. */
export const DEFAULT_SOURCE: SourceMapping = {
  table: 'public.users',
  softDeleteColumn: 'deleted_at',
  updatedAtColumn: 'updated_at',
  columns: {
    id: 'id',
    email: 'email',
    username: 'username',
    displayName: "coalesce(nullif(trim(concat_ws(' ', first_name, last_name)), ''), username)",
    avatar: 'avatar',
    role: 'role',
    isActive: 'is_active',
  },
};

export interface RelaySettings {
  /** Bound on one attempt (connect to last byte). */
  timeoutMs: number;
  /** Attempts in one round. */
  maxAttempts: number;
  /** Wait before the second attempt of a round; doubles after each. */
  backoffMs: number;
  /** Waits between rounds; the last one repeats. */
  retryScheduleMs: number[];
  /** An event still failing this long after capture fails for good (parks its user). */
  giveUpAfterMs: number;
  /** Users delivered in parallel by one relay. */
  concurrency: number;
  /** Streams claimed (and completions written) per statement. */
  batchSize: number;
  /** Backstop poll when no notification arrives. */
  pollIntervalMs: number;
  /** How long a claim holds a user before another relay may take it. */
  leaseMs: number;
  /** Requests per second to the backend, 0 for no limit. */
  maxRps: number;
  /** How long delivered events are kept. */
  retentionMs: number;
  /** Upper bound on a honoured Retry-After. */
  retryAfterCapMs: number;
  /** Consecutive connection errors or 5xx that mean the backend is down. */
  breakerThreshold: number;
  /** While the backend looks down, how often a relay tries one waiting user's event to see whether it is back. */
  probeIntervalMs: number;
  /** Send a user's run of pending events as one call carrying the newest state (off: one call per change). */
  coalesce: boolean;
  /** Prometheus metrics, /healthz and /readyz; off when undefined. */
  metricsPort: number | undefined;
}

export const DEFAULT_RELAY: RelaySettings = {
  timeoutMs: 10_000,
  maxAttempts: 3,
  backoffMs: 1_000,
  retryScheduleMs: [30_000, 60_000, 300_000, 900_000, 3_600_000],
  giveUpAfterMs: 24 * 3_600_000,
  concurrency: 32,
  batchSize: 100,
  pollIntervalMs: 5_000,
  leaseMs: 30_000,
  maxRps: 0,
  retentionMs: 7 * 86_400_000,
  retryAfterCapMs: 30_000,
  breakerThreshold: 10,
  probeIntervalMs: 5_000,
  coalesce: false,
  metricsPort: undefined,
};

export interface Settings {
  databaseUrl: string | undefined;
  databaseListenUrl: string | undefined;
  backendSyncUrl: string | undefined;
  /** Raw `whsec_…` values; several while rotating. */
  webhookSecrets: string[];
  backendSyncToken: string | undefined;
  jwtSecret: string | undefined;
  /** Whose X-Forwarded-For the API believes (off when absent): everyone, or these addresses/CIDRs. */
  trustProxy?: boolean | string[];
  logLevel: string;
  source: SourceMapping;
  relay: RelaySettings;
  /** Where the settings came from, for messages. */
  configFile: string | undefined;
}

const duration = z.union([z.string(), z.number().nonnegative()]);
const positiveInt = z.number().int().positive();

const fileSchema = z.strictObject({
  $schema: z.string().optional(),
  databaseUrl: z.string().optional(),
  databaseListenUrl: z.string().optional(),
  backendSyncUrl: z.string().optional(),
  webhookSecret: z.union([z.string(), z.array(z.string())]).optional(),
  backendSyncToken: z.string().optional(),
  jwtSecret: z.string().optional(),
  trustProxy: z.union([z.boolean(), z.string(), z.array(z.string())]).optional(),
  logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).optional(),
  source: z
    .strictObject({
      table: z.string().min(1).optional(),
      softDeleteColumn: z.string().min(1).nullable().optional(),
      updatedAtColumn: z.string().min(1).nullable().optional(),
      columns: z
        .strictObject(
          Object.fromEntries(PAYLOAD_FIELDS.map((f) => [f, z.string().min(1).optional()])) as Record<
            PayloadField,
            z.ZodOptional<z.ZodString>
          >,
        )
        .optional(),
    })
    .optional(),
  relay: z
    .strictObject({
      timeoutMs: positiveInt.optional(),
      maxAttempts: positiveInt.optional(),
      backoffMs: z.number().int().nonnegative().optional(),
      retrySchedule: z.union([z.string(), z.array(duration)]).optional(),
      giveUpAfter: duration.optional(),
      concurrency: positiveInt.optional(),
      batchSize: positiveInt.optional(),
      pollIntervalMs: positiveInt.optional(),
      leaseMs: positiveInt.optional(),
      maxRps: z.number().nonnegative().optional(),
      retention: duration.optional(),
      retryAfterCap: duration.optional(),
      breakerThreshold: positiveInt.optional(),
      probeInterval: duration.optional(),
      coalesce: z.boolean().optional(),
      metricsPort: z.number().int().min(0).max(65535).optional(),
    })
    .optional(),
});
export type ConfigFile = z.infer<typeof fileSchema>;

/** What flags may set; the CLI fills only what the user typed. */
export interface FlagSettings {
  config?: string;
  databaseUrl?: string;
  backendSyncUrl?: string;
  webhookSecret?: string;
  backendSyncToken?: string;
  table?: string;
  relay?: Partial<Omit<RelaySettings, 'retryScheduleMs' | 'giveUpAfterMs' | 'retentionMs' | 'probeIntervalMs'>> & {
    retrySchedule?: string;
    giveUpAfter?: string;
    retention?: string;
    probeInterval?: string;
  };
}

export function readConfigFile(path: string | undefined, cwd: string): { file: ConfigFile; path?: string } {
  const explicit = path !== undefined;
  const full = resolve(cwd, path ?? 'suekk-sync.json');
  if (!existsSync(full)) {
    if (explicit) throw new UsageError(`Config file ${full} does not exist; fix --config or create it.`);
    return { file: {} };
  }
  let raw: unknown;
  const text = readFileSync(full, 'utf8');
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`Config file ${full} is not valid JSON (${describeJsonError(err as Error, text)}); fix the file.`);
  }
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const keyPath = issue.path.join('.');
    const where = keyPath === '' ? 'the top level' : `"${keyPath}"`;
    const detail =
      issue.code === 'unrecognized_keys'
        ? `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${[...issue.path, k].join('.')}"`).join(', ')}`
        : `${where}: ${issue.message}`;
    throw new UsageError(`Config file ${full} has an error at ${detail}; fix that key.`);
  }
  return { file: parsed.data, path: full };
}

/**
 * V8's JSON.parse message without the piece of the text it quotes: a config file holds secrets and
 * the database password, and the quote is exactly the text around the mistake. Where the message
 * gives a position (or the quote pins one down), it becomes a line and column instead.
 */
export function describeJsonError(err: Error, text: string): string {
  const firstLine = err.message.split('\n')[0]!;
  const quoted = /^(.*?), (?:(\.\.\.)?"(.*)"(?:\.\.\.)? is not valid JSON)$/s.exec(firstLine);
  let what = quoted ? quoted[1]! : firstLine.replace(/ (?:in JSON )?at position \d+.*$/, '');
  let position: number | undefined;
  const at = / at position (\d+)/.exec(firstLine);
  if (at) position = Number(at[1]);
  else if (quoted?.[2] !== undefined) {
    // V8 quotes ten characters either side of the offending one.
    const start = text.indexOf(quoted[3]!);
    if (start >= 0) position = start + 10;
  }
  // The offending character itself may be the first of a secret.
  what = what.replace(/^Unexpected token '.*'$/s, 'an unexpected character');
  if (position === undefined || position > text.length) return what;
  const before = text.slice(0, position);
  const line = before.split('\n').length;
  const column = position - before.lastIndexOf('\n');
  return `${what} at line ${line}, column ${column}`;
}

function splitSecrets(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  const list = Array.isArray(value) ? value : value.split(',');
  return list.map((s) => s.trim()).filter((s) => s !== '');
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value;
}

export function loadSettings(
  flags: FlagSettings = {},
  env: NodeJS.ProcessEnv = process.env,
  cwd: string = process.cwd(),
): Settings {
  const { file, path } = readConfigFile(flags.config, cwd);
  const fileRelay = file.relay ?? {};
  const flagRelay = flags.relay ?? {};
  const pick = <T>(...values: (T | undefined)[]): T | undefined => values.find((v) => v !== undefined);

  const relay: RelaySettings = {
    timeoutMs: pick(flagRelay.timeoutMs, fileRelay.timeoutMs) ?? DEFAULT_RELAY.timeoutMs,
    maxAttempts: pick(flagRelay.maxAttempts, fileRelay.maxAttempts) ?? DEFAULT_RELAY.maxAttempts,
    backoffMs: pick(flagRelay.backoffMs, fileRelay.backoffMs) ?? DEFAULT_RELAY.backoffMs,
    retryScheduleMs: (() => {
      const raw = pick<string | (string | number)[]>(flagRelay.retrySchedule, fileRelay.retrySchedule);
      return raw === undefined ? DEFAULT_RELAY.retryScheduleMs : parseSchedule(raw, 'retry schedule');
    })(),
    giveUpAfterMs: (() => {
      const raw = pick<string | number>(flagRelay.giveUpAfter, fileRelay.giveUpAfter);
      return raw === undefined ? DEFAULT_RELAY.giveUpAfterMs : parseDuration(raw, 'give-up-after');
    })(),
    concurrency: pick(flagRelay.concurrency, fileRelay.concurrency) ?? DEFAULT_RELAY.concurrency,
    batchSize: pick(flagRelay.batchSize, fileRelay.batchSize) ?? DEFAULT_RELAY.batchSize,
    pollIntervalMs:
      pick(flagRelay.pollIntervalMs, fileRelay.pollIntervalMs) ?? DEFAULT_RELAY.pollIntervalMs,
    leaseMs: pick(flagRelay.leaseMs, fileRelay.leaseMs) ?? DEFAULT_RELAY.leaseMs,
    maxRps: pick(flagRelay.maxRps, fileRelay.maxRps) ?? DEFAULT_RELAY.maxRps,
    retentionMs: (() => {
      const raw = pick<string | number>(flagRelay.retention, fileRelay.retention);
      return raw === undefined ? DEFAULT_RELAY.retentionMs : parseDuration(raw, 'retention');
    })(),
    retryAfterCapMs: (() => {
      const raw = fileRelay.retryAfterCap;
      return raw === undefined ? DEFAULT_RELAY.retryAfterCapMs : parseDuration(raw, 'retryAfterCap');
    })(),
    breakerThreshold:
      pick(flagRelay.breakerThreshold, fileRelay.breakerThreshold) ?? DEFAULT_RELAY.breakerThreshold,
    probeIntervalMs: (() => {
      const raw = pick<string | number>(flagRelay.probeInterval, fileRelay.probeInterval);
      return raw === undefined ? DEFAULT_RELAY.probeIntervalMs : parseDuration(raw, 'probe interval');
    })(),
    coalesce: pick(flagRelay.coalesce, fileRelay.coalesce) ?? DEFAULT_RELAY.coalesce,
    metricsPort: pick(flagRelay.metricsPort, fileRelay.metricsPort),
  };
  if (relay.leaseMs < 300) {
    throw new UsageError(`--lease-ms must be at least 300 (it is renewed every third), not ${relay.leaseMs}.`);
  }

  const fileSource = file.source ?? {};
  const source: SourceMapping = {
    table: flags.table ?? fileSource.table ?? DEFAULT_SOURCE.table,
    softDeleteColumn:
      fileSource.softDeleteColumn === undefined ? DEFAULT_SOURCE.softDeleteColumn : fileSource.softDeleteColumn,
    updatedAtColumn:
      fileSource.updatedAtColumn === undefined ? DEFAULT_SOURCE.updatedAtColumn : fileSource.updatedAtColumn,
    columns: { ...DEFAULT_SOURCE.columns, ...stripUndefined(fileSource.columns ?? {}) },
  };

  return {
    databaseUrl: nonEmpty(pick(flags.databaseUrl, env.DATABASE_URL, file.databaseUrl)),
    databaseListenUrl: nonEmpty(pick(env.DATABASE_LISTEN_URL, file.databaseListenUrl)),
    backendSyncUrl: nonEmpty(pick(flags.backendSyncUrl, env.BACKEND_SYNC_URL, file.backendSyncUrl)),
    webhookSecrets: splitSecrets(pick<string | string[]>(flags.webhookSecret, env.WEBHOOK_SECRET, file.webhookSecret)),
    backendSyncToken: nonEmpty(pick(flags.backendSyncToken, env.BACKEND_SYNC_TOKEN, file.backendSyncToken)),
    jwtSecret: nonEmpty(pick(env.JWT_SECRET, file.jwtSecret)),
    trustProxy: parseTrustProxy(pick<boolean | string | string[]>(env.TRUST_PROXY, file.trustProxy)),
    logLevel: pick(env.LOG_LEVEL, file.logLevel) ?? 'info',
    source,
    relay,
    configFile: path,
  };
}

// proxy-addr's names for ranges, besides addresses and CIDRs.
const PROXY_RANGES = new Set(['loopback', 'linklocal', 'uniquelocal']);

function isProxyAddress(entry: string): boolean {
  if (PROXY_RANGES.has(entry)) return true;
  const [address, bits, extra] = entry.split('/');
  const family = isIP(address!);
  if (family === 0 || extra !== undefined) return false;
  return bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128));
}

/** TRUST_PROXY / trustProxy: true, false, or addresses and CIDR ranges (a list, or comma-separated). */
export function parseTrustProxy(value: boolean | string | string[] | undefined): boolean | string[] | undefined {
  if (value === undefined || typeof value === 'boolean') return value;
  if (typeof value === 'string' && /^(true|false)$/i.test(value.trim())) return value.trim().toLowerCase() === 'true';
  const entries = (typeof value === 'string' ? value.split(',') : value).map((e) => e.trim()).filter((e) => e !== '');
  const bad = entries.find((e) => !isProxyAddress(e));
  if (bad !== undefined || entries.length === 0) {
    throw new UsageError(
      `trustProxy (TRUST_PROXY) must be true, false, or the proxy's addresses or CIDR ranges, not "${bad ?? ''}"; give the address your reverse proxy connects from.`,
    );
  }
  return entries;
}

function stripUndefined<T extends object>(obj: T): Partial<T> {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** The database URL or a usage error that says how to give one. */
export function requireDatabaseUrl(settings: Settings): string {
  const url = settings.databaseUrl;
  if (url === undefined) {
    throw new UsageError('No database given; set DATABASE_URL or pass --database-url.');
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError('DATABASE_URL is not a valid URL; use postgres://user@host:5432/dbname.');
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new UsageError(
      `DATABASE_URL must start with postgres:// or postgresql://, not ${parsed.protocol}//.`,
    );
  }
  return url;
}
