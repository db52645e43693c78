/**
 * What the fault scenarios share: a storm of signed platform webhooks (authorise, capture, partial
 * refunds, chargebacks, shuffled across payments), the service as child processes (the real entry
 * point, src/main.ts), a gateway that sends with bounded concurrency across instances and redelivers
 * what it did not see acknowledged, and the observable end state to compare against a crash-free run.
 */
import { randomBytes, randomInt } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Knex } from 'knex';
import { startChildServer, type ChildServer } from '../../bench/lib/child-server.js';
import { projectRoot } from '../../src/config/project-root.js';
import { TEST_AUDIENCE, TEST_ISSUER, testJwks } from '../support/auth.js';
import { TEST_PANS } from '../support/pans.js';
import { platformEvent, platformHeaders, webhookEnv } from '../support/webhooks.js';

export interface Delivery {
  readonly id: string;
  readonly body: string;
}

/** Authorise, capture, two partial refunds and, for one in five, a chargeback: shuffled across payments. */
export function buildDeliveries(payments: number): Delivery[] {
  const pans = [...TEST_PANS.visa, ...TEST_PANS.mastercard];
  const out: Delivery[] = [];
  for (let p = 0; p < payments; p++) {
    const paymentId = `storm-${p}-${randomBytes(3).toString('hex')}`;
    const events = [
      platformEvent({ paymentId, amount: 10_000 + p, card: { pan: pans[p % pans.length] as string } }),
      platformEvent({ type: 'payment.captured', paymentId, amount: 10_000 + p }),
      platformEvent({ type: 'payment.refunded', paymentId, refund: { id: `${paymentId}-r1`, amount: 1_000 } }),
      platformEvent({ type: 'payment.refunded', paymentId, refund: { id: `${paymentId}-r2`, amount: 2_000 } }),
    ];
    if (p % 5 === 0) {
      events.push(
        platformEvent({ type: 'payment.chargeback', paymentId, chargeback: { id: `${paymentId}-cb`, amount: 3_000 } }),
      );
    }
    events.forEach((event, i) => out.push({ id: `msg_${paymentId}_${i}`, body: JSON.stringify(event) }));
  }
  for (let i = out.length - 1; i > 0; i--) {
    const j = randomInt(i + 1);
    [out[i], out[j]] = [out[j] as Delivery, out[i] as Delivery];
  }
  return out;
}

export interface ServiceOptions {
  readonly databaseUrl: string;
  readonly masterKey: string;
  readonly dir: string;
  readonly name?: string;
  readonly env?: Readonly<Record<string, string>>;
}

/**
 * One instance of the service. Instances given the same database and master key form one
 * deployment; bearer tokens are checked against the test identity provider (test/support/auth.ts).
 */
export async function startService(options: ServiceOptions): Promise<ChildServer> {
  const name = options.name ?? 'service';
  return startChildServer({
    name,
    args: ['--import', 'tsx', path.join(projectRoot(), 'src', 'main.ts')],
    cwd: projectRoot(),
    env: {
      NODE_ENV: 'test',
      DATABASE_URL: options.databaseUrl,
      MASTER_KEY: options.masterKey,
      DATA_DIR: path.join(options.dir, 'data'),
      LOG_LEVEL: 'warn',
      AUTH_PUBLIC_KEYS: JSON.stringify(await testJwks()),
      AUTH_ISSUER: TEST_ISSUER,
      AUTH_AUDIENCE: TEST_AUDIENCE,
      // The scenarios' load generators are one client each: the per-client card limits are out of reach.
      CARD_RATE_LIMIT_PER_SECOND: '1000000',
      CARD_RATE_LIMIT_BURST: '1000000',
      CARD_FIRST_SIGHTINGS_PER_MINUTE: '60000000',
      CARD_FIRST_SIGHTINGS_BURST: '1000000',
      ...webhookEnv(),
      ...options.env,
    },
    logFile: path.join(options.dir, `${name}-${Date.now()}.log`),
  });
}

/** What the gateway saw for one delivery. */
export type Outcome =
  | { readonly kind: 'acknowledged'; readonly eventId: string; readonly duplicate: boolean }
  /** An HTTP answer other than 200: its status, content type and problem code. */
  | {
      readonly kind: 'refused';
      readonly status: number;
      readonly contentType: string;
      readonly code: string | undefined;
    }
  /** No HTTP answer: the connection was refused or reset, or nothing came back in time. */
  | { readonly kind: 'no-answer'; readonly error: string };

