/**
 * One HTTP attempt at delivering a webhook, and what it means: 2xx is
 * delivered; connection errors, timeouts, 408, 425, 429 and 5xx are worth retrying; a 3xx or any
 * other 4xx is a rejection that sending again cannot fix. Retries and rounds belong to the relay;
 * this module only ever makes one request per send().
 */
import { Pool } from 'undici';
import type { Dispatcher } from 'undici';
import { requireBackendUrl, type Settings } from '../config.ts';
import { parseBackendUrl } from './backend-url.ts';
import { USER_AGENT } from '../version.ts';
import { dropPartialTail, redactCredentials } from './redact.ts';
import { signWebhook, type WebhookSecret } from './signature.ts';

export type AttemptKind = 'delivered' | 'retryable' | 'rejected';

export interface AttemptOutcome {
  kind: AttemptKind;
  /** The HTTP status, when a response arrived. */
  status?: number;
  /** A short sentence for logs and `last_error`; never holds the token, a secret or a signature. */
  error?: string;
  durationMs: number;
  /** From `Retry-After` on a 429 or 503, capped. */
  retryAfterMs?: number;
  /** The start of the response body, for the record. */
  responseSnippet?: string;
}

export interface WebhookSenderOptions {
  url: string;
  secrets: readonly WebhookSecret[];
  token?: string;
  /** Bound on one whole attempt: connect, send, headers and the body read. */
  timeoutMs: number;
  /** Open connections to the backend at most (default 64). */
  connections?: number;
  /** Response bytes read at most before the connection is dropped (default 64 KiB). */
  maxResponseBytes?: number;
  /** Largest `Retry-After` honoured (default 30 s). */
  retryAfterCapMs?: number;
}

export interface WebhookRequest {
  /** `evt_<uuid>`, sent verbatim: the same on every attempt of an event. */
  webhookId: string;
  body: string;
  /** Aborts the attempt (shutdown, lost lease); the outcome is then retryable with error 'aborted'. */
  signal?: AbortSignal;
}

export interface WebhookSender {
  send(request: WebhookRequest): Promise<AttemptOutcome>;
  close(): Promise<void>;
}

