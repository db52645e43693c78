/**
 * Tiers (issue 21): levels by qualifying spend over a calendar year, upgrade at once, the multiplier
 * of the level held at authorisation pinned with the payment, a refund dropping a provisional level,
 * the period-end review with grace and both downgrade policies, one `tier.changed` per change even
 * when reviews race (two instances on PostgreSQL), and the shopper's tier over the API.
 *
 * The service's clock is frozen at instants the tests choose (after the migration's first programme
 * version, so the tier policy is in force); webhooks are signed at that instant. Tokens are signed on
 * the machine's clock, so shoppers are made, and the API is read, with the clock let go.
 */
import { expect } from 'chai';
import { runLoyaltyCli } from '../../src/cli/loyalty.js';
import { DEFAULT_RULES } from '../../src/loyalty/programme.js';
import type { TierPolicy } from '../../src/loyalty/tiers.js';
import { signToken } from '../support/auth.js';
import { usingPostgres } from '../support/database.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { postPlatform } from '../support/webhooks.js';
import { newShopper, payment, type PaymentStep, type Shopper } from './support.js';

const DAY = 86_400_000;
const POLICY: TierPolicy = {
  measure: 'spend',
  currency: 'GBP',
  window: { kind: 'calendar', months: 12 },
  levels: [
    { name: 'member', threshold: 0, multiplier: 1 },
    { name: 'silver', threshold: 50_000, multiplier: 1.5 },
    { name: 'gold', threshold: 100_000, multiplier: 2 },
  ],
  downgrade: 'one_level',
  graceDays: 30,
};
const ACTOR = { subject: 'tier-test', origin: 'test' };

interface TierEvent {
  previousTier: string;
  tier: string;
  direction: string;
  reason: string;
  qualifyingFigure: number;
  heldUntil?: string;
}

/** A service whose clock a test freezes (undefined: the machine's). */
async function frozenService(options: { env?: Awaited<ReturnType<typeof testEnv>>; db?: TestService['db'] } = {}) {
  const clock: { at: Date | undefined } = { at: undefined };
  const svc = await startTestService({
    clock: () => clock.at ?? new Date(),
    ...(options.env === undefined ? {} : { env: options.env }),
    ...(options.db === undefined ? {} : { db: options.db }),
  });
  return { svc, clock };
}

