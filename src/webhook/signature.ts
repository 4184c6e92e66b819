/**
 * Standard Webhooks signing and verification: secrets are `whsec_<base64>`, the key is the decoded
 * bytes, and `webhook-signature` carries one `v1,<base64 HMAC-SHA256(key,
 * "<id>.<timestamp>.<body>")>` entry per active secret, so either side can rotate.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { inspect } from 'node:util';
import { UsageError } from '../errors.ts';

const PREFIX = 'whsec_';
const MIN_KEY_BYTES = 24;
const SIGNATURE_BYTES = 32;
// Canonical, padded base64 only: receivers using the standardwebhooks libraries decode strictly,
// so a secret Node's lenient decoder would accept could still fail on the other side.
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const GENERATE_HINT = `generate one with: node -e "console.log('whsec_'+require('crypto').randomBytes(32).toString('base64'))"`;

/**
 * A decoded signing key. The key is kept in a private field and every way of printing the object
 * (JSON, util.inspect, template strings) shows a placeholder, so a secret that ends up in a log
 * line or a config dump stays hidden.
 */
export class WebhookSecret {
  readonly #key: Buffer;

  constructor(key: Buffer) {
    if (key.length < MIN_KEY_BYTES) {
      throw new TypeError(`a webhook secret key must be at least ${MIN_KEY_BYTES} bytes long`);
    }
    this.#key = key;
  }

  get key(): Buffer {
    return this.#key;
  }

  toJSON(): string {
    return '[WebhookSecret]';
  }

  toString(): string {
    return '[WebhookSecret]';
  }

  [inspect.custom](): string {
    return '[WebhookSecret]';
  }
}

/**
 * Parses WEBHOOK_SECRET: comma-separated (the env form) or a list (repeated flags), empty entries
 * ignored. Errors name the entry by position, never by value.
 */
export function parseSecrets(value: string | readonly string[] | undefined, name = 'WEBHOOK_SECRET'): WebhookSecret[] {
  if (value === undefined) return [];
  const entries = (typeof value === 'string' ? [value] : value)
    .flatMap((item) => item.split(','))
    .map((item) => item.trim())
    .filter((item) => item !== '');
  return entries.map((entry, index) => {
    const label = entries.length === 1 ? name : `${name} entry ${index + 1}`;
    const problem = secretProblem(entry);
    if (problem !== undefined) {
      throw new UsageError(
        `${label} ${problem}; it must be whsec_ followed by the base64 of at least ${MIN_KEY_BYTES} random bytes; ${GENERATE_HINT}`,
      );
    }
    return new WebhookSecret(Buffer.from(entry.slice(PREFIX.length), 'base64'));
  });
}

function secretProblem(entry: string): string | undefined {
  if (!entry.startsWith(PREFIX)) return 'does not start with whsec_';
  const encoded = entry.slice(PREFIX.length);
  if (!BASE64.test(encoded)) return 'is not valid padded base64 after whsec_';
  const bytes = Buffer.byteLength(encoded, 'base64');
  if (bytes < MIN_KEY_BYTES) return `decodes to only ${bytes} bytes`;
  return undefined;
}

/** A new `whsec_` secret of 32 random bytes. */
export function generateSecret(): string {
  return PREFIX + randomBytes(32).toString('base64');
}

function hmac(key: Buffer, webhookId: string, timestamp: number, body: string | Uint8Array): Buffer {
  const mac = createHmac('sha256', key).update(`${webhookId}.${timestamp}.`);
  // Bytes go in as they are; a string is hashed as UTF-8, the encoding it is sent in.
  return mac.update(body).digest();
}

export interface SignWebhookOptions {
  webhookId: string;
  /** Unix seconds. */
  timestamp: number;
  body: string | Uint8Array;
  secrets: readonly WebhookSecret[];
}

/** The `webhook-signature` header value: one `v1,<base64>` entry per secret, space-separated. */
export function signWebhook({ webhookId, timestamp, body, secrets }: SignWebhookOptions): string {
  if (secrets.length === 0) throw new TypeError('signWebhook needs at least one secret');
  if (!Number.isSafeInteger(timestamp) || timestamp < 0) {
    throw new TypeError('signWebhook timestamp must be whole unix seconds');
  }
  return secrets.map((secret) => 'v1,' + hmac(secret.key, webhookId, timestamp, body).toString('base64')).join(' ');
}

