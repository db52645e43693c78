/**
 * Campaigns end to end: published through the admin API (idempotent, versioned, refused when a
 * definition contradicts itself), then judged on real payments: the bonus booked as its own ledger
 * entries naming the campaign version, scaled on partial capture and refund like the base points,
 * and the purchase history saying which campaign applied, which conditions passed and what each gave.
 */
import { expect } from 'chai';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { signToken } from '../support/auth.js';
import { startTestService, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { balance, newShopper, payment, type Shopper } from './support.js';

const inStoreDouble = {
  name: 'Double points in store A',
  startsAt: '2020-01-01T00:00:00Z',
  conditions: { channels: ['in_store'], storeIds: ['store-a'] },
  effect: { kind: 'multiplier', factor: 2 },
};

describe('loyalty campaigns: the admin API and earning', function () {
  this.timeout(120_000);
  let svc: TestService;
  let admin: string;
  const pans = generatePans(6);
  let next = 0;
  const shopper = (): Promise<Shopper> => newShopper(svc, pans[next++] as string);

  const publish = (body: unknown, key: string, token = admin) =>
    svc.request('POST', '/v1/admin/loyalty/campaigns', { token, json: body, headers: { 'idempotency-key': key } });

  const purchases = async (ref: string) => {
    const res = await svc.request('GET', `/v1/shoppers/${ref}/purchases`, { token: admin });
    expect(res.status, res.text).to.equal(200);
    return res.body.items as { paymentId: string; earning?: Record<string, unknown> }[];
  };

  const ledger = async (ref: string) => {
    const res = await svc.request('GET', `/v1/shoppers/${ref}/ledger`, { token: admin });
    expect(res.status, res.text).to.equal(200);
    return res.body.items as { kind: string; points: number; campaignId?: string; campaignVersion?: number }[];
  };

  before(async () => {
    svc = await startTestService();
    admin = await signToken({ scope: 'loyalty:admin' });
  });
  after(async () => svc.close());
  afterEach(async () => {
    const report = await checkLedger(svc.db.knex);
    expect(report.violations).to.deep.equal([]);
  });

  let campaignId: string;
  let earlier: { card: Shopper; payment: ReturnType<typeof payment> };

  it('when a campaign is published, then it is version 1, and the same key with the same body replays it', async () => {
    const first = await publish({ definition: inStoreDouble }, 'campaign-key-one');
    expect(first.status, first.text).to.equal(201);
    expect(first.body).to.include({ version: 1 });
    expect(first.body.definition).to.deep.include({ priority: 0, stacking: 'combinable' });
    campaignId = first.body.campaignId as string;
    expect(campaignId).to.match(/^cmp_[a-z2-7]{26}$/);

    const again = await publish({ definition: inStoreDouble }, 'campaign-key-one');
    expect(again.status).to.equal(201);
    expect(again.headers.get('idempotent-replayed')).to.equal('true');
    expect(again.body).to.deep.equal(first.body);

    const other = await publish({ definition: { ...inStoreDouble, name: 'Other' } }, 'campaign-key-one');
    expect(other.status).to.equal(409);
    expect(other.body.code).to.equal('IDEMPOTENCY_KEY_REUSED');

    const list = await svc.request('GET', '/v1/admin/loyalty/campaigns', { token: admin });
    expect(list.status, list.text).to.equal(200);
    expect(list.body.items).to.deep.equal([
      {
        campaignId,
        versions: [first.body],
        status: {
          version: 1,
          state: 'running',
          startsAt: first.body.definition.startsAt,
          budgetSpent: 0,
          activations: 0,
        },
      },
    ]);
  });

  it('when a definition contradicts itself or takes effect in the past, then it is refused with a stable code', async () => {
    const invalid = await publish(
      { definition: { ...inStoreDouble, endsAt: '2019-01-01T00:00:00Z', conditions: { minAmount: 100 } } },
      'campaign-key-invalid',
    );
    expect(invalid.status, invalid.text).to.equal(422);
    expect(invalid.body.code).to.equal('CAMPAIGN_DEFINITION_INVALID');
    expect(invalid.body.problems).to.deep.equal(['ends_before_it_starts', 'amount_range_needs_currency']);

    const past = await publish(
      { campaignId, effectiveFrom: '2020-01-01T00:00:00Z', definition: inStoreDouble },
      'campaign-key-past',
    );
    expect(past.status, past.text).to.equal(422);
    expect(past.body.code).to.equal('CAMPAIGN_EFFECTIVE_IN_PAST');

    const unknown = await publish(
      { campaignId: 'cmp_aaaaaaaaaaaaaaaaaaaaaaaaaa', definition: inStoreDouble },
      'campaign-key-unknown',
    );
    expect(unknown.status, unknown.text).to.equal(404);

    const noScope = await publish(
      { definition: inStoreDouble },
      'campaign-key-scope',
      await signToken({ scope: 'loyalty:read' }),
    );
    expect(noScope.status).to.equal(403);
  });

  it('when a qualifying in-store payment is made, then the bonus is its own entry and the purchase says why', async () => {
    const card = await shopper();
    const p = payment(card, { channel: 'in_store', amount: 12_345, storeId: 'store-a' });
    await p.send(svc, { type: 'authorised' });
    earlier = { card, payment: p };

    expect(await balance(svc, card.shopperRef)).to.include({ available: 246, pending: 0 });
    const entries = await ledger(card.shopperRef);
    expect(
      entries.map((e) => [e.kind, e.points, e.campaignId ?? null, e.campaignVersion ?? null]),
    ).to.have.deep.members([
      ['earn', 123, null, null],
      ['earn', 123, campaignId, 1],
    ]);
    const [purchase] = await purchases(card.shopperRef);
    expect(purchase?.earning).to.deep.equal({
      programmeVersion: 1,
      pending: 0,
      earned: 246,
      reversed: 0,
      campaigns: [
        {
          campaignId,
          version: 1,
          qualified: true,
          conditions: [
            { condition: 'period', passed: true },
            { condition: 'channel', passed: true },
            { condition: 'store', passed: true },
          ],
          bonus: 123,
          pending: 0,
          earned: 123,
          reversed: 0,
        },
      ],
    });
  });

  it('when a payment fails a condition, then it earns the base points only and the purchase says which failed', async () => {
    const card = await shopper();
    const p = payment(card, { channel: 'in_store', amount: 5_000, storeId: 'store-b' });
    await p.send(svc, { type: 'authorised' });
    expect(await balance(svc, card.shopperRef)).to.include({ available: 50 });
    const [purchase] = await purchases(card.shopperRef);
    const [judged] = purchase?.earning?.['campaigns'] as Record<string, unknown>[];
    expect(judged).to.deep.include({ qualified: false, bonus: 0, earned: 0 });
    expect(judged?.['conditions']).to.deep.include({ condition: 'store', passed: false });
    expect((await ledger(card.shopperRef)).every((e) => e.campaignId === undefined)).to.equal(true);
  });

  it('when a new version changes the effect, then later payments earn under it and earlier ones keep theirs', async () => {
    const v2 = await publish(
      { campaignId, definition: { ...inStoreDouble, conditions: {}, effect: { kind: 'fixed_bonus', points: 40 } } },
      'campaign-key-v2',
    );
    expect(v2.status, v2.text).to.equal(201);
    expect(v2.body).to.include({ campaignId, version: 2 });
    const got = await svc.request('GET', `/v1/admin/loyalty/campaigns/${campaignId}`, { token: admin });
    expect(got.body.versions.map((v: { version: number }) => v.version)).to.deep.equal([1, 2]);

    // The payment authorised under version 1 keeps it: a refund of a third takes back a third of its ×2 bonus.
    await earlier.payment.send(svc, { type: 'refunded', id: 'refund-third', amount: 4_115 });
    expect(await balance(svc, earlier.card.shopperRef)).to.include({ available: 246 - 41 - 41 });
    const reversals = (await ledger(earlier.card.shopperRef)).filter((e) => e.kind === 'reversal');
    expect(reversals.map((e) => [e.points, e.campaignVersion ?? null])).to.have.deep.members([
      [-41, null],
      [-41, 1],
    ]);

    // Online: pending until captured; a partial capture and a refund scale the bonus like the base points.
    const card = await shopper();
    const p = payment(card, { channel: 'online', amount: 10_000 });
    await p.send(svc, { type: 'authorised' });
    expect(await balance(svc, card.shopperRef)).to.include({ available: 0, pending: 140 });
    await p.send(svc, { type: 'captured', amount: 2_500 });
    // 25 base points; the bonus of 40 judged at authorisation, a quarter captured: 10.
    expect(await balance(svc, card.shopperRef)).to.include({ available: 35, pending: 0 });
    await p.send(svc, { type: 'refunded', id: 'refund-one', amount: 2_500 });
    expect(await balance(svc, card.shopperRef)).to.include({ available: 0, pending: 0 });
    const [purchase] = await purchases(card.shopperRef);
    expect(purchase?.earning).to.deep.include({ earned: 35, reversed: 35 });
    expect((purchase?.earning?.['campaigns'] as unknown[])[0]).to.deep.include({
      version: 2,
      bonus: 40,
      earned: 10,
      reversed: 10,
    });
  });

  it('when a payment was authorised before any campaign version took effect, then it earns exactly the base', async () => {
    const card = await shopper();
    const p = payment(card, {
      channel: 'in_store',
      amount: 5_000,
      storeId: 'store-a',
      occurredAt: new Date(Date.now() - 2 * 3_600_000).toISOString(),
    });
    await p.send(svc, { type: 'authorised' });
    expect(await balance(svc, card.shopperRef)).to.include({ available: 50 });
    const [purchase] = await purchases(card.shopperRef);
    expect(purchase?.earning).to.deep.equal({
      programmeVersion: 1,
      pending: 0,
      earned: 50,
      reversed: 0,
      campaigns: [],
    });
    const lot = (await svc.db.knex('loyalty_lots').where({ payment_id: purchase?.paymentId }).first('campaigns')) as {
      campaigns: unknown;
    };
    expect(lot.campaigns).to.equal(null);
  });
});
