import fc from 'fast-check';
import t from 'tap';
import { buildWebhookBody, usernameOf, WEBHOOK_BODY_KEYS, type WebhookAction } from '../src/webhook/body.ts';
import { createTestDatabase } from './helpers/db.ts';

const full = {
  id: 'bcb49293-a730-47a0-b158-222d220d308b',
  email: 'user@example.com',
  username: 'johndoe',
  displayName: 'John Doe',
  avatar: 'https://example.com/avatar.jpg',
  role: 'user',
  isActive: true,
};

t.test('matches the contract example byte for byte', async (t) => {
  t.equal(
    buildWebhookBody(full, 'created'),
    '{"id":"bcb49293-a730-47a0-b158-222d220d308b","email":"user@example.com","username":"johndoe","displayName":"John Doe","avatar":"https://example.com/avatar.jpg","role":"user","isActive":true,"action":"created"}',
  );
});

t.test('has exactly the contract keys, in order, whatever the snapshot holds', async (t) => {
  // jsonb hands keys back in its own order and the snapshot may carry more than the contract.
  const shuffled = {
    role: 'admin',
    password: '$2a$10$secret-hash',
    isActive: false,
    avatar: null,
    extra: 1,
    displayName: 'X',
    username: 'x',
    email: 'x@example.com',
    id: '1',
  };
  const body = buildWebhookBody(shuffled, 'updated');
  t.same(Object.keys(JSON.parse(body) as object), [...WEBHOOK_BODY_KEYS]);
  t.notMatch(body, /password|extra|\$2a/);
});

t.test('NULL and missing strings become "", isActive false', async (t) => {
  const parsed = JSON.parse(
    buildWebhookBody({ id: 'u1', email: null, username: undefined, isActive: null }, 'deleted'),
  ) as Record<string, unknown>;
  t.same(parsed, {
    id: 'u1',
    email: '',
    username: '',
    displayName: '',
    avatar: '',
    role: '',
    isActive: false,
    action: 'deleted',
  });
});

t.test('non-strings are converted with String()', async (t) => {
  const parsed = JSON.parse(buildWebhookBody({ ...full, id: 42, role: 7n }, 'created')) as Record<string, unknown>;
  t.equal(parsed.id, '42');
  t.equal(parsed.role, '7');
});

t.test('isActive accepts booleans and Postgres text spellings', async (t) => {
  const isActive = (value: unknown) =>
    (JSON.parse(buildWebhookBody({ ...full, isActive: value }, 'updated')) as { isActive: unknown }).isActive;
  t.equal(isActive(true), true);
  t.equal(isActive('t'), true);
  t.equal(isActive('true'), true);
  t.equal(isActive(false), false);
  t.equal(isActive('f'), false);
  t.equal(isActive('false'), false);
  t.equal(isActive(undefined), false);
});

t.test('escapes quotes, control characters and keeps unicode', async (t) => {
  const displayName = 'Zoë "the \\ quote"\n\u0000 日本 😀';
  const body = buildWebhookBody({ ...full, displayName }, 'updated');
  t.equal((JSON.parse(body) as { displayName: string }).displayName, displayName);
  t.match(body, /"displayName":"Zoë \\"the \\\\ quote\\"\\n\\u0000 日本 😀"/);
});

t.test('every action is written as given; anything else is refused', async (t) => {
  for (const action of ['created', 'updated', 'deleted'] as const) {
    t.match(buildWebhookBody(full, action), new RegExp(`,"action":"${action}"}$`));
  }
  t.throws(() => buildWebhookBody(full, 'upserted' as WebhookAction), TypeError);
});

t.test('capture renders the same bytes this builder does, and usernameOf reads them back, for any text', async (t) => {
  const db = await createTestDatabase(t);
  // Any Unicode but NUL (Postgres text cannot hold it) and lone surrogates (not valid UTF-8).
  const text = fc
    .string({ unit: 'binary', maxLength: 24 })
    .filter((s) => !/\0|[\uD800-\uDFFF]/u.test(s.replace(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g, '')));
  let n = 0;
  await fc.assert(
    fc.asyncProperty(text, text, text, fc.option(text, { nil: null }), async (email, username, first, avatar) => {
      n++;
      await db.pool.query(
        'insert into users (email, username, password, first_name, last_name, avatar) values ($1, $2, $3, $4, null, $5)',
        [`${n}:${email}`, `${n}:${username}`, 'x', first, avatar],
      );
      const { rows } = await db.pool.query<{ body: string }>(
        'select body from suekk_sync.events order by id desc limit 1',
      );
      const body = rows[0]!.body;
      const parsed = JSON.parse(body) as Record<string, unknown>;
      t.equal(body, buildWebhookBody(parsed, 'created'), 'the same escaping and key order as JSON.stringify');
      t.equal(parsed.email, `${n}:${email}`);
      t.equal(parsed.username, `${n}:${username}`);
      t.equal(parsed.avatar, avatar ?? '');
      t.equal(usernameOf(body), `${n}:${username}`);
    }),
    { numRuns: 60 },
  );
});
