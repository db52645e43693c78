/**
 * A CRM's receiver of loyalty-vault events, runnable as it is:
 *
 *   WEBHOOK_SECRET=whsec_… PORT=4000 npx tsx docs/examples/crm-receiver.ts
 *
 * What every receiver must do, in this order:
 * 1. read the raw body (a JSON parser that re-serialises would break the signature);
 * 2. verify it with the Standard Webhooks library: HMAC over `webhook-id.webhook-timestamp.body`,
 *    every `v1,…` of `webhook-signature` tried (two during a secret rotation), timestamp within ±5 min;
 * 3. dedupe on `webhook-id`: delivery is at least once, and an event keeps its id on every retry;
 * 4. answer 2xx quickly (work later); 410 tells the service to stop sending for good.
 *
 * Events of one shopper arrive in ledger order; `data.balance` is the balance after the change.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { Webhook, WebhookVerificationError } from 'standardwebhooks';

export interface LoyaltyEvent {
  readonly id: string;
  readonly type: string;
  readonly timestamp: string;
  readonly data: { readonly shopperReference: string } & Record<string, unknown>;
}

export interface ReceiverOptions {
  readonly secret: string;
  readonly port?: number;
  readonly onEvent: (event: LoyaltyEvent) => void;
}

const MAX_BODY_BYTES = 256 * 1024;

export async function startReceiver(options: ReceiverOptions): Promise<{ url: string; close(): Promise<void> }> {
  const webhook = new Webhook(options.secret);
  // A real CRM keeps seen ids in its database (a unique key), for longer than the retry window.
  const seen = new Set<string>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) req.destroy();
      else chunks.push(chunk);
    });
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let event: LoyaltyEvent;
      try {
        event = webhook.verify(raw, req.headers as Record<string, string>) as LoyaltyEvent;
      } catch (error) {
        res.writeHead(error instanceof WebhookVerificationError ? 401 : 400).end();
        return;
      }
      const id = req.headers['webhook-id'] as string;
      if (!seen.has(id)) {
        seen.add(id);
        options.onEvent(event);
      }
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/loyalty-events`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const secret = process.env['WEBHOOK_SECRET'];
  if (secret === undefined) throw new Error('set WEBHOOK_SECRET to the whsec_… shown when subscribing');
  const receiver = await startReceiver({
    secret,
    port: Number(process.env['PORT'] ?? 4000),
    onEvent: (event) =>
      process.stdout.write(`${event.type} ${event.data.shopperReference} ${JSON.stringify(event.data)}\n`),
  });
  process.stdout.write(`listening on ${receiver.url}\n`);
}