export class WebhookVerificationError extends Error {
  override name = 'WebhookVerificationError';
}

type HeaderValue = string | readonly string[] | null | undefined;

/** node:http's IncomingHttpHeaders, a plain record in any case, or a fetch-style Headers. */
export type WebhookHeaders = { get(name: string): string | null | undefined } | Readonly<Record<string, HeaderValue>>;

export interface VerifyWebhookOptions {
  headers: WebhookHeaders;
  /** The raw request bytes, exactly as received: a re-serialised JSON object will not match. */
  body: string | Uint8Array;
  secrets: string | readonly string[] | readonly WebhookSecret[];
  /** How far the timestamp may be from now, in either direction. */
  toleranceSeconds?: number;
  now?: Date;
}

function header(headers: WebhookHeaders, name: string): string | undefined {
  let value: HeaderValue;
  if (typeof headers.get === 'function') {
    value = (headers as { get(name: string): string | null | undefined }).get(name);
  } else {
    const record = headers as Readonly<Record<string, HeaderValue>>;
    value = record[name];
    if (value === undefined) {
      const key = Object.keys(record).find((k) => k.toLowerCase() === name);
      if (key !== undefined) value = record[key];
    }
  }
  if (typeof value !== 'string') {
    // A repeated header is ambiguous; refusing it is safer than picking one.
    if (Array.isArray(value) && value.length > 1) {
      throw new WebhookVerificationError(`more than one ${name} header`);
    }
    value = (value as readonly string[] | null | undefined)?.[0];
  }
  return value === undefined || value === '' ? undefined : value;
}

function toSecrets(secrets: VerifyWebhookOptions['secrets']): WebhookSecret[] {
  if (typeof secrets === 'string') return parseSecrets(secrets);
  if (secrets.every((s): s is WebhookSecret => s instanceof WebhookSecret)) return [...secrets];
  return parseSecrets(secrets);
}

/**
 * Verifies a Standard Webhooks request and returns its id and timestamp, or throws
 * WebhookVerificationError saying why. Any signature entry matching any secret is accepted, so
 * sender and receiver can each rotate on their own schedule.
 */
export function verifyWebhook({
  headers,
  body,
  secrets,
  toleranceSeconds = 300,
  now = new Date(),
}: VerifyWebhookOptions): { webhookId: string; timestamp: number } {
  const keys = toSecrets(secrets);
  if (keys.length === 0) throw new UsageError('verifyWebhook needs at least one webhook secret.');

  const webhookId = header(headers, 'webhook-id');
  if (webhookId === undefined) throw new WebhookVerificationError('missing webhook-id header');
  const timestampHeader = header(headers, 'webhook-timestamp');
  if (timestampHeader === undefined) throw new WebhookVerificationError('missing webhook-timestamp header');
  const signatureHeader = header(headers, 'webhook-signature');
  if (signatureHeader === undefined) throw new WebhookVerificationError('missing webhook-signature header');

  if (!/^\d{1,15}$/.test(timestampHeader)) {
    throw new WebhookVerificationError('webhook-timestamp is not unix seconds');
  }
  const timestamp = Number(timestampHeader);
  const nowSeconds = Math.floor(now.getTime() / 1000);
  if (nowSeconds - timestamp > toleranceSeconds) throw new WebhookVerificationError('timestamp too old');
  if (timestamp - nowSeconds > toleranceSeconds) throw new WebhookVerificationError('timestamp too new');

  const expected = keys.map((secret) => hmac(secret.key, webhookId, timestamp, body));
  for (const entry of signatureHeader.split(' ')) {
    const comma = entry.indexOf(',');
    if (comma === -1 || entry.slice(0, comma) !== 'v1') continue;
    const candidate = Buffer.from(entry.slice(comma + 1), 'base64');
    // timingSafeEqual throws on a length mismatch; the length of a MAC is no secret.
    if (candidate.length !== SIGNATURE_BYTES) continue;
    for (const digest of expected) {
      if (timingSafeEqual(candidate, digest)) return { webhookId, timestamp };
    }
  }
  throw new WebhookVerificationError('no matching signature');
}
