/**
 * Helpers for the holds and abuse-control tests: a shopper known by an Adyen card alias, its payments
 * as signed Adyen notifications (several partial captures, each its own CAPTURE with its own PSP
 * reference), a clock the test moves, programme versions, and a payment's ledger entries by kind.
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import type { Clock } from '../../src/clock/clock.js';
import { signToken } from '../support/auth.js';
import type { TestService } from '../support/harness.js';
import { adyenItem, lettersOnly, postAdyen } from '../support/webhooks.js';

/** Sixteen letters: an Adyen PSP reference with no digit run a card number could hide in. */
export function pspReference(): string {
  return lettersOnly(randomBytes(8).toString('hex')).toUpperCase();
}

/** The service's clock: real time plus an offset the test sets (webhook timestamps stay real). */
export function movableClock(): { clock: Clock; set(offsetMs: number): void } {
  let offset = 0;
  return {
    clock: () => new Date(Date.now() + offset),
    set(offsetMs: number) {
      offset = offsetMs;
    },
  };
}

export interface AliasShopper {
  readonly shopperRef: string;
  readonly alias: string;
}

export async function aliasShopper(svc: TestService): Promise<AliasShopper> {
  const alias = `H${pspReference().slice(1)}`;
  const res = await svc.request('POST', '/v1/tokens', {
    token: await signToken({ scope: 'tokens:write' }),
    json: { alias: { namespace: 'adyen.alias', value: alias } },
  });
  expect(res.status, res.text).to.be.oneOf([200, 201]);
  return { shopperRef: res.body.shopperReference, alias };
}

export type AdyenStep =
  | { readonly type: 'authorised' }
  | { readonly type: 'captured'; readonly id: string; readonly amount: number }
  | { readonly type: 'cancelled' }
  | { readonly type: 'refunded'; readonly id: string; readonly amount: number };

/** One online payment of `amount` minor units (GBP unless told); each step one signed notification. */
export function adyenPayment(shopper: AliasShopper, amount: number, currency = 'GBP') {
  const psp = pspReference();
  const references = new Map<string, string>();
  const referenceOf = (id: string): string => {
    let ref = references.get(id);
    if (ref === undefined) references.set(id, (ref = pspReference()));
    return ref;
  };
  const item = (step: AdyenStep, occurredAt: Date): Record<string, unknown> => {
    const eventDate = occurredAt.toISOString();
    switch (step.type) {
      case 'authorised':
        return adyenItem({
          eventCode: 'AUTHORISATION',
          pspReference: psp,
          eventDate,
          amount: { value: amount, currency },
          additionalData: { alias: shopper.alias, shopperInteraction: 'Ecommerce' },
        });
      case 'captured':
      case 'refunded':
        return adyenItem({
          eventCode: step.type === 'captured' ? 'CAPTURE' : 'REFUND',
          pspReference: referenceOf(`${step.type}:${step.id}`),
          originalReference: psp,
          eventDate,
          amount: { value: step.amount, currency },
        });
      case 'cancelled':
        return adyenItem({
          eventCode: 'CANCELLATION',
          pspReference: referenceOf('cancel'),
          originalReference: psp,
          eventDate,
        });
    }
  };
  return {
    psp,
    item,
    async send(svc: TestService, step: AdyenStep, occurredAt = new Date()): Promise<void> {
      const res = await postAdyen(svc, [item(step, occurredAt)]);
      expect(res.status, res.text).to.equal(200);
    },
  };
}

/** Publishes programme rules (the defaults plus these), effective now on the service's clock. */
export async function publishRules(svc: TestService, rules: Record<string, unknown>): Promise<number> {
  const res = await svc.request('PUT', '/v1/programme', {
    token: await signToken({ scope: 'loyalty:admin' }),
    json: { pointsPerUnit: 1, ...rules },
  });
  expect(res.status, res.text).to.equal(201);
  // Payments authorised from now on earn under it (its effective time is strictly before theirs).
  await new Promise((resolve) => setTimeout(resolve, 5));
  return res.body.version as number;
}

/**
 * A payment's entries (by its gateway id) in the order booked (the payment's effect number, not the
 * time: a release run on a moved clock is stamped later than a capture that followed it): [kind, points].
 */
export async function entriesOf(svc: TestService, externalId: string): Promise<[string, number][]> {
  const knex = svc.db.knex;
  const row = (await knex('payments').where({ external_id: externalId }).first('id')) as { id: string } | undefined;
  if (row === undefined) return [];
  const rows = (await knex('loyalty_entries')
    .where({ payment_id: row.id })
    .orderByRaw(`(regexp_match(business_key, '^payment:[^:]+:([0-9]+)'))[1]::int nulls last, created_at, id`)
    .select('kind', 'points')) as { kind: string; points: number | string }[];
  return rows.map((r) => [r.kind, Number(r.points)]);
}
