/**
 * The development receiver, as a library and as `suekk-sync receive`, fed real signed requests
 * over loopback.
 */
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import t, { type Test } from 'tap';
import { createReceiver, type ReceivedWebhook, type ReceiverOptions } from '../src/dev/receiver.ts';
import { buildWebhookBody, generateSecret, parseSecrets, signWebhook } from '../src/webhook/index.ts';
import { collect, runCli, startCli } from './helpers/cli.ts';

const SECRET = generateSecret();
const secrets = parseSecrets(SECRET);
const payload = {
  id: 'bcb49293-a730-47a0-b158-222d220d308b',
  email: 'alice@example.com',
  username: 'alice',
  displayName: 'Alice Liddell',
  avatar: 'https://example.com/alice.png',
  role: 'user',
  isActive: true,
};

interface Delivery {
  webhookId?: string;
  body?: string;
  signature?: string | false;
  headers?: Record<string, string>;
}

/** POSTs like the relay does: signed with SECRET unless told otherwise. */
async function deliver(
  url: string,
  { webhookId = `evt_${randomUUID()}`, body, signature, headers = {} }: Delivery = {},
) {
  const raw = body ?? buildWebhookBody(payload, 'created');
  const timestamp = Math.floor(Date.now() / 1000);
  const sent: Record<string, string> = {
    'content-type': 'application/json',
    'webhook-id': webhookId,
    'webhook-timestamp': String(timestamp),
    ...headers,
  };
  if (signature !== false)
    sent['webhook-signature'] = signature ?? signWebhook({ webhookId, timestamp, body: raw, secrets });
  const res = await fetch(url, { method: 'POST', headers: sent, body: raw });
  return { status: res.status, json: (await res.json()) as unknown, webhookId };
}

async function start(t: Test, options: ReceiverOptions = {}) {
  const seen: ReceivedWebhook[] = [];
  const receiver = createReceiver({ ...options, onEvent: (r) => seen.push(r) });
  const url = await receiver.listen(0, '127.0.0.1');
  t.teardown(() => receiver.close());
  return { receiver, url, seen };
}

t.test('a signed request is verified, answered like the reference backend and kept', async (t) => {
  const { receiver, url, seen } = await start(t, { secrets });
  t.match(url, /^http:\/\/127\.0\.0\.1:\d+\/internal\/users\/sync$/);
  const res = await deliver(url);
  t.equal(res.status, 200);
  t.same(res.json, { success: true });
  t.equal(receiver.events.length, 1);
  t.match(receiver.events[0], {
    outcome: 'accepted',
    status: 200,
    webhookId: res.webhookId,
    verified: true,
    payload: { ...payload, action: 'created' },
  });
  t.same(seen, receiver.events);

  const listed = (await (await fetch(new URL('/events', url))).json()) as { counts: unknown; events: unknown[] };
  t.same(listed.counts, { accepted: 1, duplicate: 0, rejected: 0, failed: 0 });
  t.match(listed.events, [{ webhookId: res.webhookId }]);
});

t.test('bad or missing signatures are refused with 401', async (t) => {
  const { receiver, url, seen } = await start(t, { secrets });
  const other = parseSecrets(generateSecret());
  const attempts = [
    await deliver(url, { signature: false }),
    await deliver(url, { signature: 'v1,' + Buffer.alloc(32).toString('base64') }),
    await deliver(url, {
      signature: signWebhook({
        webhookId: 'evt_x',
        timestamp: Math.floor(Date.now() / 1000),
        body: '{}',
        secrets: other,
      }),
    }),
    await deliver(url, { headers: { 'webhook-timestamp': String(Math.floor(Date.now() / 1000) - 3600) } }),
  ];
  t.same(
    attempts.map((a) => a.status),
    [401, 401, 401, 401],
  );
  t.match(attempts[0]!.json, { error: String });
  t.same(receiver.events, [], 'nothing rejected is kept as an event');
  t.same(
    seen.map((r) => r.outcome),
    ['rejected', 'rejected', 'rejected', 'rejected'],
  );
  t.match(seen[0]!.error, /missing webhook-signature/);
  t.match(seen[3]!.error, /timestamp too old/);
});

t.test('a repeated webhook-id is answered 200 but reported as a duplicate', async (t) => {
  const { receiver, url, seen } = await start(t, { secrets });
  const first = await deliver(url);
  const again = await deliver(url, { webhookId: first.webhookId });
  t.equal(again.status, 200);
  t.same(again.json, { success: true });
  t.equal(receiver.events.length, 1);
  t.same(
    seen.map((r) => r.outcome),
    ['accepted', 'duplicate'],
  );
  t.same(receiver.counts, { accepted: 1, duplicate: 1, rejected: 0, failed: 0 });
});

