/** A real HTTP backend on loopback whose answers each test programs, recording every request. */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ReceivedRequest {
  n: number;
  headers: IncomingHttpHeaders;
  rawBody: string;
  body: Record<string, unknown>;
  webhookId: string;
  at: number;
}

export interface Answer {
  status?: number;
  headers?: Record<string, string>;
  body?: string;
  delayMs?: number;
  /** Accept the request and never answer. */
  hang?: boolean;
}

export type Responder = (req: ReceivedRequest) => Answer | Promise<Answer>;

export interface TestReceiver {
  url: string;
  port: number;
  requests: ReceivedRequest[];
  /** Requests answered 2xx, in arrival order. */
  delivered: ReceivedRequest[];
  respond: Responder;
  close(): Promise<void>;
}

export async function startReceiver(
  t: { teardown(fn: () => unknown): void },
  respond: Responder = () => ({ status: 200 }),
  port = 0,
): Promise<TestReceiver> {
  const requests: ReceivedRequest[] = [];
  const delivered: ReceivedRequest[] = [];
  const receiver: TestReceiver = { url: '', port: 0, requests, delivered, respond, close: async () => undefined };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const rawBody = Buffer.concat(chunks).toString('utf8');
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(rawBody) as Record<string, unknown>;
      } catch {
        // recorded as received; the test decides
      }
      const record: ReceivedRequest = {
        n: requests.length + 1,
        headers: req.headers,
        rawBody,
        body,
        webhookId: String(req.headers['webhook-id'] ?? ''),
        at: performance.now(),
      };
      requests.push(record);
      const answer = await receiver.respond(record);
      if (answer.hang) return;
      if (answer.delayMs) await new Promise((r) => setTimeout(r, answer.delayMs));
      const status = answer.status ?? 200;
      if (status >= 200 && status < 300) delivered.push(record);
      res.writeHead(status, { 'content-type': 'application/json', ...answer.headers });
      res.end(answer.body ?? (status < 300 ? '{"success":true}' : '{"error":"nope"}'));
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const address = server.address() as AddressInfo;
  receiver.port = address.port;
  receiver.url = `http://127.0.0.1:${address.port}/internal/users/sync`;
  receiver.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  t.teardown(() => receiver.close());
  return receiver;
}

/** Polls until `check` is true; fails with `what` and the last state when it does not happen. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 15_000,
  describe?: () => unknown,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (performance.now() > deadline) {
      throw new Error(
        `Timed out after ${timeoutMs} ms waiting for ${what}${describe ? `; state: ${JSON.stringify(describe())}` : ''}`,
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