describe('loyalty: tiers', function () {
  this.timeout(120_000);
  let svc: TestService;
  let clock: { at: Date | undefined };
  const pans = generatePans(8, '455555');
  let next = 0;

  const shopper = async (): Promise<Shopper> => {
    const held = clock.at;
    clock.at = undefined;
    const s = await newShopper(svc, pans[next++] as string);
    clock.at = held;
    return s;
  };

  /** A GBP online payment authorised now (the frozen instant), its steps signed now. */
  const pay = async (s: Shopper, amount: number, steps: readonly PaymentStep[]) => {
    const p = payment(s, { amount, occurredAt: (clock.at as Date).toISOString() });
    for (const step of steps) {
      const res = await postPlatform(svc, p.event(step), { timestamp: clock.at as Date });
      expect(res.status, res.text).to.equal(200);
    }
    return p;
  };

  const lotOf = async (externalId: string) => {
    const row = (await svc.db.knex('payments').where({ external_id: externalId }).first('id')) as { id: string };
    const lot = (await svc.db.knex('loyalty_lots').where({ payment_id: row.id }).first()) as Record<string, unknown>;
    const tier = typeof lot['tier'] === 'string' ? JSON.parse(lot['tier']) : lot['tier'];
    return { earn: Number(lot['earn_target']), reversal: Number(lot['reversal_target']), tier };
  };

  const tierEvents = async (s: Shopper): Promise<TierEvent[]> =>
    (
      (await svc.db
        .knex('outbound_events')
        .where({ shopper_ref: s.shopperRef, type: 'tier.changed' })
        .orderBy('seq')) as { body: string }[]
    ).map((e) => (JSON.parse(e.body) as { data: TierEvent }).data);

  const tierOf = async (s: Shopper) => (await svc.service.loyalty.tiers.progress(s.shopperRef)).progress;

  before(async () => {
    ({ svc, clock } = await frozenService());
    clock.at = new Date('2027-03-10T12:00:00Z');
    await svc.service.loyalty.programme.publish({ ...DEFAULT_RULES, tiers: POLICY }, ACTOR);
  });
  after(async () => svc.close());

  it('when a capture brings the year’s spend past a threshold, then the shopper is upgraded at once, that payment keeps the tier it was authorised under, and the next one earns with the new multiplier', async () => {
    clock.at = new Date('2027-03-10T12:00:30Z');
    const s = await shopper();
    const first = await pay(s, 60_000, [{ type: 'authorised' }]);
    expect((await tierOf(s))?.tier).to.equal('member');
    await postPlatform(svc, first.event({ type: 'captured' }), { timestamp: clock.at });
    expect(await tierOf(s)).to.deep.include({ tier: 'silver', multiplier: 1.5, figure: 60_000 });
    expect((await tierOf(s))?.next).to.deep.equal({ tier: 'gold', threshold: 100_000, remaining: 40_000 });
    expect((await tierOf(s))?.heldUntil?.toISOString()).to.equal('2028-01-31T00:00:00.000Z');
    expect(await lotOf(first.id)).to.deep.equal({ earn: 600, reversal: 0, tier: { name: 'member', multiplier: 1 } });
    expect(await tierEvents(s)).to.deep.equal([
      {
        shopperReference: s.shopperRef,
        previousTier: 'member',
        tier: 'silver',
        direction: 'up',
        reason: 'upgrade',
        measure: 'spend',
        qualifyingFigure: 60_000,
        heldUntil: '2028-01-31T00:00:00.000Z',
        programmeVersion: 2,
      },
    ]);

    clock.at = new Date('2027-03-10T12:01:00Z');
    const second = await pay(s, 10_000, [{ type: 'authorised' }, { type: 'captured' }]);
    expect(await lotOf(second.id)).to.deep.equal({ earn: 150, reversal: 0, tier: { name: 'silver', multiplier: 1.5 } });
    // A payment authorised before the upgrade but delivered after it earns with the tier it was
    // authorised under (its facts decide, not its arrival).
    const late = payment(s, { amount: 10_000, occurredAt: '2027-03-10T12:00:10Z' });
    for (const step of [{ type: 'authorised' }, { type: 'captured' }] as const) {
      await postPlatform(svc, late.event(step), { timestamp: clock.at });
    }
    expect(await lotOf(late.id)).to.deep.equal({ earn: 100, reversal: 0, tier: { name: 'member', multiplier: 1 } });
    // A redelivered capture of the first payment changes neither its points nor the tier events.
    await postPlatform(svc, first.event({ type: 'captured' }), { timestamp: clock.at });
    expect((await lotOf(first.id)).earn).to.equal(600);
    expect(await tierEvents(s)).to.have.length(1);
  });

  it('when a refund takes back the spend that earned a provisional upgrade, then the shopper drops at once to what the rest supports; points earned under the tier stay', async () => {
    clock.at = new Date('2027-03-11T12:00:00Z');
    const s = await shopper();
    const big = await pay(s, 60_000, [{ type: 'authorised' }, { type: 'captured' }]);
    clock.at = new Date('2027-03-11T12:01:00Z');
    const small = await pay(s, 10_000, [{ type: 'authorised' }, { type: 'captured' }]);
    expect((await lotOf(small.id)).earn).to.equal(150);
    // 600.00 − 200.00 + 100.00 still reaches silver: no change.
    await postPlatform(svc, big.event({ type: 'refunded', id: 'rf1', amount: 20_000 }), { timestamp: clock.at });
    expect((await tierOf(s))?.tier).to.equal('silver');
    // 600.00 − 300.00 + 100.00 does not.
    await postPlatform(svc, big.event({ type: 'refunded', id: 'rf2', amount: 10_000 }), { timestamp: clock.at });
    expect(await tierOf(s)).to.deep.include({ tier: 'member', figure: 40_000 });
    expect((await tierEvents(s)).map((e) => [e.tier, e.reason, e.direction, e.qualifyingFigure])).to.deep.equal([
      ['silver', 'upgrade', 'up', 60_000],
      ['member', 'refund', 'down', 40_000],
    ]);
    expect(await lotOf(small.id)).to.deep.include({ earn: 150, reversal: 0 });
    expect(await lotOf(big.id)).to.deep.include({ earn: 600, reversal: 300 });
  });

  it('when a period ends, then the level is kept through the grace days, confirmed by the ended year’s spend, and stepped down one level a year later; a purchase in the grace days keeps it', async () => {
    clock.at = new Date('2027-03-12T12:00:00Z');
    const lapsing = await shopper();
    const graced = await shopper();
    await pay(lapsing, 110_000, [{ type: 'authorised' }, { type: 'captured' }]);
    await pay(graced, 110_000, [{ type: 'authorised' }, { type: 'captured' }]);
    expect((await tierOf(lapsing))?.tier).to.equal('gold');

    // Past the period end but inside the grace days: nothing is due.
    clock.at = new Date('2028-01-15T00:00:00Z');
    await svc.service.loyalty.tiers.reviewDue();
    expect((await tierOf(lapsing))?.heldUntil?.toISOString()).to.equal('2028-01-31T00:00:00.000Z');
    // The review of 2027 (1,100.00 spent): gold is confirmed, held through 2028; no event (no change).
    clock.at = new Date('2028-02-01T00:00:00Z');
    await svc.service.loyalty.tiers.reviewDue();
    expect(await tierOf(lapsing)).to.deep.include({ tier: 'gold' });
    expect((await tierOf(lapsing))?.heldUntil?.toISOString()).to.equal('2029-01-31T00:00:00.000Z');
    expect(await tierEvents(lapsing)).to.have.length(1);

    // Nothing spent in 2028; `graced` buys in the grace days of 2029 instead.
    clock.at = new Date('2029-01-20T09:00:00Z');
    await pay(graced, 100_000, [{ type: 'authorised' }, { type: 'captured' }]);
    clock.at = new Date('2029-01-31T00:00:00Z');
    const run = await svc.service.loyalty.tiers.reviewDue();
    expect(run.downgrades).to.be.at.least(1);
    expect((await tierOf(lapsing))?.tier).to.equal('silver');
    expect((await tierOf(graced))?.tier).to.equal('gold');
    expect((await tierEvents(lapsing)).map((e) => [e.previousTier, e.tier, e.reason])).to.deep.equal([
      ['member', 'gold', 'upgrade'],
      ['gold', 'silver', 'downgrade'],
    ]);
    expect(await tierEvents(graced)).to.have.length(1);

    // A review run again (here by `npm run loyalty -- tiers`) changes nothing; a year later, one more
    // level down (one_level).
    let out = '';
    const cli = { out: (t: string) => (out += t), err: (t: string) => (out += t) };
    expect(await runLoyaltyCli(['tiers', '--json'], { knex: svc.db.knex, ledger: svc.service.loyalty }, cli)).to.equal(
      0,
    );
    expect(JSON.parse(out)).to.deep.equal({ shoppers: 0, changes: 0, downgrades: 0 });
    expect(await tierEvents(lapsing)).to.have.length(2);
    clock.at = new Date('2030-02-01T00:00:00Z');
    out = '';
    expect(await runLoyaltyCli(['tiers'], { knex: svc.db.knex, ledger: svc.service.loyalty }, cli)).to.equal(0);
    expect(out).to.match(/^reviewed the tiers of \d+ shoppers: \d+ changes, [1-9]\d* downgrades\n$/);
    expect(await tierOf(lapsing)).to.deep.include({ tier: 'member' });
    expect((await tierOf(lapsing))?.heldUntil).to.equal(null);
  });

  it('when the reviews of a due shopper race, then the change and its tier.changed are made once', async () => {
    clock.at = new Date('2030-03-01T12:00:00Z');
    const s = await shopper();
    await pay(s, 60_000, [{ type: 'authorised' }, { type: 'captured' }]);
    clock.at = new Date('2032-02-01T00:00:00Z');
    await Promise.all(Array.from({ length: 4 }, () => svc.service.loyalty.tiers.reviewDue()));
    await svc.service.loyalty.tiers.reviewDue();
    const rows = await svc.db.knex('loyalty_tier_changes').where({ shopper_ref: s.shopperRef }).orderBy('seq');
    // Upgrade (2030), renewal (review of 2030), downgrade (review of 2031): each once.
    expect(rows.map((r) => [r.seq, r.tier, r.reason])).to.deep.equal([
      [1, 'silver', 'upgrade'],
      [2, 'silver', 'renewed'],
      [3, 'member', 'downgrade'],
    ]);
    expect((await tierEvents(s)).map((e) => e.reason)).to.deep.equal(['upgrade', 'downgrade']);
  });

  it('when the tier history is edited in the database, then the database refuses (append-only)', async () => {
    const [row] = await svc.db.knex('loyalty_tier_changes').limit(1);
    let refused: unknown;
    await svc.db
      .knex('loyalty_tier_changes')
      .where({ shopper_ref: row.shopper_ref, seq: row.seq })
      .update({ tier: 'gold' })
      .catch((e: unknown) => (refused = e));
    expect(String(refused)).to.match(/append-only/);
    await svc.db
      .knex('loyalty_tier_changes')
      .where({ shopper_ref: row.shopper_ref })
      .delete()
      .catch((e: unknown) => (refused = e));
    expect(String(refused)).to.match(/append-only: DELETE/);
  });

  it('when a new version says to_qualifying, then a review drops straight to what the figure supports', async () => {
    clock.at = new Date('2032-03-01T12:00:00Z');
    await svc.service.loyalty.programme.publish(
      { ...DEFAULT_RULES, tiers: { ...POLICY, downgrade: 'to_qualifying' } },
      ACTOR,
    );
    const s = await shopper();
    await pay(s, 120_000, [{ type: 'authorised' }, { type: 'captured' }]);
    expect((await tierOf(s))?.tier).to.equal('gold');
    clock.at = new Date('2034-02-01T00:00:00Z');
    await svc.service.loyalty.tiers.reviewDue();
    expect((await tierEvents(s)).map((e) => [e.previousTier, e.tier, e.reason])).to.deep.equal([
      ['member', 'gold', 'upgrade'],
      ['gold', 'member', 'downgrade'],
    ]);
  });

  describe('over the API (the machine’s clock)', () => {
    let api: TestService;
    before(async () => {
      api = await startTestService();
    });
    after(async () => api.close());

    it('when an admin publishes a tier policy whose fields contradict each other, then 422 TIER_POLICY_INVALID naming each problem, and no version', async () => {
      const admin = await signToken({ scope: 'loyalty:admin' });
      const res = await api.request('PUT', '/v1/programme', {
        token: admin,
        json: {
          pointsPerUnit: 1,
          tiers: {
            ...POLICY,
            currency: undefined,
            levels: [
              { name: 'member', threshold: 10, multiplier: 1 },
              { name: 'member', threshold: 5, multiplier: 2 },
            ],
          },
        },
      });
      expect(res.status, res.text).to.equal(422);
      expect(res.body.code).to.equal('TIER_POLICY_INVALID');
      expect(res.body.problems).to.deep.equal([
        'first_threshold_not_zero',
        'thresholds_not_ascending',
        'names_not_unique',
        'spend_needs_currency',
      ]);
      expect((await api.request('GET', '/v1/programme', { token: admin })).body.version).to.equal(1);
    });

    it('when a shopper reads its tier, then it sees level, multiplier, progress and until when it holds; another shopper’s tier is 404; the purchase shows the pinned tier', async () => {
      const admin = await signToken({ scope: 'loyalty:admin' });
      const put = await api.request('PUT', '/v1/programme', {
        token: admin,
        json: { pointsPerUnit: 1, tiers: { ...POLICY, window: { kind: 'rolling', days: 365 } } },
      });
      expect(put.status, put.text).to.equal(201);
      expect(put.body.rules.tiers).to.deep.equal({ ...POLICY, window: { kind: 'rolling', days: 365 } });
      const [a, b] = [await newShopper(api, pans[6] as string), await newShopper(api, pans[7] as string)];
      await new Promise((resolve) => setTimeout(resolve, 5));
      const p = payment(a, { amount: 55_000 });
      await p.send(api, { type: 'authorised' });
      await p.send(api, { type: 'captured' });
      const token = await signToken({ scope: 'loyalty:read', shopperRef: a.shopperRef });
      const res = await api.request('GET', `/v1/shoppers/${a.shopperRef}/tier`, { token });
      expect(res.status, res.text).to.equal(200);
      expect(res.body).to.deep.include({
        shopperReference: a.shopperRef,
        programmeVersion: 2,
        tier: 'silver',
        multiplier: 1.5,
        measure: 'spend',
        currency: 'GBP',
        qualifyingFigure: 55_000,
        nextTier: { tier: 'gold', threshold: 100_000, remaining: 45_000 },
      });
      const heldFor = Date.parse(res.body.heldUntil) - Date.parse(res.body.asOf);
      expect(heldFor).to.be.within(394 * DAY, 396 * DAY);
      const other = await api.request('GET', `/v1/shoppers/${b.shopperRef}/tier`, { token });
      expect(other.status).to.equal(404);

      const later = payment(a, { amount: 1_000 });
      await later.send(api, { type: 'authorised' });
      const purchases = await api.request('GET', `/v1/shoppers/${a.shopperRef}/purchases`, { token });
      expect(purchases.status, purchases.text).to.equal(200);
      const earning = (purchases.body.items as { paymentId?: string; earning?: { tier?: unknown; pending: number } }[])
        .map((i) => i.earning)
        .filter((e) => e !== undefined);
      expect(earning).to.deep.include.members([
        {
          programmeVersion: 2,
          pending: 15,
          earned: 0,
          reversed: 0,
          tier: { name: 'silver', multiplier: 1.5 },
          campaigns: [],
        },
      ]);
    });
  });

  describe('two service instances on one PostgreSQL', () => {
    let a: { svc: TestService; clock: { at: Date | undefined } };
    let b: { svc: TestService; clock: { at: Date | undefined } };

    before(async function () {
      if (!usingPostgres) this.skip();
      const env = await testEnv({ DB_POOL_MAX: '20' });
      a = await frozenService({ env });
      b = await frozenService({ env: { ...env, DATA_DIR: `${env['DATA_DIR'] as string}-b` }, db: a.svc.db });
    });
    after(async () => {
      await b?.svc.close();
      await a?.svc.close();
    });

    it('when both run the period-end review at once, then each due shopper changes once and one tier.changed is sent per change', async () => {
      a.clock.at = new Date('2027-04-01T12:00:00Z');
      b.clock.at = a.clock.at;
      await a.svc.service.loyalty.programme.publish({ ...DEFAULT_RULES, tiers: POLICY }, ACTOR);
      const shoppers: Shopper[] = [];
      for (let i = 0; i < 6; i++) {
        a.clock.at = undefined;
        const s = await newShopper(a.svc, generatePans(1, '477777')[0] as string);
        a.clock.at = new Date('2027-04-01T12:00:00Z');
        const p = payment(s, { amount: 60_000 + i, occurredAt: a.clock.at.toISOString() });
        for (const step of [{ type: 'authorised' }, { type: 'captured' }] as const) {
          const res = await postPlatform(i % 2 === 0 ? a.svc : b.svc, p.event(step), { timestamp: a.clock.at });
          expect(res.status, res.text).to.equal(200);
        }
        shoppers.push(s);
      }
      a.clock.at = new Date('2029-02-01T00:00:00Z');
      b.clock.at = a.clock.at;
      await Promise.all([
        a.svc.service.loyalty.tiers.reviewDue(),
        b.svc.service.loyalty.tiers.reviewDue(),
        a.svc.service.loyalty.tiers.reviewDue(),
        b.svc.service.loyalty.tiers.reviewDue(),
      ]);
      const refs = shoppers.map((s) => s.shopperRef);
      const events = await a.svc.db
        .knex('outbound_events')
        .whereIn('shopper_ref', refs)
        .where({ type: 'tier.changed' });
      expect(events).to.have.length(12); // an upgrade and a downgrade each
      const changes = await a.svc.db.knex('loyalty_tier_changes').whereIn('shopper_ref', refs);
      expect(changes).to.have.length(18); // upgrade, renewal, downgrade each
    });
  });
});