t.test('failRate 1 answers every request 503 and remembers none of them', async (t) => {
  const { receiver, url } = await start(t, { secrets, failRate: 1 });
  const res = await deliver(url);
  t.equal(res.status, 503);
  t.equal((await deliver(url, { webhookId: res.webhookId })).status, 503, 'a redelivery is not taken for a duplicate');
  t.same(receiver.counts, { accepted: 0, duplicate: 0, rejected: 0, failed: 2 });
  t.throws(() => createReceiver({ failRate: 1.5 }), RangeError);
});

t.test(
  'without secrets anything well-formed is accepted, unverified; the token and body are still checked',
  async (t) => {
    const open = await start(t);
    const unsigned = await deliver(open.url, { signature: false });
    t.equal(unsigned.status, 200);
    t.equal(open.receiver.events[0]!.verified, false);
    t.same((await deliver(open.url, { body: 'not json' })).json, { error: 'Invalid payload' });
    t.equal((await fetch(open.url)).status, 405);
    t.equal((await fetch(new URL('/elsewhere', open.url), { method: 'POST', body: '{}' })).status, 404);

    const guarded = await start(t, { token: 'sync-token' });
    t.equal((await deliver(guarded.url)).status, 401);
    t.equal((await deliver(guarded.url, { headers: { authorization: 'Bearer sync-token' } })).status, 200);
  },
);

t.test('delayMs holds each answer back', async (t) => {
  const { url } = await start(t, { delayMs: 150 });
  const started = Date.now();
  t.equal((await deliver(url)).status, 200);
  t.ok(Date.now() - started >= 140, 'answered after the delay');
});

/** Resolves with the first match of `pattern` in what the child has printed so far or prints next. */
function waitForOutput(child: ChildProcess, pattern: RegExp, timeoutMs = 20_000): Promise<RegExpExecArray> {
  let output = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${pattern} in: ${output}`)), timeoutMs);
    const onData = (chunk: Buffer) => {
      output += chunk.toString('utf8');
      const match = pattern.exec(output);
      if (match) {
        clearTimeout(timer);
        child.stdout!.off('data', onData);
        resolve(match);
      }
    };
    child.stdout!.on('data', onData);
  });
}

t.test('suekk-sync receive prints each event and rejection, and stops on SIGTERM', async (t) => {
  const child = startCli(['receive', '--port', '0', '--secret', SECRET]);
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const finished = collect(child, 30_000);
  const url = (await waitForOutput(child, /Receiving webhooks at (\S+) \(verifying signatures with 1 secret\)/))[1]!;

  const printed = waitForOutput(child, /✗ rejected .*\n/);
  const accepted = await deliver(url);
  t.equal(accepted.status, 200);
  t.equal((await deliver(url, { webhookId: accepted.webhookId })).status, 200);
  t.equal((await deliver(url, { signature: 'v1,AAAA' })).status, 401);
  await printed;

  child.kill('SIGTERM');
  const result = await finished;
  t.equal(result.code, 0, result.stderr);
  t.match(result.stdout, new RegExp(`✓ created +alice \\(bcb49293…\\)  ${accepted.webhookId}  signature verified`));
  t.match(result.stdout, new RegExp(`↺ duplicate alice \\(bcb49293…\\)  ${accepted.webhookId}`));
  t.match(result.stdout, /✗ rejected .* 401: bad signature: no matching signature/);
  t.match(result.stdout, /Stopped: 1 received, 1 duplicate, 1 rejected, 0 failed\./);
});

t.test('suekk-sync receive --json prints one JSON object per request', async (t) => {
  const child = startCli(['receive', '--port', '0', '--json'], { env: { WEBHOOK_SECRET: SECRET } });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const finished = collect(child, 30_000);
  const url = await new Promise<string>((resolve) => {
    child.stderr!.on('data', () => {
      const match = /Receiving webhooks at (\S+)/.exec(stderr);
      if (match) resolve(match[1]!);
    });
  });
  const line = waitForOutput(child, /^.*\n/);
  const sent = await deliver(url);
  const event = JSON.parse((await line)[0]) as Record<string, unknown>;
  t.match(event, {
    outcome: 'accepted',
    status: 200,
    webhookId: sent.webhookId,
    verified: true,
    payload: { username: 'alice', action: 'created' },
  });
  child.kill('SIGTERM');
  const result = await finished;
  t.equal(result.code, 0);
  t.equal(result.stdout.trim().split('\n').length, 1, 'stdout carries only the event lines');
});

t.test('suekk-sync receive refuses bad flags with exit 2', async (t) => {
  const results = await Promise.all([
    runCli(['receive', '--fail-rate', '1.5']),
    runCli(['receive', '--secret', 'not-a-secret']),
  ]);
  t.same(
    results.map((r) => r.code),
    [2, 2],
  );
  t.match(
    results[0].stderr,
    /option '--fail-rate <rate>' argument '1\.5' is invalid\. It must be a number from 0 to 1;/,
  );
  t.match(results[1].stderr, /--secret does not start with whsec_/);
  t.notMatch(results[1].stderr, /not-a-secret/, 'the secret is not echoed');
});
