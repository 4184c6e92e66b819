/** The logger censors sensitive keys wherever a caller puts them, and leaves the rest as it was. */
import { Writable } from 'node:stream';
import t from 'tap';
import { censorFields, createLogger } from '../src/logger.ts';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n'))
        if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { lines, logger: createLogger('info', sink) };
}

t.test('secrets, tokens, passwords and signatures are censored at the top and nested', async (t) => {
  const { lines, logger } = capture();
  logger.info(
    {
      secret: 'whsec_top',
      token: 'tok_top',
      Password: 'hunter2',
      headers: { authorization: 'Bearer abc', 'webhook-signature': 'v1,sig', accept: 'json' },
      req: { headers: { authorization: 'Bearer deep' }, url: '/x' },
      relay: { secrets: ['whsec_a', 'whsec_b'], url: 'http://backend' },
      userId: 'u-1',
    },
    'a line',
  );
  const line = lines[0]!;
  const text = JSON.stringify(line);
  for (const value of [
    'whsec_top',
    'tok_top',
    'hunter2',
    'Bearer abc',
    'v1,sig',
    'Bearer deep',
    'whsec_a',
    'whsec_b',
  ]) {
    t.notOk(text.includes(value), `${value} never reaches the line`);
  }
  t.match(line, {
    secret: '[redacted]',
    token: '[redacted]',
    Password: '[redacted]',
    headers: { authorization: '[redacted]', 'webhook-signature': '[redacted]', accept: 'json' },
    req: { headers: { authorization: '[redacted]' }, url: '/x' },
    relay: { secrets: '[redacted]', url: 'http://backend' },
    userId: 'u-1',
    msg: 'a line',
  });
});

t.test('a line without sensitive keys is logged as given, errors included', async (t) => {
  const fields = { eventId: '1', status: 200, nested: { a: 1 } };
  t.equal(censorFields(fields), fields, 'nothing to censor: the same object, not a copy');
  const { lines, logger } = capture();
  logger.error({ err: new Error('boom'), eventId: '7' }, 'failed');
  t.match(lines[0], { err: { message: 'boom', type: 'Error' }, eventId: '7', msg: 'failed' });
  const caller = { password: 'x', headers: { token: 'y' } };
  censorFields(caller);
  t.same(caller, { password: 'x', headers: { token: 'y' } }, "the caller's object is left untouched");
});
