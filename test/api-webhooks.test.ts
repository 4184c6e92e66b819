/** The whole loop: API writes → trigger → outbox → relay → a real receiver, signed. */
import t from 'tap';
import { Webhook } from 'standardwebhooks';
import { createApiServer } from '../src/api/server.ts';
import { generateSecret } from '../src/webhook/signature.ts';
import { createTestDatabase } from './helpers/db.ts';
import { startReceiver, waitFor } from './helpers/receiver.ts';
import { startTestRelay } from './helpers/relay.ts';

t.test('register, update and delete each arrive at the backend as the right signed webhook', async (t) => {
  const db = await createTestDatabase(t);
  const receiver = await startReceiver(t);
  const secret = generateSecret();
  await startTestRelay(t, db, receiver.url, { secrets: [secret] });
  const app = createApiServer({ pool: db.pool, jwtSecret: 'loop-test-secret-0123456789abcdef01234567' });
  const base = await app.listen({ port: 0, host: '127.0.0.1' });
  t.teardown(() => app.close());
  const call = async (method: string, path: string, body?: unknown, token?: string) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: {
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : undefined };
  };

  const reg = await call('POST', '/api/v1/auth/register', {
    email: 'loop@example.com',
    username: 'looper',
    password: 'correct-horse',
    firstName: 'Lou',
    lastName: 'Per',
  });
  t.equal(reg.status, 201);
  const token = reg.json.token as string;
  const id = reg.json.user.id as string;
  t.equal((await call('POST', '/api/v1/auth/login', { username: 'looper', password: 'correct-horse' })).status, 200);
  t.equal(
    (await call('PUT', '/api/v1/users/profile', { firstName: 'Louise', avatar: 'https://example.com/l.png' }, token))
      .status,
    200,
  );
  t.equal((await call('DELETE', '/api/v1/users/profile', undefined, token)).status, 204);

  await waitFor(() => receiver.delivered.length === 3, 'three webhooks');
  t.same(
    receiver.delivered.map((r) => r.body),
    [
      {
        id,
        email: 'loop@example.com',
        username: 'looper',
        displayName: 'Lou Per',
        avatar: '',
        role: 'user',
        isActive: true,
        action: 'created',
      },
      {
        id,
        email: 'loop@example.com',
        username: 'looper',
        displayName: 'Louise Per',
        avatar: 'https://example.com/l.png',
        role: 'user',
        isActive: true,
        action: 'updated',
      },
      {
        id,
        email: 'loop@example.com',
        username: 'looper',
        displayName: 'Louise Per',
        avatar: 'https://example.com/l.png',
        role: 'user',
        isActive: true,
        action: 'deleted',
      },
    ],
    'login changes only last_login_at: no webhook',
  );
  for (const r of receiver.delivered) {
    t.doesNotThrow(() => new Webhook(secret).verify(r.rawBody, r.headers as Record<string, string>));
    t.notMatch(r.rawBody, /\$2[aby]\$/, 'no password hash leaves the database');
  }
});
