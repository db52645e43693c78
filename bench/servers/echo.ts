/**
 * Baseline for benchmarks: the smallest express 5 JSON server, one process, no middleware. It answers
 * every request by echoing its parsed JSON body and prints `{"url": …}` once it listens (PORT, default 0).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';

const app = express();
app.disable('x-powered-by');
app.set('etag', false);
// Parse JSON bodies like the service does, and echo them back: the cost floor of "JSON in, JSON out".
app.use(express.json({ limit: '64kb' }));
app.use((req, res) => {
  res.json({ method: req.method, path: req.path, body: (req.body as unknown) ?? null });
});

const server = http.createServer(app);
server.listen(Number(process.env['PORT'] ?? 0), '127.0.0.1', () => {
  const { port } = server.address() as AddressInfo;
  process.stdout.write(`${JSON.stringify({ url: `http://127.0.0.1:${port}` })}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
