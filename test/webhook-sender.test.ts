import { once } from 'node:events';
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { Webhook } from 'standardwebhooks';
import { UsageError } from '../src/errors.ts';
import { USER_AGENT } from '../src/version.ts';
import { buildWebhookBody } from '../src/webhook/body.ts';
import { parseBackendUrl } from '../src/webhook/backend-url.ts';
import { createWebhookSender, type WebhookSenderOptions } from '../src/webhook/sender.ts';
import { dropPartialTail, redactCredentials } from '../src/webhook/redact.ts';
import { generateSecret, parseSecrets, verifyWebhook } from '../src/webhook/signature.ts';

interface Received {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

type Handler = (req: IncomingMessage, res: ServerResponse, received: Received) => void;

/** A real loopback receiver that records every request it gets, closed when the test ends. */
async function startReceiver(t: Test, handler: Handler) {
  const requests: Received[] = [];
  let connections = 0;
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const received = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks),
      };
      requests.push(received);
      handler(req, res, received);
    });
  });
  server.on('connection', () => connections++);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const { port } = server.address() as AddressInfo;
  return { server, port, requests, url: `http://127.0.0.1:${port}`, connections: () => connections };
}

function sender(t: Test, options: Partial<WebhookSenderOptions> & { url: string }) {
  const s = createWebhookSender({ secrets: [], timeoutMs: 2000, ...options });
  t.teardown(() => s.close());
  return s;
}

function reply(status: number, body = '', headers: Record<string, string> = {}): Handler {
  return (_req, res) => {
    res.writeHead(status, headers);
    res.end(body);
  };
}

const secretOld = generateSecret();
const secretNew = generateSecret();
const webhookId = 'evt_0b6f5a52-6a43-4f0e-9a57-2a4f1f3ddc3e';
const body = buildWebhookBody(
  {
    id: 'u1',
    email: 'zoë@example.com',
    username: 'zoe',
    displayName: 'Zoë "Z" 日本',
    avatar: null,
    role: 'user',
    isActive: true,
  },
  'created',
);

t.test('2xx is delivered, with the contract headers and the exact body bytes', async (t) => {
  const receiver = await startReceiver(t, reply(200, '{"ok":true}'));
  const s = sender(t, {
    url: `${receiver.url}/internal/users/sync?tenant=a`,
    secrets: parseSecrets([secretOld, secretNew]),
  });

  const before = Math.floor(Date.now() / 1000);
  const outcome = await s.send({ webhookId, body });
  t.match(outcome, { kind: 'delivered', status: 200, responseSnippet: '{"ok":true}' });
  t.notOk('error' in outcome);
  t.type(outcome.durationMs, 'number');

  const [request] = receiver.requests;
  t.equal(receiver.requests.length, 1);
  t.equal(request!.method, 'POST');
  t.equal(request!.url, '/internal/users/sync?tenant=a');
  t.ok(request!.body.equals(Buffer.from(body, 'utf8')), 'body bytes unchanged');
  const h = request!.headers;
  t.equal(h['content-type'], 'application/json');
  t.equal(h['user-agent'], USER_AGENT);
  t.equal(h['webhook-id'], webhookId);
  t.ok(Number(h['webhook-timestamp']) >= before && Number(h['webhook-timestamp']) <= Math.floor(Date.now() / 1000) + 1);
  t.notOk('authorization' in h, 'no authorization without a token');

  // A receiver on either secret accepts it, with the Standard Webhooks library and with ours.
  const signed = {
    'webhook-id': h['webhook-id']!,
    'webhook-timestamp': h['webhook-timestamp']!,
    'webhook-signature': h['webhook-signature']!,
  } as Record<string, string>;
  t.same(new Webhook(secretOld).verify(request!.body, signed), JSON.parse(body));
  t.same(new Webhook(secretNew).verify(request!.body, signed), JSON.parse(body));
  t.equal(verifyWebhook({ headers: h, body: request!.body, secrets: secretNew }).webhookId, webhookId);
});

t.test('authorization only with a token; no signature without secrets', async (t) => {
  const receiver = await startReceiver(t, reply(204));
  const withToken = sender(t, { url: receiver.url, token: 'tok-123', secrets: parseSecrets(secretNew) });
  const bare = sender(t, { url: receiver.url, token: '' });
  t.match(await withToken.send({ webhookId, body }), { kind: 'delivered', status: 204 });
  t.match(await bare.send({ webhookId, body }), { kind: 'delivered', status: 204 });
  const [first, second] = receiver.requests;
  t.equal(first!.headers.authorization, 'Bearer tok-123');
  t.ok(first!.headers['webhook-signature']);
  t.notOk('authorization' in second!.headers);
  t.notOk('webhook-signature' in second!.headers);
});

