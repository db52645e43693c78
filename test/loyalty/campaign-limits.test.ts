/**
 * Campaigns that depend on more than the payment: the shopper's opt-in (activated from the app),
 * first and every Nth purchase, a per-shopper cap per period and a global budget. Judged once, when
 * the payment's lot is created; every later effect scales that grant. The purchase history shows
 * why (conditions, purchase number, what the cap or the budget cut), the admin API the budget left
 * and the activations. Scenarios: concurrent grants racing for the last of a budget, and a campaign
 * changed (new version) while its payments are in flight.
 */
import { expect } from 'chai';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { signToken } from '../support/auth.js';
import { startTestService, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { balance, newShopper, payment, type Shopper } from './support.js';

const fixed = (points: number) => ({ kind: 'fixed_bonus', points });

describe('loyalty campaigns: opt-in, purchase numbers, per-shopper caps and a global budget', function () {
  this.timeout(300_000);
  let svc: TestService;
  let admin: string;
  const pans = generatePans(40);
  let next = 0;
  const shopper = (): Promise<Shopper> => newShopper(svc, pans[next++] as string);
  let keys = 0;

  const publish = async (body: Record<string, unknown>) => {
    const res = await svc.request('POST', '/v1/admin/loyalty/campaigns', {
      token: admin,
      json: body,
      headers: { 'idempotency-key': `limits-key-${++keys}-${Date.now().toString(36)}` },
    });
    expect(res.status, res.text).to.equal(201);
    return res.body as { campaignId: string; version: number };
  };
  const campaign = (name: string, definition: Record<string, unknown>) =>
    publish({ definition: { name, startsAt: '2020-01-01T00:00:00Z', ...definition } });

  /** The campaign's qualification on the shopper's purchases, newest first. */
  const qualifications = async (ref: string, campaignId: string) => {
    const res = await svc.request('GET', `/v1/shoppers/${ref}/purchases`, { token: admin });
    expect(res.status, res.text).to.equal(200);
    return (res.body.items as { earning?: { campaigns: Record<string, unknown>[] } }[]).map((p) =>
      p.earning?.campaigns.find((c) => c['campaignId'] === campaignId),
    );
  };
  const status = async (campaignId: string) => {
    const res = await svc.request('GET', `/v1/admin/loyalty/campaigns/${campaignId}`, { token: admin });
    expect(res.status, res.text).to.equal(200);
    return res.body.status as Record<string, unknown>;
  };
  /** Bonus points the campaign booked, net, from the ledger. */
  const bonusBooked = async (campaignId: string): Promise<number> => {
    const row = (await svc.db
      .knex('loyalty_entries')
      .where({ campaign_id: campaignId })
      .whereIn('kind', ['earn', 'earn_voided', 'reversal', 'reversal_cancelled'])
      .first(svc.db.knex.raw('coalesce(sum(points), 0)::int as points'))) as { points: number };
    return Number(row.points);
  };

  before(async () => {
    svc = await startTestService();
    admin = await signToken({ scope: 'loyalty:admin' });
  });
  after(async () => svc.close());
  afterEach(async () => {
    expect((await checkLedger(svc.db.knex)).violations).to.deep.equal([]);
  });

  it('when a campaign needs opt-in, then only payments after the shopper activated it earn the bonus; activating is idempotent, audited once and visible', async () => {
    const { campaignId } = await campaign('Opt-in bonus', {
      conditions: { optInRequired: true, channels: ['in_store'] },
      effect: fixed(50),
    });
    const card = await shopper();
    const token = await signToken({ scope: 'loyalty:read loyalty:write', shopperRef: card.shopperRef });
    const before = payment(card, { channel: 'in_store', amount: 1_000 });
    await before.send(svc, { type: 'authorised' });
    expect(await balance(svc, card.shopperRef)).to.include({ available: 10 });

    const listed = await svc.request('GET', `/v1/shoppers/${card.shopperRef}/campaigns`, { token });
    expect(listed.status, listed.text).to.equal(200);
    expect(listed.body.items.find((c: { campaignId: string }) => c.campaignId === campaignId)).to.deep.include({
      optInRequired: true,
      name: 'Opt-in bonus',
    });

    const path = `/v1/shoppers/${card.shopperRef}/campaigns/${campaignId}/activation`;
    const first = await svc.request('PUT', path, { token });
    expect(first.status, first.text).to.equal(200);
    expect(first.body).to.include({ campaignId, shopperReference: card.shopperRef, activated: true });
    const again = await svc.request('PUT', path, { token });
    expect(again.body).to.deep.equal({ ...first.body, activated: false });
    const audited = await svc.db.knex('audit_events').where({ action: 'loyalty.campaign.activated' });
    expect(audited.filter((a: { resource: string }) => a.resource.includes(card.shopperRef))).to.have.length(1);

    const after = payment(card, { channel: 'in_store', amount: 1_000 });
    await after.send(svc, { type: 'authorised' });
    expect(await balance(svc, card.shopperRef)).to.include({ available: 10 + 10 + 50 });
    const [newest, oldest] = await qualifications(card.shopperRef, campaignId);
    expect(newest).to.deep.include({ qualified: true, bonus: 50 });
    expect(oldest).to.deep.include({ qualified: false, bonus: 0 });
    expect(oldest?.['conditions']).to.deep.include({ condition: 'opt_in', passed: false });

    const listedAfter = await svc.request('GET', `/v1/shoppers/${card.shopperRef}/campaigns`, { token });
    const mine = listedAfter.body.items.find((c: { campaignId: string }) => c.campaignId === campaignId);
    expect(mine.activatedAt).to.equal(first.body.activatedAt);
    expect(await status(campaignId)).to.include({ activations: 1, state: 'running' });

    const unknown = await svc.request(
      'PUT',
      `/v1/shoppers/${card.shopperRef}/campaigns/cmp_aaaaaaaaaaaaaaaaaaaaaaaaaa/activation`,
      {
        token,
      },
    );
    expect(unknown.status).to.equal(404);
  });

  it('when a campaign gives every 3rd purchase a bonus, then purchases 3 and 6 earn it and each purchase shows its number', async () => {
    const { campaignId } = await campaign('Every third coffee', {
      conditions: { everyNthPurchase: 3, storeIds: ['cafe-nth'] },
      effect: fixed(30),
    });
    const card = await shopper();
    // A purchase elsewhere is not counted.
    await payment(card, { channel: 'in_store', storeId: 'elsewhere', amount: 500 }).send(svc, { type: 'authorised' });
    for (let i = 0; i < 6; i++) {
      await payment(card, { channel: 'in_store', storeId: 'cafe-nth', amount: 500 }).send(svc, { type: 'authorised' });
    }
    const seen = (await qualifications(card.shopperRef, campaignId)).reverse();
    expect(seen.map((q) => q?.['purchaseNumber'] ?? null)).to.deep.equal([null, 1, 2, 3, 4, 5, 6]);
    expect(seen.map((q) => q?.['bonus'] ?? 0)).to.deep.equal([0, 0, 0, 30, 0, 0, 30]);
    expect(await bonusBooked(campaignId)).to.equal(60);
  });

  it('when a campaign is for the first purchase only, then only the first qualifying one earns it, whatever arrives later', async () => {
    const { campaignId } = await campaign('Welcome', { conditions: { firstPurchaseOnly: true }, effect: fixed(100) });
    const card = await shopper();
    const first = payment(card, { channel: 'online', amount: 2_000 });
    await first.send(svc, { type: 'authorised' });
    await payment(card, { channel: 'online', amount: 2_000 }).send(svc, { type: 'authorised' });
    // The first payment's capture arrives after the second purchase: it keeps what it was granted.
    await first.send(svc, { type: 'captured' });
    expect(await balance(svc, card.shopperRef)).to.include({ available: 120, pending: 20 });
    expect(await bonusBooked(campaignId)).to.equal(100);
  });

  it('when a shopper cap per day is reached, then the payment gets what is left of it and says so', async () => {
    const { campaignId } = await campaign('Capped', {
      conditions: { timeZone: 'Europe/Amsterdam' },
      effect: fixed(40),
      maxBonusPerShopper: { points: 100, period: 'day' },
    });
    const card = await shopper();
    for (let i = 0; i < 4; i++)
      await payment(card, { channel: 'in_store', amount: 100 }).send(svc, { type: 'authorised' });
    const seen = (await qualifications(card.shopperRef, campaignId)).reverse();
    expect(seen.map((q) => q?.['bonus'])).to.deep.equal([40, 40, 20, 0]);
    expect(seen[2]).to.deep.include({ limitedBy: 'shopper_cap', requested: 40 });
    expect(String(seen[0]?.['capPeriod'])).to.match(/^\d{4}-\d{2}-\d{2}$/);
    // Another shopper has a cap of their own.
    const other = await shopper();
    await payment(other, { channel: 'in_store', amount: 100 }).send(svc, { type: 'authorised' });
    expect((await qualifications(other.shopperRef, campaignId))[0]).to.deep.include({ bonus: 40 });
  });

  it('when many payments race for the last points of a budget, then exactly the budget is granted, the last one partly, and the status shows none left', async () => {
    const { campaignId } = await campaign('First 250 points', { effect: fixed(40), budget: 250 });
    const cards = await Promise.all(Array.from({ length: 12 }, () => shopper()));
    await Promise.all(
      cards.map((c) => payment(c, { channel: 'in_store', amount: 100 }).send(svc, { type: 'authorised' })),
    );
    expect(await bonusBooked(campaignId)).to.equal(250);
    const grants = (await Promise.all(cards.map((c) => qualifications(c.shopperRef, campaignId)))).map((q) => q[0]);
    expect(grants.map((g) => g?.['bonus']).sort((a, b) => Number(b) - Number(a))).to.deep.equal([
      40, 40, 40, 40, 40, 40, 10, 0, 0, 0, 0, 0,
    ]);
    expect(grants.find((g) => g?.['bonus'] === 10)).to.deep.include({ limitedBy: 'budget', requested: 40 });
    expect(await status(campaignId)).to.include({ budget: 250, budgetSpent: 250, budgetLeft: 0 });
  });

  it('when a refund or a cancel arrives for a budgeted payment, then its grant is scaled back in the ledger but not returned to the budget', async () => {
    const { campaignId } = await campaign('Budget kept', { effect: fixed(30), budget: 1_000 });
    const card = await shopper();
    const p = payment(card, { channel: 'online', amount: 1_000 });
    await p.send(svc, { type: 'authorised' });
    await p.send(svc, { type: 'cancelled' });
    await p.send(svc, { type: 'authorised' }, 'redelivered-authorisation');
    expect(await balance(svc, card.shopperRef)).to.include({ available: 0, pending: 0 });
    expect(await status(campaignId)).to.include({ budgetSpent: 30, budgetLeft: 970 });
  });

  it('when a campaign gets a new version while payments are in flight, then each payment keeps the version in force at its authorisation, and the budget spans versions', async () => {
    const { campaignId } = await campaign('Changing', { effect: fixed(20), budget: 50 });
    const card = await shopper();
    const early = payment(card, { channel: 'online', amount: 1_000 });
    await early.send(svc, { type: 'authorised' });
    // Version 2 (more points, a larger budget) is published while the early payment awaits capture.
    await publish({
      campaignId,
      definition: { name: 'Changing', startsAt: '2020-01-01T00:00:00Z', effect: fixed(70), budget: 100 },
    });
    const late = payment(card, { channel: 'online', amount: 1_000 });
    await Promise.all([early.send(svc, { type: 'captured' }), late.send(svc, { type: 'authorised' })]);
    const [lateQ, earlyQ] = await qualifications(card.shopperRef, campaignId);
    expect(earlyQ).to.deep.include({ version: 1, bonus: 20, earned: 20 });
    // Version 2's budget of 100 counts the 20 version 1 granted: 80 left, 70 granted.
    expect(lateQ).to.deep.include({ version: 2, bonus: 70, pending: 70 });
    expect(await status(campaignId)).to.include({ version: 2, budget: 100, budgetSpent: 90, budgetLeft: 10 });
  });

  it('when someone lowers a budget or a shopper counter in the database, then it is refused', async () => {
    const { campaignId } = await campaign('Tamper', {
      effect: fixed(5),
      budget: 10,
      maxBonusPerShopper: { points: 5, period: 'month' },
    });
    const card = await shopper();
    await payment(card, { channel: 'in_store', amount: 100 }).send(svc, { type: 'authorised' });
    const refusal = async (write: PromiseLike<unknown>): Promise<string> => {
      try {
        await write;
        return 'accepted';
      } catch (error) {
        return (error as Error).message;
      }
    };
    const budgets = () => svc.db.knex('loyalty_campaign_budgets').where({ campaign_id: campaignId });
    expect(await refusal(budgets().update({ spent: 0 }))).to.match(/only grow/);
    expect(await refusal(budgets().delete())).to.match(/only grow/);
    const usage = () => svc.db.knex('loyalty_campaign_usage').where({ shopper_ref: card.shopperRef });
    expect(await refusal(usage().update({ granted: 0 }))).to.match(/only grow/);
    expect(await budgets().first('spent')).to.deep.equal({ spent: 5 });
  });
});
