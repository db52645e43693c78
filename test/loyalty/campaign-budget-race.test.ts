/**
 * A global budget and a per-shopper cap under real concurrency: two service instances on one
 * PostgreSQL database (separate connection pools), a storm of payments racing for the last budget
 * points (half the shoppers on each instance, so only the budget row is shared), then every
 * authorisation delivered again to the other instance. The budget is granted exactly
 * (never a point over, the last payment gets the remainder), each shopper's cap exactly, the ledger
 * and the budget row agree, and the ledger check finds nothing. On PGlite (one connection) the same
 * storm runs against one instance.
 */
import { expect } from 'chai';
import { createDatabase } from '../../src/db/database.js';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { signToken } from '../support/auth.js';
import { createTestDatabase, testDbConfig, usingPostgres, type TestDatabase } from '../support/database.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { postPlatform } from '../support/webhooks.js';
import { newShopper, payment, type Shopper } from './support.js';

const SHOPPERS = 20;
const PAYMENTS_PER_SHOPPER = 8;
const BUDGET = 1_000;
const PER_PAYMENT = 7; // 160 × 7 = 1120 asked for: the budget runs out, the last grant is 1000 mod 7 = 6
const CAP = 50; // per shopper per day; 8 × 9 = 72 asked for: 5 × 9 + 5
const CAPPED_BONUS = 9;

describe('loyalty campaigns: a global budget and per-shopper caps, raced by two instances', function () {
  this.timeout(600_000);
  let db: TestDatabase;
  let a: TestService;
  let b: TestService;
  let second: ReturnType<typeof createDatabase> | undefined;

  before(async () => {
    db = await createTestDatabase({ migrated: true });
    // Small batches, four at a time per instance: many transactions in flight at once.
    const env = { ...(await testEnv()), PAYMENT_BATCH_MAX: '4', PAYMENT_BATCH_CONCURRENCY: '4' };
    a = await startTestService({ env, db });
    if (usingPostgres) {
      second = createDatabase(testDbConfig(db.url as string));
      b = await startTestService({
        env: { ...env, DATA_DIR: (await testEnv())['DATA_DIR'] },
        db: { ...second, url: db.url },
      });
    } else {
      b = a; // PGlite serves one connection: the storm still races inside one instance
    }
  });
  after(async () => {
    if (b !== a) await b.close();
    await a.close();
    await second?.close();
    await db.close();
  });

  it('when 160 payments on two instances, each delivered twice, race for a 1,000-point budget and 50-point shopper caps, then exactly 1,000 and exactly 50 each are granted', async () => {
    const admin = await signToken({ scope: 'loyalty:admin' });
    const publish = async (key: string, definition: Record<string, unknown>) => {
      const res = await a.request('POST', '/v1/admin/loyalty/campaigns', {
        token: admin,
        json: { definition: { startsAt: '2020-01-01T00:00:00Z', ...definition } },
        headers: { 'idempotency-key': key },
      });
      expect(res.status, res.text).to.equal(201);
      return res.body.campaignId as string;
    };
    const budgeted = await publish('race-budget', {
      name: 'First thousand points',
      effect: { kind: 'fixed_bonus', points: PER_PAYMENT },
      budget: BUDGET,
    });
    const capped = await publish('race-cap', {
      name: 'Fifty a day',
      effect: { kind: 'fixed_bonus', points: CAPPED_BONUS },
      maxBonusPerShopper: { points: CAP, period: 'day' },
      conditions: { timeZone: 'UTC' },
    });

    const cards: Shopper[] = [];
    for (const pan of generatePans(SHOPPERS, '545454')) cards.push(await newShopper(a, pan));
    const payments = cards.flatMap((card) =>
      Array.from({ length: PAYMENTS_PER_SHOPPER }, () => payment(card, { channel: 'in_store', amount: 100 })),
    );
    // Each shopper's payments go to one instance (half the shoppers to each), all at once: the two
    // instances' transactions share no payment and no account, only the campaign's budget row.
    const deliver = async (svc: TestService, p: (typeof payments)[number], id: string) => {
      const res = await postPlatform(svc, p.event({ type: 'authorised' }), { id });
      expect(res.status, res.text).to.equal(200);
    };
    const instanceOf = (i: number) => (Math.floor(i / PAYMENTS_PER_SHOPPER) % 2 === 0 ? a : b);
    await Promise.all(payments.map((p, i) => deliver(instanceOf(i), p, `race-${p.id}`)));
    // Then every authorisation again, to the other instance, concurrently: redeliveries change nothing.
    await Promise.all(payments.map((p, i) => deliver(instanceOf(i) === a ? b : a, p, `race-${p.id}`)));

    const knex = db.knex;
    const grants = async (campaignId: string) =>
      (
        (await knex('loyalty_lots').whereNotNull('campaigns').select('shopper_ref', 'campaigns')) as {
          shopper_ref: string;
          campaigns: { campaignId: string; bonus: number; limitedBy?: string }[] | string;
        }[]
      ).flatMap((l) =>
        (typeof l.campaigns === 'string' ? JSON.parse(l.campaigns) : l.campaigns)
          .filter((c: { campaignId: string }) => c.campaignId === campaignId)
          .map((c: { bonus: number; limitedBy?: string }) => ({ shopper: l.shopper_ref, ...c })),
      ) as { shopper: string; bonus: number; limitedBy?: string }[];
    const booked = async (campaignId: string) =>
      Number(
        (
          (await knex('loyalty_entries')
            .where({ campaign_id: campaignId })
            .first(knex.raw('sum(points)::int as p'))) as {
            p: number;
          }
        ).p,
      );

    const budget = await grants(budgeted);
    expect(budget).to.have.length(SHOPPERS * PAYMENTS_PER_SHOPPER);
    expect(budget.reduce((s, g) => s + g.bonus, 0)).to.equal(BUDGET);
    expect(budget.filter((g) => g.bonus === PER_PAYMENT)).to.have.length(Math.floor(BUDGET / PER_PAYMENT));
    expect(budget.filter((g) => g.bonus > 0 && g.bonus < PER_PAYMENT).map((g) => g.bonus)).to.deep.equal([
      BUDGET % PER_PAYMENT,
    ]);
    expect(budget.filter((g) => g.bonus < PER_PAYMENT).every((g) => g.limitedBy === 'budget')).to.equal(true);
    expect(await booked(budgeted)).to.equal(BUDGET);
    expect(await knex('loyalty_campaign_budgets').where({ campaign_id: budgeted }).first('spent')).to.deep.equal({
      spent: BUDGET,
    });

    const cap = await grants(capped);
    for (const card of cards) {
      const mine = cap.filter((g) => g.shopper === card.shopperRef);
      expect(mine).to.have.length(PAYMENTS_PER_SHOPPER);
      expect(
        mine.reduce((s, g) => s + g.bonus, 0),
        card.shopperRef,
      ).to.equal(CAP);
    }
    expect(await booked(capped)).to.equal(CAP * SHOPPERS);

    const status = await a.request('GET', `/v1/admin/loyalty/campaigns/${budgeted}`, { token: admin });
    expect(status.body.status).to.include({ budgetSpent: BUDGET, budgetLeft: 0 });
    expect((await checkLedger(knex)).violations).to.deep.equal([]);
  });
});
