// A trivial backend for benchmarks, in its own process: answers 200 to every POST, counts them.
import { createServer } from 'node:http';

let count = 0;
const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    count++;
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': '16' });
    res.end('{"success":true}');
  });
});
server.keepAliveTimeout = 60_000;
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});
process.on('message', (msg) => {
  if (msg === 'count') process.send?.({ count });
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