t.test('every attempt carries a fresh timestamp and a signature over it, on one kept-alive connection', async (t) => {
  const receiver = await startReceiver(t, reply(200));
  const s = sender(t, { url: receiver.url, secrets: parseSecrets(secretNew) });
  await s.send({ webhookId, body });
  const realNow = Date.now;
  Date.now = () => realNow() + 120_000;
  try {
    await s.send({ webhookId, body });
  } finally {
    Date.now = realNow;
  }
  const [first, second] = receiver.requests.map((r) => r.headers);
  t.equal(first!['webhook-id'], second!['webhook-id'], 'the same id on every attempt');
  const delta = Number(second!['webhook-timestamp']) - Number(first!['webhook-timestamp']);
  t.ok(delta >= 119 && delta <= 121, `timestamp moved with the clock (${delta}s)`);
  t.not(first!['webhook-signature'], second!['webhook-signature']);
  t.doesNotThrow(() =>
    verifyWebhook({ headers: second!, body, secrets: secretNew, now: new Date(realNow() + 120_000) }),
  );
  // undici frees a connection a tick after the body ends, so back-to-back sends may open a
  // second one; what matters is that attempts do not each pay for a new connection.
  for (let i = 0; i < 3; i++) await s.send({ webhookId, body });
  t.ok(receiver.connections() <= 2, `5 attempts, ${receiver.connections()} connections`);
});

t.test('5xx, 408, 425 and 429 are retryable; other 4xx are rejected with the response', async (t) => {
  const cases: [number, 'retryable' | 'rejected'][] = [
    [500, 'retryable'],
    [502, 'retryable'],
    [503, 'retryable'],
    [408, 'retryable'],
    [425, 'retryable'],
    [429, 'retryable'],
    [400, 'rejected'],
    [401, 'rejected'],
    [404, 'rejected'],
    [409, 'rejected'],
    [422, 'rejected'],
  ];
  for (const [status, kind] of cases) {
    const receiver = await startReceiver(t, reply(status, `{"error":"status ${status}\\nhere"}`));
    const outcome = await sender(t, { url: receiver.url }).send({ webhookId, body });
    t.match(
      outcome,
      { kind, status, error: `HTTP ${status}: {"error":"status ${status}\\nhere"}` },
      `${status} is ${kind}`,
    );
    t.equal(outcome.responseSnippet, `{"error":"status ${status}\\nhere"}`);
  }
});

t.test('a long error response is cut to a snippet', async (t) => {
  const receiver = await startReceiver(t, reply(400, 'é'.repeat(5000)));
  const outcome = await sender(t, { url: receiver.url }).send({ webhookId, body });
  t.equal(outcome.kind, 'rejected');
  t.equal(outcome.responseSnippet, 'é'.repeat(500));
  t.equal(outcome.error, `HTTP 400: ${'é'.repeat(200)}`);
});

t.test('Retry-After on 429 and 503 is honoured, capped', async (t) => {
  const inTenSeconds = new Date(Date.now() + 10_000).toUTCString();
  const cases: [number, string | undefined, number, number | undefined][] = [
    [429, '2', 30_000, 2000],
    [503, '2', 30_000, 2000],
    [429, '86400', 30_000, 30_000],
    [503, '86400', 5000, 5000],
    [429, 'Wed, 21 Oct 2015 07:28:00 GMT', 30_000, 0],
    [429, 'soon', 30_000, undefined],
    [429, undefined, 30_000, undefined],
    [500, '2', 30_000, undefined],
  ];
  for (const [status, retryAfter, cap, expected] of cases) {
    const receiver = await startReceiver(
      t,
      reply(status, '', retryAfter === undefined ? {} : { 'retry-after': retryAfter }),
    );
    const outcome = await sender(t, { url: receiver.url, retryAfterCapMs: cap }).send({ webhookId, body });
    t.equal(outcome.kind, 'retryable');
    t.equal(outcome.retryAfterMs, expected, `${status} Retry-After: ${retryAfter} (cap ${cap})`);
  }
  const receiver = await startReceiver(t, reply(429, '', { 'retry-after': inTenSeconds }));
  const { retryAfterMs } = await sender(t, { url: receiver.url }).send({ webhookId, body });
  t.ok(
    retryAfterMs !== undefined && retryAfterMs > 8000 && retryAfterMs <= 10_000,
    `HTTP date read (${retryAfterMs} ms)`,
  );
});

