/**
 * Every setting in one typed place. Precedence: command-line flags, then environment, then the
 * config file (`--config`, default `./suekk-sync.json` when it exists), then the defaults below.
 */
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { isAbsolute, relative, resolve } from 'node:path';
import { z } from 'zod';
import { formatDuration, parseDuration, parseSchedule } from './duration.ts';
import { UsageError } from './errors.ts';
import { parseBackendUrl } from './webhook/backend-url.ts';
import { parseSecrets, type WebhookSecret } from './webhook/signature.ts';

/** pino's levels, and silent. */
const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

export const PAYLOAD_FIELDS = ['id', 'email', 'username', 'displayName', 'avatar', 'role', 'isActive'] as const;
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

/**
 * Every setting, checked once here where it is known which flag, variable or config key gave it,
 * so the code that uses a setting trusts it and never parses it again.
 */
export interface Settings {
  /** A postgres:// or postgresql:// URL. */
  databaseUrl: string | undefined;
  databaseListenUrl: string | undefined;
  /** The backend's sync endpoint: http(s), without credentials. */
  backendSyncUrl: URL | undefined;
  /** The signing secrets; several while rotating. */
  webhookSecrets: WebhookSecret[];
  backendSyncToken: string | undefined;
  jwtSecret: string | undefined;
  /** Whose X-Forwarded-For the API believes (off when absent): everyone, or these addresses/CIDRs. */
  trustProxy?: boolean | string[];
  /** One of pino's levels, or silent. */
  logLevel: string;
  source: SourceMapping;
  relay: RelaySettings;
  /** Where the settings came from, for messages. */
  configFile: string | undefined;
  /** Where each connection setting was given, as the operator wrote it (see settingSource). */
  sources?: Partial<Record<SourcedSetting, string>>;
}

/** The settings a flag, an environment variable and the config file can all give. */
export type SourcedSetting =
  'databaseUrl' | 'databaseListenUrl' | 'backendSyncUrl' | 'webhookSecret' | 'backendSyncToken' | 'jwtSecret';

const ENV_NAMES: Record<SourcedSetting, string> = {
  databaseUrl: 'DATABASE_URL',
  databaseListenUrl: 'DATABASE_LISTEN_URL',
  backendSyncUrl: 'BACKEND_SYNC_URL',
  webhookSecret: 'WEBHOOK_SECRET',
  backendSyncToken: 'BACKEND_SYNC_TOKEN',
  jwtSecret: 'JWT_SECRET',
};

const FLAG_NAMES: Partial<Record<SourcedSetting, string>> = {
  databaseUrl: '--database-url',
  backendSyncUrl: '--url',
  webhookSecret: '--secret',
  backendSyncToken: '--token',
};

/**
 * What a message about a setting calls it: the flag (`--secret`), the environment variable
 * (`WEBHOOK_SECRET`) or the key and its file (`webhookSecret in ./suekk-sync.json`), whichever the
 * value came from, so the operator fixes the place they actually set it. The variable when unset.
 */
export function settingSource(settings: Pick<Settings, 'sources'>, name: SourcedSetting): string {
  return settings.sources?.[name] ?? ENV_NAMES[name];
}

/** A config file as a person would name it: relative to the working folder when inside it. */
function displayPath(full: string, cwd: string = process.cwd()): string {
  const rel = relative(cwd, full);
  return rel === '' || rel.startsWith('..') || isAbsolute(rel) ? full : `./${rel}`;
}

/** The shortest lease a relay takes a user for; a claim is renewed every third of it. */
export const MIN_LEASE_MS = 300;

const DURATION_HINT = 'a duration such as 500ms, 30s, 5m, 24h or 7d';

/**
 * A time in the file: a number of milliseconds or a duration string, made milliseconds here. The
 * message never repeats the value: a misplaced secret would be printed with it.
 */
function durationSchema(min = 0, hint = `${DURATION_HINT}, or a number of milliseconds`) {
  return z.union([z.number(), z.string()]).transform((value, ctx) => {
    let ms: number;
    try {
      ms = Math.round(parseDuration(value, 'value'));
    } catch {
      ctx.addIssue({ code: 'custom', message: `must be ${hint}` });
      return z.NEVER;
    }
    if (ms < min) {
      ctx.addIssue({ code: 'custom', message: `must be at least ${formatDuration(min)}` });
      return z.NEVER;
    }
    return ms;
  });
}

const scheduleSchema = z.union([z.string(), z.array(z.union([z.number(), z.string()]))]).transform((value, ctx) => {
  try {
    return parseSchedule(value, 'value');
  } catch {
    ctx.addIssue({
      code: 'custom',
      message: `must be one or more durations such as 30s, 1m, 5m (a list, or comma-separated)`,
    });
    return z.NEVER;
  }
});

