import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import t from 'tap';
import { Webhook } from 'standardwebhooks';
import { UsageError } from '../src/errors.ts';
import {
  generateSecret,
  parseSecrets,
  signWebhook,
  verifyWebhook,
  WebhookSecret,
  WebhookVerificationError,
} from '../src/webhook/signature.ts';

const oldSecret = generateSecret();
const newSecret = generateSecret();
const otherSecret = generateSecret();
const body =
  '{"id":"u1","email":"zoë@example.com","username":"zoe","displayName":"Zoë","avatar":"","role":"user","isActive":true,"action":"created"}';
const webhookId = 'evt_9f2c7f4e-33a4-4d59-9c1a-3f0f6f0b2a11';
const nowSeconds = () => Math.floor(Date.now() / 1000);

function signedHeaders(secrets: string[], timestamp = nowSeconds(), payload: string | Buffer = body) {
  return {
    'webhook-id': webhookId,
    'webhook-timestamp': String(timestamp),
    'webhook-signature': signWebhook({ webhookId, timestamp, body: payload, secrets: parseSecrets(secrets) }),
  };
}

t.test('standardwebhooks verifies what signWebhook signs, with either of two secrets', async (t) => {
  const headers = signedHeaders([oldSecret, newSecret]);
  t.match(headers['webhook-signature'], /^v1,[A-Za-z0-9+/]{43}= v1,[A-Za-z0-9+/]{43}=$/);
  // Receivers rotate on their own schedule: one still on the old secret, one already on the new.
  t.same(new Webhook(oldSecret).verify(body, headers), JSON.parse(body));
  t.same(new Webhook(newSecret).verify(body, headers), JSON.parse(body));
  t.throws(() => new Webhook(otherSecret).verify(body, headers), /No matching signature/);
  t.throws(() => new Webhook(newSecret).verify(body.replace('zoe', 'eve'), headers), /No matching signature/);
});

t.test('a Buffer body signs the same bytes as its string', async (t) => {
  const timestamp = nowSeconds();
  const secrets = parseSecrets(newSecret);
  t.equal(
    signWebhook({ webhookId, timestamp, body: Buffer.from(body), secrets }),
    signWebhook({ webhookId, timestamp, body, secrets }),
  );
});

t.test('verifyWebhook accepts signatures made by standardwebhooks', async (t) => {
  const date = new Date();
  const timestamp = Math.floor(date.getTime() / 1000);
  const signature = [oldSecret, newSecret].map((s) => new Webhook(s).sign(webhookId, date, body)).join(' ');
  const headers = { 'webhook-id': webhookId, 'webhook-timestamp': String(timestamp), 'webhook-signature': signature };

  t.same(
    verifyWebhook({ headers, body, secrets: newSecret }),
    { webhookId, timestamp },
    'receiver knows only the new secret',
  );
  t.same(
    verifyWebhook({ headers, body, secrets: [otherSecret, oldSecret] }),
    { webhookId, timestamp },
    'receiver knows only the old one, among others',
  );
  t.same(
    verifyWebhook({ headers, body, secrets: `${otherSecret},${newSecret}` }),
    { webhookId, timestamp },
    'comma-separated env form',
  );
  t.same(
    verifyWebhook({ headers, body: Buffer.from(body), secrets: parseSecrets(newSecret) }),
    { webhookId, timestamp },
    'raw Buffer body, parsed secrets',
  );

  // Sender still on the old secret only, receiver already knows both.
  const oldOnly = { ...headers, 'webhook-signature': new Webhook(oldSecret).sign(webhookId, date, body) };
  t.same(verifyWebhook({ headers: oldOnly, body, secrets: [newSecret, oldSecret] }), { webhookId, timestamp });
  t.throws(() => verifyWebhook({ headers: oldOnly, body, secrets: newSecret }), { message: 'no matching signature' });
});

t.test('verifyWebhook reads any header shape', async (t) => {
  const headers = signedHeaders([newSecret]);
  const expected = { webhookId, timestamp: Number(headers['webhook-timestamp']) };
  t.same(verifyWebhook({ headers: new Headers(headers), body, secrets: newSecret }), expected, 'fetch Headers');
  const mixedCase = {
    'Webhook-Id': headers['webhook-id'],
    'WEBHOOK-TIMESTAMP': headers['webhook-timestamp'],
    'Webhook-Signature': headers['webhook-signature'],
  };
  t.same(verifyWebhook({ headers: mixedCase, body, secrets: newSecret }), expected, 'mixed-case record');
  t.throws(
    () => verifyWebhook({ headers: { ...headers, 'webhook-id': [webhookId, 'evt_other'] }, body, secrets: newSecret }),
    { message: 'more than one webhook-id header' },
  );
});