const SNIPPET_CHARS = 500;
// UTF-8 needs at most 4 bytes per character, so this many bytes always hold the snippet.
const SNIPPET_BYTES = SNIPPET_CHARS * 4;
const ERROR_SNIPPET_CHARS = 200;
export function createWebhookSender(options: WebhookSenderOptions): WebhookSender {
  const url = parseBackendUrl(options.url);
  const { secrets, token, timeoutMs } = options;
  const maxResponseBytes = options.maxResponseBytes ?? 64 * 1024;
  const retryAfterCapMs = options.retryAfterCapMs ?? 30_000;
  if (!(timeoutMs > 0)) throw new TypeError('timeoutMs must be a positive number of milliseconds');
  const path = url.pathname + url.search;
  // Every form of the signing keys a backend could echo; the token and signatures join per send.
  const secretForms = secrets.flatMap((s) => {
    const encoded = s.key.toString('base64');
    return [`whsec_${encoded}`, encoded.replace(/=+$/, ''), s.key.toString('base64url'), s.key.toString('hex')];
  });

  // undici's own timeouts catch a silent peer early and name the phase; the per-attempt abort
  // timer in send() is what bounds the attempt as a whole.
  const pool = new Pool(url.origin, {
    connections: options.connections ?? 64,
    pipelining: 1,
    connectTimeout: timeoutMs,
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
  });

  function describeError(err: unknown): string {
    const code = (err as { code?: unknown } | null)?.code;
    if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') return `timed out after ${timeoutMs} ms`;
    if (code === 'UND_ERR_CONNECT_TIMEOUT') return `connect timed out after ${timeoutMs} ms`;
    // Node's happy-eyeballs connect (a name with IPv4 and IPv6 addresses) fails with an empty
    // AggregateError whose parts say what happened.
    if (err instanceof AggregateError && err.message === '' && err.errors.length > 0) {
      return err.errors.map(describeError).join('; ');
    }
    if (err instanceof Error) return err.message || (typeof code === 'string' ? code : err.name);
    return String(err);
  }

  function send({ webhookId, body, signal }: WebhookRequest): Promise<AttemptOutcome> {
    const started = performance.now();
    const elapsed = () => Math.round(performance.now() - started);
    if (signal?.aborted) return Promise.resolve({ kind: 'retryable', error: 'aborted', durationMs: 0 });

    const timestamp = Math.floor(Date.now() / 1000);
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': USER_AGENT,
      'webhook-id': webhookId,
      'webhook-timestamp': String(timestamp),
    };
    let signature: string | undefined;
    if (secrets.length > 0) {
      signature = signWebhook({ webhookId, timestamp, body, secrets });
      headers['webhook-signature'] = signature;
    }
    if (token !== undefined && token !== '') headers.authorization = `Bearer ${token}`;

    // pool.dispatch with a handler of our own rather than pool.request: no response stream, no
    // async iterator, no AbortController per attempt. In the drain profile those were a fifth of
    // the relay's CPU per event, for a body of a few bytes that is read and dropped.
    return new Promise<AttemptOutcome>((resolve) => {
      let controller: Dispatcher.DispatchController | undefined;
      let stopped: 'aborted' | 'timeout' | undefined;
      let status: number | undefined;
      let responseHeaders: Record<string, string | string[] | undefined> = {};
      const head: Buffer[] = [];
      let headBytes = 0;
      let total = 0;
      let settled = false;

      const settle = (outcome: AttemptOutcome) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onCallerAbort);
        resolve(outcome);
      };
      // A response whose status arrived is classified by it, even when its body was cut short
      // (by the size limit, the timeout or the peer): the backend has answered.
      const answered = () => {
        const text = Buffer.concat(head, headBytes).toString('utf8', 0, SNIPPET_BYTES);
        const known = [
          ...(token ? [token] : []),
          ...(signature?.split(' ').map((e) => e.slice(3)) ?? []),
          ...secretForms,
        ];
        const clean = (raw: string) => redactCredentials(raw, known);
        const snippet = dropPartialTail(clean(text).slice(0, SNIPPET_CHARS), known).trim();
        settle(classify(status!, responseHeaders, snippet, elapsed(), clean));
      };
      const stop = (why: 'aborted' | 'timeout') => {
        if (settled || stopped !== undefined) return;
        stopped = why;
        if (controller) controller.abort(new Error(why));
        else settle(failed(undefined));
      };
      const failed = (err: unknown): AttemptOutcome => {
        let error: string;
        if (stopped === 'aborted' || signal?.aborted) error = 'aborted';
        else if (stopped === 'timeout') error = `timed out after ${timeoutMs} ms`;
        else error = describeError(err);
        return { kind: 'retryable', error, durationMs: elapsed() };
      };
      const onCallerAbort = () => stop('aborted');
      const timer = setTimeout(() => stop('timeout'), timeoutMs);
      signal?.addEventListener('abort', onCallerAbort, { once: true });

      const handler: Dispatcher.DispatchHandler = {
        onRequestStart(c) {
          controller = c;
          if (stopped !== undefined) c.abort(new Error(stopped));
        },
        onResponseStart(_c, statusCode, hdrs) {
          status = statusCode;
          responseHeaders = hdrs;
        },
        onResponseData(c, chunk) {
          if (headBytes < SNIPPET_BYTES) {
            head.push(chunk);
            headBytes += chunk.length;
          }
          total += chunk.length;
          // Anything longer is cut off by closing the connection, so a huge answer is never buffered.
          if (total >= maxResponseBytes) {
            answered();
            c.abort(new Error('response too large'));
          }
        },
        onResponseEnd() {
          answered();
        },
        onResponseError(_c, err) {
          if (status !== undefined) answered();
          else settle(failed(err));
        },
      };
      try {
        pool.dispatch({ origin: url.origin, path, method: 'POST', headers, body }, handler);
      } catch (err) {
        settle(failed(err));
      }
    });
  }

  function classify(
    status: number,
    headers: Record<string, string | string[] | undefined>,
    snippet: string,
    durationMs: number,
    clean: (raw: string) => string,
  ): AttemptOutcome {
    const outcome: AttemptOutcome = { kind: 'rejected', status, durationMs };
    if (snippet !== '') outcome.responseSnippet = snippet;
    if (status >= 200 && status < 300) {
      outcome.kind = 'delivered';
      return outcome;
    }
    if (status >= 300 && status < 400) {
      const location = headerValue(headers.location);
      // The address may carry the token or a signature back, as a login redirect's query does.
      const where = location === undefined ? 'none' : clean(location).slice(0, ERROR_SNIPPET_CHARS);
      outcome.error = `HTTP ${status}: redirects are not followed (Location: ${where})`;
      return outcome;
    }
    const start = snippet.replace(/\s+/g, ' ').slice(0, ERROR_SNIPPET_CHARS);
    outcome.error = start === '' ? `HTTP ${status}` : `HTTP ${status}: ${start}`;
    if (status === 408 || status === 425 || status === 429 || status >= 500) {
      outcome.kind = 'retryable';
      if (status === 429 || status === 503) {
        const retryAfterMs = parseRetryAfter(headerValue(headers['retry-after']), retryAfterCapMs);
        if (retryAfterMs !== undefined) outcome.retryAfterMs = retryAfterMs;
      }
    }
    return outcome;
  }

  return { send, close: () => pool.close() };
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** `Retry-After` as delay-seconds or an HTTP date, in ms, capped; undefined when unreadable. */
export function parseRetryAfter(value: string | undefined, capMs: number): number | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  let ms: number;
  if (/^\d+$/.test(trimmed)) {
    ms = Number(trimmed) * 1000;
  } else {
    const at = Date.parse(trimmed);
    if (Number.isNaN(at)) return undefined;
    ms = Math.max(0, at - Date.now());
  }
  return Math.min(ms, capMs);
}

/** The sender a relay builds from settings: the daemon, or a command delivering by itself. */
export function createSenderFromSettings(settings: Settings): WebhookSender {
  return createWebhookSender({
    url: requireBackendUrl(settings).toString(),
    secrets: settings.webhookSecrets,
    token: settings.backendSyncToken,
    timeoutMs: settings.relay.timeoutMs,
    connections: Math.max(1, settings.relay.concurrency),
    retryAfterCapMs: settings.relay.retryAfterCapMs,
  });
}