const positiveInt = z.number().int().positive();

/**
 * A mapped field: an SQL expression, or null for a table without such a column (the field is
 * then sent as "" — false for isActive). The string "null" says the same.
 */
const fieldSchema = (field: PayloadField) =>
  field === 'id'
    ? z.string({ error: 'must be an SQL expression: the id is how the backend knows the user' }).min(1).optional()
    : z.string().min(1).nullable().optional();

const fileSchema = z.strictObject({
  $schema: z.string().optional(),
  databaseUrl: z.string().optional(),
  databaseListenUrl: z.string().optional(),
  backendSyncUrl: z.string().optional(),
  webhookSecret: z.union([z.string(), z.array(z.string())]).optional(),
  backendSyncToken: z.string().optional(),
  jwtSecret: z.string().optional(),
  trustProxy: z.union([z.boolean(), z.string(), z.array(z.string())]).optional(),
  logLevel: z.enum(LOG_LEVELS).optional(),
  source: z
    .strictObject({
      table: z.string().min(1).optional(),
      softDeleteColumn: z.string().min(1).nullable().optional(),
      updatedAtColumn: z.string().min(1).nullable().optional(),
      columns: z
        .strictObject(
          Object.fromEntries(PAYLOAD_FIELDS.map((f) => [f, fieldSchema(f)])) as {
            [F in PayloadField]: ReturnType<typeof fieldSchema>;
          },
        )
        .optional(),
    })
    .optional(),
  relay: z
    .strictObject({
      timeoutMs: durationSchema(1).optional(),
      maxAttempts: positiveInt.optional(),
      backoffMs: durationSchema(0).optional(),
      retrySchedule: scheduleSchema.optional(),
      giveUpAfter: durationSchema(0, DURATION_HINT).optional(),
      concurrency: positiveInt.optional(),
      batchSize: positiveInt.optional(),
      pollIntervalMs: durationSchema(10).optional(),
      leaseMs: durationSchema(MIN_LEASE_MS).optional(),
      maxRps: z.number().nonnegative().optional(),
      retention: durationSchema(0, DURATION_HINT).optional(),
      retryAfterCap: durationSchema(0, DURATION_HINT).optional(),
      breakerThreshold: positiveInt.optional(),
      probeInterval: durationSchema(0, DURATION_HINT).optional(),
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
  /** Times in milliseconds; the four taking a duration also take its text (`30s`, `30s,1m`). */
  relay?: Partial<Omit<RelaySettings, 'retryScheduleMs' | 'giveUpAfterMs' | 'retentionMs' | 'probeIntervalMs'>> & {
    retrySchedule?: string | number[];
    giveUpAfter?: string | number;
    retention?: string | number;
    probeInterval?: string | number;
  };
}

function readConfigFile(path: string | undefined, cwd: string): { file: ConfigFile; path?: string } {
  const explicit = path !== undefined;
  const full = resolve(cwd, path ?? 'suekk-sync.json');
  const shown = displayPath(full, cwd);
  if (!existsSync(full)) {
    if (explicit) throw new UsageError(`Config file ${shown} does not exist; fix --config or create it.`);
    return { file: {} };
  }
  let raw: unknown;
  const text = readFileSync(full, 'utf8');
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new UsageError(
      `Config file ${shown} is not valid JSON (${describeJsonError(err as Error, text)}); fix the file.`,
    );
  }
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const keyPath = issue.path.join('.');
    const where = keyPath === '' ? 'the top level' : `"${keyPath}"`;
    let detail: string;
    if (issue.code === 'unrecognized_keys') {
      const parent = issue.path.map(String);
      const named = issue.keys.map((k) => `"${[...parent, k].join('.')}"`).join(', ');
      const suggestion = issue.keys.length === 1 ? suggestKey(parent, issue.keys[0]!) : undefined;
      detail = `unknown key${issue.keys.length > 1 ? 's' : ''} ${named}${suggestion === undefined ? '' : ` (did you mean "${suggestion}"?)`}`;
    } else {
      detail = `${where}: ${issue.message}`;
    }
    throw new UsageError(`Config file ${shown} has an error at ${detail}; fix that key.`);
  }
  return { file: parsed.data, path: full };
}

/** The keys an object of the file schema takes, by their path from the top. */
function keyPaths(schema: z.ZodType = fileSchema, prefix: string[] = []): string[][] {
  let inner: z.ZodType = schema;
  while (inner instanceof z.ZodOptional || inner instanceof z.ZodNullable) inner = inner.unwrap() as z.ZodType;
  if (!(inner instanceof z.ZodObject)) return [];
  return Object.entries(inner.shape as Record<string, z.ZodType>).flatMap(([key, child]) => [
    [...prefix, key],
    ...keyPaths(child, [...prefix, key]),
  ]);
}

/**
 * The known key an unknown one was probably meant to be: the closest by edit distance among its
 * siblings, or the same name under another object (`timeoutMs` at the top for `relay.timeoutMs`).
 */
function suggestKey(parent: string[], key: string): string | undefined {
  const all = keyPaths();
  const fold = (k: string) => k.toLowerCase().replace(/[-_]/g, '');
  const siblings = all.filter((p) => p.length === parent.length + 1 && parent.every((part, i) => p[i] === part));
  let best: { path: string[]; distance: number } | undefined;
  for (const path of siblings) {
    // The unit is what people leave off: `timeout` is as near `timeoutMs` as a typo of it.
    const name = fold(path.at(-1)!);
    const distance = Math.min(editDistance(fold(key), name), editDistance(fold(key), name.replace(/ms$/, '')));
    if (distance <= Math.max(1, Math.floor(key.length / 3)) && (best === undefined || distance < best.distance)) {
      best = { path, distance };
    }
  }
  const elsewhere = all.find((p) => fold(p.at(-1)!) === fold(key));
  const found = best?.path ?? elsewhere;
  return found?.join('.');
}

/** Levenshtein distance, with a swap of two neighbouring letters counting as one edit. */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * V8's JSON.parse message without the piece of the text it quotes: a config file holds secrets and
 * the database password, and the quote is exactly the text around the mistake. Where the message
 * gives a position (or the quote pins one down), it becomes a line and column instead.
 */
function describeJsonError(err: Error, text: string): string {
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
  const inFile = (key: string) => `${key} in ${displayPath(path ?? '', cwd)}`;
  // Flags given as text are parsed here (the CLI's parsers hand over milliseconds already).
  const flagDuration = (value: string | number | undefined, flag: string) =>
    value === undefined ? undefined : parseDuration(value, flag);

  const relay: RelaySettings = {
    timeoutMs: pick(flagRelay.timeoutMs, fileRelay.timeoutMs) ?? DEFAULT_RELAY.timeoutMs,
    maxAttempts: pick(flagRelay.maxAttempts, fileRelay.maxAttempts) ?? DEFAULT_RELAY.maxAttempts,
    backoffMs: pick(flagRelay.backoffMs, fileRelay.backoffMs) ?? DEFAULT_RELAY.backoffMs,
    retryScheduleMs:
      pick(
        flagRelay.retrySchedule === undefined ? undefined : parseSchedule(flagRelay.retrySchedule, '--retry-schedule'),
        fileRelay.retrySchedule,
      ) ?? DEFAULT_RELAY.retryScheduleMs,
    giveUpAfterMs:
      pick(flagDuration(flagRelay.giveUpAfter, '--give-up-after'), fileRelay.giveUpAfter) ??
      DEFAULT_RELAY.giveUpAfterMs,
    concurrency: pick(flagRelay.concurrency, fileRelay.concurrency) ?? DEFAULT_RELAY.concurrency,
    batchSize: pick(flagRelay.batchSize, fileRelay.batchSize) ?? DEFAULT_RELAY.batchSize,
    pollIntervalMs: pick(flagRelay.pollIntervalMs, fileRelay.pollIntervalMs) ?? DEFAULT_RELAY.pollIntervalMs,
    leaseMs: pick(flagRelay.leaseMs, fileRelay.leaseMs) ?? DEFAULT_RELAY.leaseMs,
    maxRps: pick(flagRelay.maxRps, fileRelay.maxRps) ?? DEFAULT_RELAY.maxRps,
    retentionMs:
      pick(flagDuration(flagRelay.retention, '--retention'), fileRelay.retention) ?? DEFAULT_RELAY.retentionMs,
    retryAfterCapMs: fileRelay.retryAfterCap ?? DEFAULT_RELAY.retryAfterCapMs,
    breakerThreshold: pick(flagRelay.breakerThreshold, fileRelay.breakerThreshold) ?? DEFAULT_RELAY.breakerThreshold,
    probeIntervalMs:
      pick(flagDuration(flagRelay.probeInterval, '--probe-interval'), fileRelay.probeInterval) ??
      DEFAULT_RELAY.probeIntervalMs,
    coalesce: pick(flagRelay.coalesce, fileRelay.coalesce) ?? DEFAULT_RELAY.coalesce,
    metricsPort: pick(flagRelay.metricsPort, fileRelay.metricsPort),
  };
  if (relay.leaseMs < MIN_LEASE_MS) {
    const where = flagRelay.leaseMs !== undefined ? '--lease-ms' : inFile('relay.leaseMs');
    throw new UsageError(
      `${where} must be at least ${MIN_LEASE_MS}ms (the lease is renewed every third of it), not ${relay.leaseMs}ms.`,
    );
  }

  const fileSource = file.source ?? {};
  const fileColumns = Object.fromEntries(
    Object.entries(fileSource.columns ?? {})
      .filter(([, expression]) => expression !== undefined)
      // JSON null: the table has no such column; the SQL null is what the string "null" says too.
      .map(([field, expression]) => [field, expression ?? 'null']),
  ) as Partial<Record<PayloadField, string>>;
  const source: SourceMapping = {
    table: flags.table ?? fileSource.table ?? DEFAULT_SOURCE.table,
    softDeleteColumn:
      fileSource.softDeleteColumn === undefined ? DEFAULT_SOURCE.softDeleteColumn : fileSource.softDeleteColumn,
    updatedAtColumn:
      fileSource.updatedAtColumn === undefined ? DEFAULT_SOURCE.updatedAtColumn : fileSource.updatedAtColumn,
    columns: { ...DEFAULT_SOURCE.columns, ...fileColumns },
  };

  const sources: Partial<Record<SourcedSetting, string>> = {};
  /** The first given of flag, environment and file, remembering which it was. */
  const sourced = <T>(
    name: SourcedSetting,
    flag: T | undefined,
    fromEnv: T | undefined,
    fromFile: T | undefined,
  ): T | undefined => {
    const envName = ENV_NAMES[name];
    // An empty variable (`DATABASE_URL=`) is as good as unset: the file's value still counts.
    if (typeof fromEnv === 'string' && fromEnv.trim() === '') fromEnv = undefined;
    const [value, where] =
      flag !== undefined
        ? [flag, FLAG_NAMES[name] ?? envName]
        : fromEnv !== undefined
          ? [fromEnv, envName]
          : fromFile !== undefined
            ? [fromFile, inFile(name)]
            : [undefined, envName];
    sources[name] = where;
    return value;
  };

  const databaseUrl = nonEmpty(sourced('databaseUrl', flags.databaseUrl, env.DATABASE_URL, file.databaseUrl));
  const databaseListenUrl = nonEmpty(
    sourced('databaseListenUrl', undefined, env.DATABASE_LISTEN_URL, file.databaseListenUrl),
  );
  const backendSyncUrl = nonEmpty(
    sourced('backendSyncUrl', flags.backendSyncUrl, env.BACKEND_SYNC_URL, file.backendSyncUrl),
  );
  const secrets = sourced<string | string[]>(
    'webhookSecret',
    flags.webhookSecret,
    env.WEBHOOK_SECRET,
    file.webhookSecret,
  );
  const logLevel = pick(env.LOG_LEVEL, file.logLevel) ?? 'info';
  // The file's logLevel was checked with the rest of the file; the variable is checked here.
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new UsageError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, not "${logLevel}".`);
  }
  return {
    databaseUrl: databaseUrl === undefined ? undefined : checkDatabaseUrl(databaseUrl, sources.databaseUrl!),
    databaseListenUrl:
      databaseListenUrl === undefined ? undefined : checkDatabaseUrl(databaseListenUrl, sources.databaseListenUrl!),
    backendSyncUrl: backendSyncUrl === undefined ? undefined : parseBackendUrl(backendSyncUrl, sources.backendSyncUrl),
    webhookSecrets: parseSecrets(splitSecrets(secrets), sources.webhookSecret),
    backendSyncToken: nonEmpty(
      sourced('backendSyncToken', flags.backendSyncToken, env.BACKEND_SYNC_TOKEN, file.backendSyncToken),
    ),
    jwtSecret: nonEmpty(sourced('jwtSecret', undefined, env.JWT_SECRET, file.jwtSecret)),
    trustProxy: parseTrustProxy(pick<boolean | string | string[]>(env.TRUST_PROXY, file.trustProxy)),
    logLevel,
    source,
    relay,
    configFile: path,
    sources,
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
function parseTrustProxy(value: boolean | string | string[] | undefined): boolean | string[] | undefined {
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

/** The database URL or a usage error that says how to give one. */
export function requireDatabaseUrl(settings: Settings): string {
  if (settings.databaseUrl === undefined) {
    throw new UsageError('No database given; set DATABASE_URL or pass --database-url.');
  }
  return settings.databaseUrl;
}

/** The backend's sync endpoint, or a usage error naming where to set it. */
export function requireBackendUrl(settings: Settings): URL {
  return settings.backendSyncUrl ?? parseBackendUrl(undefined, settingSource(settings, 'backendSyncUrl'));
}

/** A database URL as given (`name`: where it was given), or a usage error saying what is wrong with it. */
export function checkDatabaseUrl(url: string, name: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`${name} is not a valid URL; use postgres://user@host:5432/dbname.`);
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new UsageError(`${name} must start with postgres:// or postgresql://, not ${parsed.protocol}//.`);
  }
  return url;
}
