/**
 * Helpers for outbound-event tests: a fake DNS (hosts mapped to public or internal addresses), a
 * receiver mocked with nock that verifies every delivery with the `standardwebhooks` library, a
 * dispatcher of the test's own driven round by round on a frozen clock, and subscriptions made
 * through the API.
 */
import { expect } from 'chai';
import type { Knex } from 'knex';
import nock from 'nock';
import { Webhook } from 'standardwebhooks';
import { EventDispatcher, type DispatcherOptions } from '../../src/events/dispatcher.js';
import { EVENT_TYPES } from '../../src/events/event-types.js';
import type { WebhookSender } from '../../src/events/http-sender.js';
import type { HostResolver, ResolvedAddress } from '../../src/events/target-policy.js';
import { signToken } from '../support/auth.js';
import type { TestService } from '../support/harness.js';

/** Host names of the tests and what the fake DNS answers; change an entry to rebind a host. */
export const HOSTS: Record<string, readonly ResolvedAddress[]> = {
  'crm.example.com': [{ address: '151.101.1.69', family: 4 }],
  'app.example.com': [{ address: '2a04:4e42::69', family: 6 }],
  'gone.example.com': [{ address: '151.101.65.69', family: 4 }],
  'flaky.example.com': [{ address: '151.101.129.69', family: 4 }],
  'internal.example.com': [{ address: '10.0.4.2', family: 4 }],
  'metadata.example.com': [{ address: '169.254.169.254', family: 4 }],
  'mixed.example.com': [
    { address: '151.101.193.69', family: 4 },
    { address: '192.168.1.10', family: 4 },
  ],
  'mapped.example.com': [{ address: '::ffff:127.0.0.1', family: 6 }],
  'ula.example.com': [{ address: 'fd12:3456::1', family: 6 }],
  'cgnat.example.com': [{ address: '100.64.0.1', family: 4 }],
  // A DNS64 answer: on a NAT64 network this AAAA reaches 10.0.0.5.
  'nat64.example.com': [{ address: '64:ff9b::a00:5', family: 6 }],
};

export const fakeResolver: HostResolver = (hostname) => {
  const found = HOSTS[hostname];
  return found === undefined ? Promise.reject(new Error('ENOTFOUND')) : Promise.resolve(found);
};

export const TEST_DISPATCH: DispatcherOptions = {
  pollIntervalMs: 20,
  batchSize: 50,
  maxInFlightPerSubscription: 50,
  breakerThreshold: 100,
  breakerCooldownMs: 60_000,
  maxAttempts: 4,
  backoffBaseMs: 1_000,
  backoffMaxMs: 8_000,
  retryAfterMaxMs: 60_000,
  timeoutMs: 2_000,
  maxResponseBytes: 1024,
};

/**
 * The dispatcher's clock: real time plus what the test has skipped, so that retries become due
 * without sleeping, events written meanwhile (stamped with real time) are never in its future, and
 * signatures stay within the receiver's ±5 minute tolerance as long as a test skips less than that.
 */
export class TestClock {
  private skipped = 0;
  now = (): Date => new Date(Date.now() + this.skipped);
  /** What the dispatcher adds to the database clock (leases and retries are on the database's). */
  offsetMs = (): number => this.skipped;
  advance(ms: number): void {
    this.skipped += ms;
  }
}

/** Every table as JSON (bytea as hex): what a leak scan reads. */
export async function dumpTables(knex: Knex): Promise<string> {
  const tables = (await knex('information_schema.tables')
    .where({ table_schema: 'public', table_type: 'BASE TABLE' })
    .pluck('table_name')) as string[];
  const parts: string[] = [];
  for (const table of tables) {
    const rows = (await knex(table).select('*')) as Record<string, unknown>[];
    parts.push(
      `-- ${table}\n${JSON.stringify(rows, (_k, v: unknown) => (isBufferJson(v) ? Buffer.from(v.data).toString('hex') : v))}`,
    );
  }
  return parts.join('\n');
}

function isBufferJson(v: unknown): v is { type: 'Buffer'; data: number[] } {
  return typeof v === 'object' && v !== null && (v as { type?: unknown }).type === 'Buffer';
}

export function testDispatcher(
  svc: TestService,
  clock: TestClock,
  options: Partial<DispatcherOptions> = {},
  send?: WebhookSender,
): EventDispatcher {
  return new EventDispatcher({
    knex: svc.db.knex,
    keyRing: svc.service.keyRing,
    targets: { resolver: fakeResolver, allowHttp: false, allowPrivate: false },
    options: { ...TEST_DISPATCH, ...options },
    now: clock.now,
    clockOffsetMs: clock.offsetMs,
    random: () => 0.5,
    ...(send === undefined ? {} : { send }),
  });
}

/** Runs rounds until nothing is due now (a bounded number, so a bug cannot hang the test). */
export async function drain(dispatcher: EventDispatcher, rounds = 50): Promise<number> {
  let total = 0;
  for (let i = 0; i < rounds; i++) {
    const done = await dispatcher.runOnce();
    if (done.length === 0) return total;
    total += done.length;
  }
  throw new Error('the dispatcher kept finding work');
}

export interface Received {
  readonly id: string;
  readonly type: string;
  readonly shopperReference: string;
  readonly body: string;
  readonly data: Record<string, unknown>;
  readonly headers: Record<string, string>;
}

/**
 * A receiver at `origin` + `path`: every delivery is verified with `standardwebhooks` against each
 * of `secrets()` (all must verify: the test passes the secrets it expects to sign) before `answer`
 * decides the status. Verified deliveries are recorded in arrival order.
 */
export function receiver(
  origin: string,
  path: string,
  secrets: () => readonly string[],
  answer: (event: Received, nth: number) => number | [number, Record<string, string>] = () => 204,
): { received: Received[]; rejected: string[]; scope: nock.Scope } {
  const received: Received[] = [];
  const rejected: string[] = [];
  const scope = nock(origin)
    .persist()
    .post(path)
    .reply(function () {
      const raw = Buffer.concat((this.req as unknown as { requestBodyBuffers: Buffer[] }).requestBodyBuffers).toString(
        'utf8',
      );
      const headers = Object.fromEntries(Object.entries(this.req.headers).map(([k, v]) => [k, String(v)]));
      try {
        for (const secret of secrets()) new Webhook(secret).verify(raw, headers);
      } catch (error) {
        rejected.push(`${headers['webhook-id']}: ${(error as Error).message}`);
        return [401, ''];
      }
      const parsed = JSON.parse(raw) as { id: string; type: string; data: Record<string, unknown> };
      expect(parsed.id).to.equal(headers['webhook-id']);
      const event: Received = {
        id: parsed.id,
        type: parsed.type,
        shopperReference: parsed.data['shopperReference'] as string,
        body: raw,
        data: parsed.data,
        headers,
      };
      received.push(event);
      const status = answer(event, received.length);
      return Array.isArray(status) ? [status[0], '', status[1]] : [status, ''];
    });
  return { received, rejected, scope };
}

export async function subscribe(
  svc: TestService,
  url: string,
  eventTypes: readonly string[],
): Promise<{ id: string; secret: string }> {
  const res = await svc.request('POST', '/v1/admin/subscriptions', {
    token: await signToken({ scope: 'loyalty:admin' }),
    json: { url, eventTypes },
  });
  expect(res.status, res.text).to.equal(201);
  return { id: res.body.id as string, secret: res.body.secret as string };
}

/** Every event type the service emits (a subscriber to all of them). */
export const ALL_TYPES = EVENT_TYPES;
