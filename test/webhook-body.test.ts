import t from 'tap';
import { buildWebhookBody, WEBHOOK_BODY_KEYS, type WebhookAction } from '../src/webhook/body.ts';

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
