/**
 * One POST of a signed event to a subscriber, over node:http(s) (which nock intercepts in tests).
 *
 * - The connection goes to the address the target policy checked: `lookup` is pinned to it, so a
 *   DNS answer changed between the check and the connect (DNS rebinding) cannot redirect it. TLS
 *   still verifies the certificate against the URL's host name.
 * - Redirects are never followed (node:http does not): a 3xx is a failed attempt.
 * - The whole exchange has a deadline (AbortSignal); at most `maxResponseBytes` of the answer are
 *   read, then the connection is dropped: only the status and `Retry-After` matter.
 * - The URL carries nothing of ours: the signature travels in headers.
 */
import http from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import type { ResolvedAddress } from './target-policy.js';

export interface DeliveryRequest {
  readonly url: URL;
  readonly address: ResolvedAddress;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
  readonly timeoutMs: number;
  readonly maxResponseBytes: number;
}

export type DeliveryResult =
  | { readonly kind: 'response'; readonly status: number; readonly retryAfter: string | undefined }
  | { readonly kind: 'timeout' }
  | { readonly kind: 'network'; readonly code: string };

export type WebhookSender = (request: DeliveryRequest) => Promise<DeliveryResult>;

export const postWebhook: WebhookSender = (request) =>
  new Promise<DeliveryResult>((resolve) => {
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, request.timeoutMs);
    const done = (result: DeliveryResult): void => {
      clearTimeout(timer);
      resolve(result);
    };
    const pinned: LookupFunction = (_hostname, options, callback) => {
      const { address, family } = request.address;
      if (options.all === true)
        (callback as (e: null, a: { address: string; family: number }[]) => void)(null, [{ address, family }]);
      else callback(null, address, family);
    };
    const transport = request.url.protocol === 'https:' ? https : http;
    const req = transport.request(request.url, {
      method: 'POST',
      headers: {
        ...request.headers,
        'content-type': 'application/json',
        'content-length': String(Buffer.byteLength(request.body)),
        'user-agent': 'loyalty-vault-webhooks/1',
      },
      lookup: pinned,
      agent: false,
      signal: controller.signal,
    });
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      const header: string | string[] | undefined = res.headers['retry-after'];
      const result: DeliveryResult = {
        kind: 'response',
        status,
        retryAfter: typeof header === 'string' ? header : header?.[0],
      };
      let read = 0;
      res.on('data', (chunk: Buffer) => {
        read += chunk.length;
        if (read > request.maxResponseBytes) {
          // Enough: the answer's status is known, its body is not needed.
          res.destroy();
          done(result);
        }
      });
      res.on('end', () => done(result));
      res.on('error', () => done(timedOut ? { kind: 'timeout' } : result));
      res.on('close', () => done(timedOut ? { kind: 'timeout' } : result));
    });
    req.on('error', (error: NodeJS.ErrnoException) => {
      done(timedOut ? { kind: 'timeout' } : { kind: 'network', code: safeCode(error.code) });
    });
    req.end(request.body);
  });

/** Node's error codes (ECONNREFUSED…) are safe to record; anything else is summarised. */
function safeCode(code: string | undefined): string {
  return code !== undefined && /^[A-Z0-9_]{2,40}$/.test(code) ? code : 'NETWORK_ERROR';
}
