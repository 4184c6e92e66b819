/**
 * A webhook receiver for development and tests: it answers as a backend's
 * `/internal/users/sync` (`{"success":true}`), verifies Standard Webhooks signatures from the raw
 * body bytes, de-duplicates by `webhook-id` (a delivery may arrive more than once), and can fail or
 * stall on purpose so the relay's retries can be watched.
 */
import { timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { verifyWebhook, WebhookVerificationError, type WebhookSecret } from '../webhook/index.ts';

export type ReceiveOutcome = 'accepted' | 'duplicate' | 'rejected' | 'failed';

export interface ReceivedWebhook {
  /** accepted: a new event; duplicate: its webhook-id was seen before (answered 200 again);
   * rejected: bad signature, token or body; failed: a simulated failure (failRate). */
  outcome: ReceiveOutcome;
  /** The HTTP status the receiver answered. */
  status: number;
  webhookId: string | undefined;
  /** The webhook-timestamp header, unix seconds. */
  timestamp: number | undefined;
  /** The signature matched a secret; always false when the receiver has none. */
  verified: boolean;
  /** The parsed body; undefined when it was not a JSON object. */
  payload: Record<string, unknown> | undefined;
  /** Why the request was rejected or failed. */
  error: string | undefined;
  receivedAt: Date;
}

export interface ReceiverOptions {
  /** Verify signatures with these; without any, every signature is accepted unchecked. */
  secrets?: readonly WebhookSecret[];
  /** Require `Authorization: Bearer <token>` (BACKEND_SYNC_TOKEN on the relay's side). */
  token?: string;
  /** The fraction of requests (0..1) answered 503, at random. */
  failRate?: number;
  /** Wait this long before answering each request. */
  delayMs?: number;
  path?: string;
  /** How many accepted events `events` keeps (the oldest are dropped). */
  maxEvents?: number;
  /** Called for every webhook request with its outcome, duplicates and rejections included. */
  onEvent?: (received: ReceivedWebhook) => void;
}

export interface Receiver {
  /** Resolves to the URL to give the relay as BACKEND_SYNC_URL. Port 0 picks a free port. */
  listen(port?: number, host?: string): Promise<string>;
  close(): Promise<void>;
  /** The webhook URL; only while listening. */
  readonly url: string;
  /** Accepted events, oldest first, without duplicates. */
  readonly events: readonly ReceivedWebhook[];
  readonly counts: Readonly<Record<ReceiveOutcome, number>>;
}

const MAX_BODY_BYTES = 1024 * 1024;
// Ids remembered for de-duplication: far more than the events kept, because a redelivery may
// come long after the event was pushed out of the list.
const SEEN_IDS_PER_EVENT = 10;

class BodyTooLarge extends Error {}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        req.removeAllListeners('data');
        req.resume();
        reject(new BodyTooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function tokenMatches(header: string | undefined, token: string): boolean {
  const given = Buffer.from(header ?? '');
  const expected = Buffer.from(`Bearer ${token}`);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

function parseObject(body: Buffer): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(body.toString('utf8'));
    return value !== null && typeof value === 'object' && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

export function createReceiver(options: ReceiverOptions = {}): Receiver {
  const secrets = options.secrets ?? [];
  const failRate = options.failRate ?? 0;
  const delayMs = options.delayMs ?? 0;
  const path = options.path ?? '/internal/users/sync';
  const maxEvents = options.maxEvents ?? 1000;
  if (!(failRate >= 0 && failRate <= 1)) throw new RangeError(`failRate must be from 0 to 1, not ${failRate}`);
  if (!(delayMs >= 0)) throw new RangeError(`delayMs must not be negative, not ${delayMs}`);
  if (!path.startsWith('/')) throw new RangeError(`path must start with /, not ${path}`);

  const events: ReceivedWebhook[] = [];
  const seen = new Set<string>();
  const counts: Record<ReceiveOutcome, number> = { accepted: 0, duplicate: 0, rejected: 0, failed: 0 };
  const closing = new AbortController();
  let url: string | undefined;

  function record(received: ReceivedWebhook): void {
    counts[received.outcome] += 1;
    if (received.outcome === 'accepted') {
      events.push(received);
      if (events.length > maxEvents) events.shift();
    }
    options.onEvent?.(received);
  }

  async function handleWebhook(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const receivedAt = new Date();
    let body: Buffer;
    try {
      body = await readBody(req);
    } catch (err) {
      if (!(err instanceof BodyTooLarge)) throw err;
      send(res, 413, { error: 'Payload too large' }, { connection: 'close' });
      return;
    }
    if (delayMs > 0) await sleep(delayMs, undefined, { signal: closing.signal });

    const webhookId = single(req.headers['webhook-id']);
    const timestampHeader = single(req.headers['webhook-timestamp']);
    const received: ReceivedWebhook = {
      outcome: 'rejected',
      status: 401,
      webhookId,
      timestamp: timestampHeader !== undefined && /^\d+$/.test(timestampHeader) ? Number(timestampHeader) : undefined,
      verified: false,
      payload: parseObject(body),
      error: undefined,
      receivedAt,
    };
    const answer = (outcome: ReceiveOutcome, status: number, reply: unknown, error?: string) => {
      Object.assign(received, { outcome, status, error });
      record(received);
      send(res, status, reply);
    };

    if (options.token !== undefined && !tokenMatches(req.headers.authorization, options.token)) {
      answer('rejected', 401, { error: 'Unauthorized' }, 'missing or wrong bearer token');
      return;
    }
    if (secrets.length > 0) {
      try {
        verifyWebhook({ headers: req.headers, body, secrets });
        received.verified = true;
      } catch (err) {
        if (!(err instanceof WebhookVerificationError)) throw err;
        answer('rejected', 401, { error: 'Invalid signature' }, `bad signature: ${err.message}`);
        return;
      }
    }
    if (received.payload === undefined) {
      answer('rejected', 400, { error: 'Invalid payload' }, 'the body is not a JSON object');
      return;
    }
    // Before de-duplication, so the redelivery of a failed request counts as new.
    if (failRate > 0 && Math.random() < failRate) {
      answer('failed', 503, { error: 'Simulated failure' }, 'simulated failure (fail rate)');
      return;
    }
    if (webhookId !== undefined && seen.has(webhookId)) {
      answer('duplicate', 200, { success: true });
      return;
    }
    if (webhookId !== undefined) {
      seen.add(webhookId);
      if (seen.size > maxEvents * SEEN_IDS_PER_EVENT) seen.delete(seen.values().next().value!);
    }
    answer('accepted', 200, { success: true });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const pathname = new URL(req.url ?? '/', 'http://receiver').pathname;
    if (pathname === '/events' && req.method === 'GET') {
      send(res, 200, { counts, events });
    } else if (pathname !== path) {
      send(res, 404, { error: 'Not found' });
    } else if (req.method !== 'POST') {
      send(res, 405, { error: 'Method not allowed' }, { allow: 'POST' });
    } else {
      await handleWebhook(req, res);
    }
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (closing.signal.aborted) {
        res.destroy();
      } else if (!res.headersSent) {
        send(res, 500, { error: err instanceof Error ? err.message : String(err) });
      }
    });
  });

  return {
    listen(port = 0, host = '127.0.0.1') {
      return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          const address = server.address() as AddressInfo;
          const hostPart = address.family === 'IPv6' ? `[${address.address}]` : address.address;
          url = `http://${hostPart}:${address.port}${path}`;
          resolve(url);
        });
      });
    },
    close() {
      closing.abort();
      url = undefined;
      if (!server.listening) return Promise.resolve();
      return new Promise((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      });
    },
    get url() {
      if (url === undefined) throw new Error('the receiver is not listening');
      return url;
    },
    events,
    counts,
  };
}

function text(value: unknown): string {
  return typeof value === 'string' && value !== '' ? value : '?';
}

/** One readable line per webhook, e.g. `✓ created   alice (bcb49293…)  evt_…  signature verified`. */
export function describeReceived(r: ReceivedWebhook): string {
  const id = r.webhookId ?? '(no webhook-id)';
  if (r.outcome === 'rejected') return `✗ rejected  ${id}  ${r.status}: ${r.error ?? ''}`;
  const userId = text(r.payload?.id);
  const who = `${text(r.payload?.username)} (${userId.length > 8 ? `${userId.slice(0, 8)}…` : userId})`;
  if (r.outcome === 'failed') return `✗ failed    ${who}  ${id}  answered ${r.status}`;
  if (r.outcome === 'duplicate') return `↺ duplicate ${who}  ${id}  already received, answered 200 again`;
  const check = r.verified ? 'signature verified' : 'signature not checked (no secret set)';
  return `✓ ${text(r.payload?.action).padEnd(9)} ${who}  ${id}  ${check}`;
}