export async function deliver(url: string, delivery: Delivery, timeoutMs = 15_000): Promise<Outcome> {
  try {
    const res = await fetch(`${url}/v1/webhooks/platform`, {
      method: 'POST',
      headers: platformHeaders(delivery.body, { id: delivery.id }),
      body: delivery.body,
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    if (res.status === 200) {
      const ack = JSON.parse(text) as { eventId: string; duplicate: boolean };
      return { kind: 'acknowledged', eventId: ack.eventId, duplicate: ack.duplicate };
    }
    let code: string | undefined;
    try {
      code = (JSON.parse(text) as { code?: string }).code;
    } catch {
      code = undefined;
    }
    return { kind: 'refused', status: res.status, contentType: res.headers.get('content-type') ?? '', code };
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause;
    return { kind: 'no-answer', error: cause?.code ?? (error as Error).name };
  }
}

/**
 * Sends every delivery with bounded concurrency, worker `w` to instance `urls[w % urls.length]` (a
 * load balancer's round robin); `onOutcome` sees each answer as it comes.
 */
export async function storm(
  urls: readonly string[] | (() => readonly string[]),
  deliveries: readonly Delivery[],
  onOutcome: (d: Delivery, outcome: Outcome, url: string) => void,
  concurrency = 16,
): Promise<void> {
  const queue = [...deliveries];
  const targets = typeof urls === 'function' ? urls : () => urls;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, w) => {
      for (let d = queue.shift(); d !== undefined; d = queue.shift()) {
        const live = targets();
        const url = live[w % live.length] as string;
        onOutcome(d, await deliver(url, d), url);
      }
    }),
  );
}

/** The gateway: redelivers what was not acknowledged until everything is (or `rounds` run out). */
export async function redeliverUntilAcknowledged(
  urls: readonly string[],
  deliveries: readonly Delivery[],
  acked: Map<string, string>,
  rounds = 5,
): Promise<void> {
  for (let round = 0; round < rounds && acked.size < deliveries.length; round++) {
    await storm(
      urls,
      deliveries.filter((d) => !acked.has(d.id)),
      (d, outcome) => {
        if (outcome.kind === 'acknowledged') acked.set(d.id, outcome.eventId);
      },
    );
  }
}

/**
 * Nothing acknowledged was lost: every delivery, sent once more, is a duplicate of itself with the
 * event id it was acknowledged with, and the inbox holds exactly one event per delivery.
 */
export async function expectEveryAcknowledgementDurable(
  urls: readonly string[],
  deliveries: readonly Delivery[],
  acked: ReadonlyMap<string, string>,
  knex: Knex,
): Promise<void> {
  const replays = new Map<string, Outcome>();
  await storm(urls, deliveries, (d, outcome) => replays.set(d.id, outcome));
  for (const d of deliveries) {
    expect(replays.get(d.id), d.id).to.deep.equal({ kind: 'acknowledged', eventId: acked.get(d.id), duplicate: true });
  }
  const inbox = await knex('webhook_inbox').count({ n: '*' });
  expect(Number(inbox[0]?.n)).to.equal(deliveries.length);
}

/** Every payment as stored; shopper references (random per database) become "who shares a shopper". */
export async function paymentsOf(knex: Knex): Promise<Record<string, unknown>[]> {
  const rows = (await knex('payments')
    .select(
      'external_id',
      'state',
      'currency',
      'authorised_amount',
      'captured_amount',
      'refunded_amount',
      'charged_back_amount',
      'card_last4',
      'shopper_ref',
    )
    .orderBy('external_id')) as Record<string, unknown>[];
  const firstByShopper = new Map<unknown, unknown>();
  return rows.map(({ shopper_ref: shopper, ...row }) => {
    if (!firstByShopper.has(shopper)) firstByShopper.set(shopper, row['external_id']);
    return { ...row, shopperGroup: firstByShopper.get(shopper) };
  });
}

/** Each payment's points (its lot) and its shopper's balance: what the ledger booked. */
export async function ledgerOf(knex: Knex): Promise<Record<string, unknown>[]> {
  return (await knex('payments as p')
    .leftJoin('loyalty_lots as l', 'l.payment_id', 'p.id')
    .leftJoin('loyalty_accounts as a', 'a.shopper_ref', 'p.shopper_ref')
    .select(
      'p.external_id',
      'l.pending',
      'l.earn_target',
      'l.reversal_target',
      'l.remaining',
      'l.written_off',
      'a.available',
      'a.pending as account_pending',
      'a.lifetime_earned',
    )
    .orderBy('p.external_id')) as Record<string, unknown>[];
}

/** Temporary folders, removed by `cleanup`. */
export function scratchDirs(): { make(): string; cleanup(): void } {
  const dirs: string[] = [];
  return {
    make() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-fault-'));
      dirs.push(dir);
      return dir;
    },
    cleanup() {
      // FAULT_KEEP_TMP=1 keeps the folders (the services' logs) to read after a failure.
      if (process.env['FAULT_KEEP_TMP'] === '1') process.stderr.write(`kept ${dirs.join(' ')}\n`);
      else dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true }));
    },
  };
}