t.test('a redirect is rejected and not followed', async (t) => {
  const target = await startReceiver(t, reply(200));
  const receiver = await startReceiver(t, reply(302, '', { location: `${target.url}/elsewhere` }));
  const outcome = await sender(t, { url: receiver.url }).send({ webhookId, body });
  t.match(outcome, { kind: 'rejected', status: 302 });
  t.equal(outcome.error, `HTTP 302: redirects are not followed (Location: ${target.url}/elsewhere)`);
  t.equal(target.requests.length, 0, 'the redirect target got nothing');
});

t.test('a server that never answers ends the attempt at the timeout', async (t) => {
  const receiver = await startReceiver(t, () => {});
  const outcome = await sender(t, { url: receiver.url, timeoutMs: 300 }).send({ webhookId, body });
  t.match(outcome, { kind: 'retryable', error: 'timed out after 300 ms' });
  t.notOk('status' in outcome);
  t.ok(outcome.durationMs >= 250 && outcome.durationMs < 2000, `bounded (${outcome.durationMs} ms)`);
});

t.test('a body that never ends is bounded too, and the status still counts', async (t) => {
  const receiver = await startReceiver(t, (_req, res) => {
    res.writeHead(503, { 'content-type': 'text/plain' });
    res.write('overloaded, and then silence');
  });
  const outcome = await sender(t, { url: receiver.url, timeoutMs: 300 }).send({ webhookId, body });
  t.match(outcome, { kind: 'retryable', status: 503, responseSnippet: 'overloaded, and then silence' });
  t.ok(outcome.durationMs < 2000, `bounded (${outcome.durationMs} ms)`);
});

t.test('a refused connection is retryable', async (t) => {
  const closed = createServer();
  closed.listen(0, '127.0.0.1');
  await once(closed, 'listening');
  const { port } = closed.address() as AddressInfo;
  closed.close();
  await once(closed, 'close');
  const outcome = await sender(t, { url: `http://127.0.0.1:${port}/sync` }).send({ webhookId, body });
  t.match(outcome, { kind: 'retryable', error: `connect ECONNREFUSED 127.0.0.1:${port}` });
});

t.test('a 50 MB response is cut short, not buffered', async (t) => {
  const total = 50 * 1024 * 1024;
  let written = 0;
  let finished = false;
  let resolveClosed: (finishedWriting: boolean) => void;
  const closed = new Promise<boolean>((resolve) => (resolveClosed = resolve));
  const receiver = await startReceiver(t, (_req, res) => {
    const chunk = Buffer.alloc(64 * 1024, 'x');
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(total) });
    res.on('close', () => resolveClosed(res.writableFinished));
    const pump = () => {
      while (written < total) {
        written += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      finished = true;
      res.end();
    };
    pump();
  });
  const outcome = await sender(t, { url: receiver.url, timeoutMs: 5000 }).send({ webhookId, body });
  t.match(outcome, { kind: 'delivered', status: 200 });
  t.ok(outcome.responseSnippet!.length <= 500);
  t.notOk(finished, `returned before the server finished writing (${(written / 1024 / 1024).toFixed(1)} MB written)`);
  t.equal(await closed, false, 'the connection was dropped mid-body');
});

t.test("the caller's signal aborts the attempt", async (t) => {
  const receiver = await startReceiver(t, () => {});
  const s = sender(t, { url: receiver.url, timeoutMs: 5000 });
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 50);
  const outcome = await s.send({ webhookId, body, signal: controller.signal });
  t.match(outcome, { kind: 'retryable', error: 'aborted' });
  t.ok(outcome.durationMs < 2000, `promptly (${outcome.durationMs} ms)`);

  const before = receiver.requests.length;
  t.match(await s.send({ webhookId, body, signal: AbortSignal.abort() }), { kind: 'retryable', error: 'aborted' });
  t.equal(receiver.requests.length, before, 'an already aborted signal sends nothing');
});

t.test('credentials echoed back by the backend are not recorded', async (t) => {
  const receiver = await startReceiver(t, (_req, res, received) => {
    res.writeHead(400, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: 'bad', headers: received.headers }));
  });
  const outcome = await sender(t, {
    url: receiver.url,
    token: 'sekrit-token-value',
    secrets: parseSecrets(secretNew),
  }).send({ webhookId, body });
  const signature = receiver.requests[0]!.headers['webhook-signature'] as string;
  t.equal(outcome.kind, 'rejected');
  for (const text of [outcome.error!, outcome.responseSnippet!]) {
    t.notOk(text.includes('sekrit-token-value'), 'no token');
    t.notOk(text.includes(signature.slice(3)), 'no signature');
  }
  t.match(outcome.responseSnippet, '"authorization":"Bearer [redacted]"');
  t.match(outcome.responseSnippet, '"webhook-signature":"v1,[redacted]"');
});