t.test('verifyWebhook rejects what it must, saying why', async (t) => {
  const headers = signedHeaders([newSecret]);
  const reject = (options: Partial<Parameters<typeof verifyWebhook>[0]>, reason: string) => {
    const err = t.throws(() => verifyWebhook({ headers, body, secrets: newSecret, ...options }), reason);
    t.ok(err instanceof WebhookVerificationError, `${reason}: a WebhookVerificationError`);
    t.equal((err as Error).message, reason);
  };

  reject({ body: body.replace('"isActive":true', '"isActive":false') }, 'no matching signature');
  reject({ body: Buffer.from(body + ' ') }, 'no matching signature');
  reject({ secrets: otherSecret }, 'no matching signature');
  reject({ headers: { ...headers, 'webhook-id': 'evt_other' } }, 'no matching signature');
  reject(
    { headers: { ...headers, 'webhook-signature': 'v2,' + headers['webhook-signature'].slice(3) } },
    'no matching signature',
  );
  reject({ headers: { ...headers, 'webhook-signature': 'v1,AAAA' } }, 'no matching signature');

  const stale = signedHeaders([newSecret], nowSeconds() - 301);
  reject({ headers: stale }, 'timestamp too old');
  const future = signedHeaders([newSecret], nowSeconds() + 301);
  reject({ headers: future }, 'timestamp too new');
  t.same(
    verifyWebhook({ headers: stale, body, secrets: newSecret, toleranceSeconds: 600 }).webhookId,
    webhookId,
    'a wider tolerance lets it through',
  );
  t.same(
    verifyWebhook({ headers: stale, body, secrets: newSecret, now: new Date((nowSeconds() - 301) * 1000) }).webhookId,
    webhookId,
    'now can be given',
  );

  const { 'webhook-id': _id, ...noId } = headers;
  reject({ headers: noId }, 'missing webhook-id header');
  const { 'webhook-timestamp': _ts, ...noTimestamp } = headers;
  reject({ headers: noTimestamp }, 'missing webhook-timestamp header');
  const { 'webhook-signature': _sig, ...noSignature } = headers;
  reject({ headers: noSignature }, 'missing webhook-signature header');
  reject({ headers: { ...headers, 'webhook-timestamp': '12e9' } }, 'webhook-timestamp is not unix seconds');

  t.throws(() => verifyWebhook({ headers, body, secrets: [] }), UsageError, 'no secret is a configuration error');
});

t.test('parseSecrets', async (t) => {
  const secrets = parseSecrets(` ${oldSecret} ,, ${newSecret},`);
  t.equal(secrets.length, 2, 'comma-separated, blanks and spaces ignored');
  t.ok(secrets.every((s) => s instanceof WebhookSecret && s.key.length === 32));
  t.equal(parseSecrets([oldSecret, `${newSecret},${otherSecret}`]).length, 3, 'list form');
  t.same(parseSecrets(undefined), []);
  t.same(parseSecrets(''), []);
  t.equal(parseSecrets('whsec_' + randomBytes(24).toString('base64'))[0]?.key.length, 24, '24 bytes is enough');

  const short = 'whsec_' + randomBytes(16).toString('base64');
  const noPrefix = randomBytes(32).toString('base64');
  const notBase64 = 'whsec_' + randomBytes(32).toString('base64url').replace(/^./, '-');
  const cases: [string | string[], RegExp][] = [
    [[oldSecret, short], /^WEBHOOK_SECRET entry 2 decodes to only 16 bytes; /],
    [noPrefix, /^WEBHOOK_SECRET does not start with whsec_; /],
    [`${notBase64},${oldSecret}`, /^WEBHOOK_SECRET entry 1 is not valid padded base64 after whsec_; /],
  ];
  for (const [value, message] of cases) {
    const err = t.throws(() => parseSecrets(value)) as Error;
    t.ok(err instanceof UsageError, 'a usage error (exit 2)');
    t.match(err.message, message);
    t.match(err.message, /randomBytes\(32\)/, 'says how to make one');
    for (const secret of [value].flat().flatMap((v) => v.split(','))) {
      t.notOk(err.message.includes(secret.slice(6, 20)), 'never echoes the secret');
    }
  }
  t.match((t.throws(() => parseSecrets('nope', '--secret')) as Error).message, /^--secret does not start/);
});

t.test('generateSecret makes 32-byte secrets standardwebhooks accepts', async (t) => {
  const secret = generateSecret();
  t.match(secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
  t.not(secret, generateSecret());
  t.doesNotThrow(() => new Webhook(secret));
});

t.test('a WebhookSecret never prints its key', async (t) => {
  const [secret] = parseSecrets(newSecret);
  const encoded = newSecret.slice('whsec_'.length);
  for (const printed of [
    JSON.stringify({ secret }),
    inspect(secret),
    inspect({ secret }, { showHidden: true }),
    `${secret}`,
  ]) {
    t.notOk(printed.includes(encoded), printed);
    t.notOk(printed.includes(secret!.key.toString('hex')), printed);
  }
});
