/**
 * The secret sweep: everything the tests capture (CLI output, the in-process relay's log lines)
 * is searched for the secrets the test handed out and for anything shaped like a credential, so
 * no test can print one without failing. Findings name the kind and where, never the secret.
 */
import { createHash } from 'node:crypto';

/** Secrets with fixed values, for tests that want known ones (e.g. test/secret-sweep.test.ts). */
export const TEST_SECRETS = {
  // whsec_ + base64 of 32 bytes; derived, so no real key ever sits in the repository.
  webhookSecret: `whsec_${createHash('sha256').update('suekk-sync test webhook secret').digest('base64')}`,
  oldWebhookSecret: `whsec_${createHash('sha256').update('suekk-sync old test webhook secret').digest('base64')}`,
  syncToken: 'sweep-bearer-token-7f3a9c1e5b',
  jwtSecret: 'sweep-jwt-secret-0123456789abcdef0123456789',
  databasePassword: 'sweep-db-pass-4d2c8e',
} as const;

/** A value that must never be printed, in every form it could be printed in. */
export interface KnownSecret {
  label: string;
  value: string;
}

/** What looks like a credential, whatever its value: each can be allowed where it is the point. */
export type LeakKind = 'known' | 'webhook-secret' | 'signature' | 'bcrypt' | 'jwt' | 'bearer';

export interface Leak {
  kind: LeakKind;
  /** What it is ("the webhook secret from WEBHOOK_SECRET, as its key in hex") and where it was seen. */
  what: string;
  where: string;
  /** The first few characters and the length, enough to find it and not enough to use it. */
  hint: string;
}

const PATTERNS: { kind: Exclude<LeakKind, 'known'>; what: string; re: RegExp }[] = [
  { kind: 'webhook-secret', what: 'a webhook secret (whsec_…)', re: /whsec_[A-Za-z0-9+/]{20,}={0,2}/g },
  // An HMAC-SHA256 is 32 bytes: 43 base64 characters and a pad.
  { kind: 'signature', what: 'a webhook signature (v1,<base64>)', re: /v1,[A-Za-z0-9+/]{40,}={0,2}/g },
  { kind: 'bcrypt', what: 'a bcrypt password hash', re: /\$2[abxy]\$\d{2}\$[./A-Za-z0-9]{22,}/g },
  { kind: 'jwt', what: 'a JWT', re: /eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}/g },
  { kind: 'bearer', what: 'a bearer token', re: /Bearer [A-Za-z0-9._~+/-]{8,}=*/g },
];

// Shorter values (a password like "pw" in a test's URL) would match ordinary words.
const MIN_SECRET_CHARS = 8;

const registry: KnownSecret[] = Object.entries(TEST_SECRETS).map(([label, value]) => ({ label, value }));

/** Adds a secret every later sweep in this test file looks for. */
export function registerSecret(value: string, label: string): void {
  if (!registry.some((s) => s.value === value)) registry.push({ label, value });
}

export function registeredSecrets(): KnownSecret[] {
  return [...registry];
}

/** The forms a secret could appear in: as given, and a webhook secret's key in every encoding. */
function forms(secret: KnownSecret): { form: string; as: string }[] {
  const out = [{ form: secret.value, as: '' }];
  if (secret.value.startsWith('whsec_')) {
    const encoded = secret.value.slice('whsec_'.length);
    const key = Buffer.from(encoded, 'base64');
    out.push(
      { form: encoded.replace(/=+$/, ''), as: ', as its base64 key' },
      { form: key.toString('base64url'), as: ', as its key in base64url' },
      { form: key.toString('hex'), as: ', as its key in hex' },
      { form: key.toString('hex').toUpperCase(), as: ', as its key in hex' },
    );
  }
  return out.filter((f) => f.form.length >= MIN_SECRET_CHARS);
}

function hint(found: string): string {
  return `${found.slice(0, 4)}… (${found.length} characters)`;
}