t.test(
  'an answer is cleaned of known values in any echo, of credential shapes, and of a cut-off secret at its end',
  async (t) => {
    const known = ['tok/en+value', 'sekrit-token-value'];
    t.equal(
      redactCredentials('a tok/en+value b tok%2Fen%2Bvalue c tok\\/en+value', known),
      'a [redacted] b [redacted] c [redacted]',
    );
    t.equal(
      redactCredentials('sig v1,abc\\/defghijklmnopqrstuvwxyz0123= key whsec_QUJD\\/REVG= auth Bearer abc.def-ghi', []),
      'sig v1,[redacted] key [redacted] auth Bearer [redacted]',
    );
    t.equal(
      redactCredentials('go to https://sync:hunter22@login.example/x', []),
      'go to https://sync:[redacted]@login.example/x',
    );
    t.equal(redactCredentials('jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl end', []), 'jwt [redacted] end');
    t.equal(redactCredentials('Bearer token required', []), 'Bearer token required', 'a sentence about tokens stays');
    t.equal(dropPartialTail('… the token is sekrit-tok', known), '… the token is [redacted]');
    t.equal(dropPartialTail('… ends with sek', known), '… ends with sek', 'three characters say nothing');
  },
);

t.test('a redirect to an address carrying the token or a signature records the address without them', async (t) => {
  const receiver = await startReceiver(t, (req, res) => {
    const signature = String(req.headers['webhook-signature']);
    res.writeHead(302, {
      location: `https://login.example/cb?token=sekrit-token-value&sig=${encodeURIComponent(signature)}`,
    });
    res.end();
  });
  const outcome = await sender(t, {
    url: receiver.url,
    token: 'sekrit-token-value',
    secrets: parseSecrets(secretNew),
  }).send({ webhookId, body });
  const signature = receiver.requests[0]!.headers['webhook-signature'] as string;
  t.match(outcome, {
    kind: 'rejected',
    status: 302,
    error: /^HTTP 302: redirects are not followed \(Location: https:\/\/login\.example\/cb\?token=\[redacted\]&sig=/,
  });
  t.notOk(outcome.error!.includes(encodeURIComponent(signature.slice(3))), 'no signature');
});

t.test('connections to the backend are bounded', async (t) => {
  let inFlight = 0;
  let peak = 0;
  const receiver = await startReceiver(t, (_req, res) => {
    peak = Math.max(peak, ++inFlight);
    setTimeout(() => {
      inFlight--;
      res.end();
    }, 50);
  });
  const s = sender(t, { url: receiver.url, connections: 2 });
  const outcomes = await Promise.all(Array.from({ length: 6 }, () => s.send({ webhookId, body })));
  t.ok(outcomes.every((o) => o.kind === 'delivered'));
  t.equal(peak, 2);
  t.equal(receiver.connections(), 2);
});

t.test('parseBackendUrl', async (t) => {
  t.equal(
    parseBackendUrl(' https://backend:8443/internal/users/sync?x=1 ').href,
    'https://backend:8443/internal/users/sync?x=1',
  );
  const cases: [string | undefined, RegExp][] = [
    [undefined, /^BACKEND_SYNC_URL is not set; /],
    ['  ', /^BACKEND_SYNC_URL is not set; /],
    ['backend/sync', /^BACKEND_SYNC_URL is not a valid URL; /],
    ['ftp://backend/sync', /^BACKEND_SYNC_URL must be an http:\/\/ or https:\/\/ URL, not ftp:\/\/\.$/],
    ['http://user:pa55@backend/sync', /^BACKEND_SYNC_URL must not contain a user name or password; /],
  ];
  for (const [raw, message] of cases) {
    const err = t.throws(() => parseBackendUrl(raw)) as Error;
    t.ok(err instanceof UsageError);
    t.match(err.message, message);
    t.notOk(err.message.includes('pa55'), 'never echoes credentials');
  }
  t.match((t.throws(() => parseBackendUrl(undefined, '--url')) as Error).message, /^--url is not set/);
  t.throws(() => createWebhookSender({ url: 'mailto:x@y', secrets: [], timeoutMs: 1000 }), UsageError);
});
