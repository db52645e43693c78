/**
 * Runs the real service (composition root, migrations, real database) on port 0 for a test file.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { loadConfig, type Config, type Env } from '../../src/config/config.js';
import { buildService, type Service } from '../../src/service.js';
import type { PaymentTransitionListener } from '../../src/payments/payment-service.js';
import type { HostResolver } from '../../src/events/target-policy.js';
import type { Clock } from '../../src/clock/clock.js';
import { TEST_AUDIENCE, TEST_ISSUER, testJwks } from './auth.js';
import { createTestDatabase, type TestDatabase } from './database.js';
import { captureLogs } from './log-capture.js';
import { webhookEnv } from './webhooks.js';

export interface TestService {
  readonly url: string;
  readonly service: Service;
  readonly config: Config;
  readonly db: TestDatabase;
  logs(): string;
  request(method: string, path: string, init?: RequestOptions): Promise<TestResponse>;
  close(): Promise<void>;
}

export interface RequestOptions {
  readonly token?: string;
  readonly json?: unknown;
  readonly body?: string | Buffer;
  readonly headers?: Record<string, string>;
}

export interface TestResponse {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  /** Parsed JSON body (problem+json included); undefined when the body is not JSON. */
  readonly body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

export async function testEnv(extra: Env = {}): Promise<Env> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-test-'));
  return {
    NODE_ENV: 'test',
    DATA_DIR: dataDir,
    MASTER_KEY: randomBytes(32).toString('base64'),
    AUTH_ISSUER: TEST_ISSUER,
    AUTH_AUDIENCE: TEST_AUDIENCE,
    AUTH_PUBLIC_KEYS: JSON.stringify(await testJwks()),
    LOG_LEVEL: 'debug',
    // Tests that deliver events run a dispatcher of their own, round by round (test/events).
    EVENTS_DISPATCHER_ENABLED: 'false',
    ...webhookEnv(),
    ...extra,
  };
}

export interface StartOptions {
  readonly env?: Env;
  readonly db?: TestDatabase;
  readonly paymentListeners?: readonly PaymentTransitionListener[];
  readonly eventResolver?: HostResolver;
  /** The service's clock (default: the system's): a test moves time with it. */
  readonly clock?: Clock;
}

export async function startTestService(options: StartOptions = {}): Promise<TestService> {
  const env = options.env ?? (await testEnv());
  const config = loadConfig(env);
  const db = options.db ?? (await createTestDatabase({ migrated: true }));
  const captured = captureLogs();
  const service = await buildService(config, {
    logger: captured.logger,
    database: db,
    enforceResponseContract: true,
    ...(options.paymentListeners === undefined ? {} : { paymentListeners: options.paymentListeners }),
    ...(options.clock === undefined ? {} : { clock: options.clock }),
    // Tests never reach real DNS: without a resolver of their own, every webhook target is unresolvable.
    eventResolver: options.eventResolver ?? (() => Promise.reject(new Error('no DNS in tests'))),
  });
  const server = http.createServer(service.app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    service,
    config,
    db,
    logs: () => captured.text(),
    request: (method, p, init) => send(url, method, p, init),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await service.close();
      if (options.db === undefined) await db.close();
      if (typeof env['DATA_DIR'] === 'string') fs.rmSync(env['DATA_DIR'], { recursive: true, force: true });
    },
  };
}

export async function send(base: string, method: string, p: string, init: RequestOptions = {}): Promise<TestResponse> {
  const headers: Record<string, string> = { ...init.headers };
  if (init.token !== undefined) headers['authorization'] = `Bearer ${init.token}`;
  let body: string | Buffer | undefined = init.body;
  if (init.json !== undefined) {
    body = JSON.stringify(init.json);
    headers['content-type'] ??= 'application/json';
  }
  // Redirects are returned, not followed: tests assert them (a merged shopper answers 308).
  const res = await fetch(`${base}${p}`, {
    method,
    headers,
    redirect: 'manual',
    ...(body === undefined ? {} : { body }),
  });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, headers: res.headers, text, body: parsed };
}