export interface SweepOptions {
  /** Secrets besides the registered ones (e.g. the ones a CLI run was given). */
  secrets?: readonly KnownSecret[];
  /** Credential shapes that are this output's point (a login response carries a JWT). */
  allow?: readonly LeakKind[];
}

export function findLeaks(raw: string, where: string, options: SweepOptions = {}): Leak[] {
  const leaks: Leak[] = [];
  const seen = new Set<string>();
  // JSON that escapes its slashes (PHP's does) hides a base64 value from a plain search.
  const text = raw.includes('\\/') ? `${raw}\n${raw.replaceAll('\\/', '/')}` : raw;
  for (const secret of [...registry, ...(options.secrets ?? [])]) {
    for (const { form, as } of forms(secret)) {
      if (seen.has(form) || !text.includes(form)) continue;
      seen.add(form);
      leaks.push({ kind: 'known', what: `the ${secret.label}${as}`, where, hint: hint(form) });
    }
  }
  for (const p of PATTERNS) {
    if (options.allow?.includes(p.kind)) continue;
    for (const m of text.matchAll(p.re)) {
      if (seen.has(m[0])) continue;
      seen.add(m[0]);
      leaks.push({ kind: p.kind, what: p.what, where, hint: hint(m[0]) });
    }
  }
  return leaks;
}

export class SecretLeakError extends Error {
  override name = 'SecretLeakError';
  constructor(
    readonly leaks: Leak[],
    source: string,
  ) {
    super(
      `${source} printed ${leaks.length === 1 ? 'a secret' : `${leaks.length} secrets`}: ${leaks
        .map((l) => `${l.what} in ${l.where}, starting ${l.hint}`)
        .join('; ')}`,
    );
  }
}

/** Secrets a process was given through its environment or flags, to look for in what it printed. */
export function secretsGiven(env: Record<string, string | undefined>, args: readonly string[]): KnownSecret[] {
  const out: KnownSecret[] = [];
  const add = (value: string | undefined, label: string) => {
    if (value !== undefined && value.trim() !== '') out.push({ label, value: value.trim() });
  };
  const addUrl = (value: string | undefined, label: string) => {
    if (value === undefined) return;
    try {
      const url = new URL(value);
      if (url.password !== '') {
        add(url.password, `password in ${label}`);
        add(decodeURIComponent(url.password), `password in ${label}`);
      }
      // pg also takes ?password= and ?sslpassword= (the client key's passphrase).
      for (const [name, param] of url.searchParams) {
        if (/pass/i.test(name)) add(param, `${name} parameter in ${label}`);
      }
    } catch {
      // Not a URL: the process refuses it, and the value itself must not be echoed.
      add(value, label);
    }
  };
  for (const [i, s] of (env.WEBHOOK_SECRET ?? '').split(',').entries())
    add(s, `webhook secret from WEBHOOK_SECRET (entry ${i + 1})`);
  add(env.BACKEND_SYNC_TOKEN, 'bearer token from BACKEND_SYNC_TOKEN');
  add(env.JWT_SECRET, 'JWT secret from JWT_SECRET');
  addUrl(env.DATABASE_URL, 'DATABASE_URL');
  addUrl(env.DATABASE_LISTEN_URL, 'DATABASE_LISTEN_URL');
  for (let i = 0; i < args.length - 1; i++) {
    const flag = args[i];
    const value = args[i + 1];
    if (flag === '--secret') add(value, 'webhook secret from --secret');
    else if (flag === '--token') add(value, 'bearer token from --token');
    else if (flag === '--database-url') addUrl(value, '--database-url');
  }
  return out;
}

/** The URL with the sweep's password in it (or the real one kept, and swept for, if it has one). */
export function withPassword(url: string): string {
  const u = new URL(url);
  if (u.password !== '') registerSecret(decodeURIComponent(u.password), 'test server password');
  else u.password = TEST_SECRETS.databasePassword;
  if (u.username === '') u.username = 'postgres';
  return u.toString();
}
