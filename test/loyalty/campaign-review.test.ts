/**
 * Campaign definitions and bonuses that used to break the service (attacker review of issue 21):
 * each is refused at publish with a 4xx, or bounded when judged, never a 500 on a later webhook
 * or read.
 */
import { expect } from 'chai';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { signToken } from '../support/auth.js';
import { startTestService, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { balance, newShopper, payment, type Shopper } from './support.js';

describe('loyalty campaigns: definitions and bonuses that must not break the service', function () {
  this.timeout(120_000);
  let svc: TestService;
  let admin: string;
  const pans = generatePans(6);
  let next = 0;
  const shopper = (): Promise<Shopper> => newShopper(svc, pans[next++] as string);
  let keys = 0;
  const publish = (body: unknown) =>
    svc.request('POST', '/v1/admin/loyalty/campaigns', {
      token: admin,
      json: body,
      headers: { 'idempotency-key': `review-key-${++keys}` },
    });

  before(async () => {
    svc = await startTestService();
    admin = await signToken({ scope: 'loyalty:admin' });
  });
  after(async () => svc.close());
  afterEach(async () => {
    const report = await checkLedger(svc.db.knex);
    expect(report.violations).to.deep.equal([]);
  });

  it('when a fixed bonus is fractional, then it is refused and payments at its store still earn', async () => {
    const res = await publish({
      definition: {
        name: 'probe',
        startsAt: '2020-01-01T00:00:00Z',
        conditions: { storeIds: ['s-frac'] },
        effect: { kind: 'fixed_bonus', points: 0.5 },
      },
    });
    expect(res.status, res.text).to.equal(400);
    const card = await shopper();
    await payment(card, { channel: 'in_store', amount: 5_000, storeId: 's-frac' }).send(svc, { type: 'authorised' });
    expect(await balance(svc, card.shopperRef)).to.include({ available: 50 });
  });

  it('when a per-unit bonus is larger than any programme rate, then it is refused; the largest stacked bonuses keep every read working', async () => {
    const tooLarge = await publish({
      definition: {
        name: 'huge',
        startsAt: '2020-01-01T00:00:00Z',
        conditions: { storeIds: ['s-big'] },
        effect: { kind: 'points_per_unit', points: 100_000 },
      },
    });
    expect(tooLarge.status, tooLarge.text).to.equal(400);
    for (const effect of [
      { kind: 'points_per_unit', points: 100 },
      { kind: 'points_per_unit', points: 100 },
      { kind: 'multiplier', factor: 10 },
    ]) {
      const res = await publish({
        definition: { name: 'big', startsAt: '2020-01-01T00:00:00Z', conditions: { storeIds: ['s-big'] }, effect },
      });
      expect(res.status, res.text).to.equal(201);
    }
    const card = await shopper();
    const p = payment(card, { channel: 'in_store', currency: 'JPY', amount: 95_000_000_001, storeId: 's-big' });
    await p.send(svc, { type: 'authorised' });
    // 95 000 000 001 base points; 100 + 100 per yen and ×10 on top.
    expect(await balance(svc, card.shopperRef)).to.include({ available: 95_000_000_001 * 210 });
    for (const path of ['ledger', 'purchases']) {
      const res = await svc.request('GET', `/v1/shoppers/${card.shopperRef}/${path}`, { token: admin });
      expect(res.status, res.text).to.equal(200);
    }
  });

  it('when an instant is a leap second or past year 9999 once its offset is applied, then it is refused and the list still reads', async () => {
    const definition = {
      name: 'times',
      startsAt: '2020-01-01T00:00:00Z',
      conditions: {},
      effect: { kind: 'fixed_bonus', points: 5 },
    };
    for (const body of [
      { definition: { ...definition, startsAt: '2030-06-30T23:59:60Z' } },
      { definition: { ...definition, endsAt: '2030-06-30T23:59:60Z' } },
      { definition: { ...definition, endsAt: '9999-12-31T23:59:59-23:59' } },
      { definition: { ...definition, startsAt: '1969-12-31T23:59:59Z' } },
      { effectiveFrom: '2030-06-30T23:59:60Z', definition },
      { effectiveFrom: '9999-12-31T23:59:59-23:59', definition },
    ]) {
      const res = await publish(body);
      expect(res.status, `${JSON.stringify(body)} ${res.text}`).to.equal(422);
      expect(res.body).to.deep.include({ code: 'CAMPAIGN_DEFINITION_INVALID', problems: ['time_invalid'] });
    }
    const latest = await publish({ definition: { ...definition, endsAt: '9999-12-31T23:59:59+23:59' } });
    expect(latest.status, latest.text).to.equal(201);
    const list = await svc.request('GET', '/v1/admin/loyalty/campaigns', { token: admin });
    expect(list.status, list.text).to.equal(200);
  });

  it('when next versions of one campaign are published concurrently, then each is answered 201 with its own version', async () => {
    const definition = {
      name: 'race',
      startsAt: '2020-01-01T00:00:00Z',
      conditions: {},
      effect: { kind: 'fixed_bonus', points: 5 },
    };
    const first = await publish({ definition: { ...definition, conditions: { storeIds: ['s-race'] } } });
    expect(first.status, first.text).to.equal(201);
    const { campaignId } = first.body as { campaignId: string };
    const answers = await Promise.all(
      [1, 2, 3, 4].map((n) =>
        publish({ campaignId, definition: { ...definition, name: `race ${n}`, conditions: { storeIds: ['s-race'] } } }),
      ),
    );
    expect(answers.map((a) => a.status)).to.deep.equal([201, 201, 201, 201]);
    expect(answers.map((a) => a.body.version as number).sort()).to.deep.equal([2, 3, 4, 5]);
  });

  it('when a stored campaign version is updated or deleted in the database, then the database refuses it', async () => {
    const res = await publish({
      definition: {
        name: 'kept',
        startsAt: '2020-01-01T00:00:00Z',
        conditions: { storeIds: ['s-kept'] },
        effect: { kind: 'fixed_bonus', points: 5 },
      },
    });
    expect(res.status, res.text).to.equal(201);
    const knex = svc.db.knex;
    const row = { campaign_id: res.body.campaignId as string, version: 1 };
    const changed = JSON.stringify({ ...res.body.definition, effect: { kind: 'fixed_bonus', points: 100_000 } });
    const refusal = async (work: Promise<unknown>): Promise<string> =>
      work.then(
        () => 'accepted',
        (e: Error) => e.message,
      );
    expect(await refusal(knex('loyalty_campaign_versions').where(row).update({ definition: changed }))).to.match(
      /append-only/,
    );
    expect(await refusal(knex('loyalty_campaign_versions').where(row).delete())).to.match(/append-only/);
    const kept = await svc.request('GET', `/v1/admin/loyalty/campaigns/${row.campaign_id}`, { token: admin });
    expect(kept.body.versions[0].definition.effect).to.deep.equal({ kind: 'fixed_bonus', points: 5 });
  });
});
