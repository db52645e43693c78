/**
 * Property: with campaigns that depend on more than the payment (a global budget partly spent, a
 * per-shopper cap per period, first or every Nth purchase, opt-in with or without the shopper's
 * activation), a payment's ledger still depends on the set of its facts and the shared state when
 * it was first booked, never on how its events arrived. fast-check draws the campaign set and the
 * budget already spent, and a story of one payment with a random delivery schedule
 * (ordering-stories.ts); the shared state (budgets) is put back before each run, so the in-order
 * run and the shuffled, duplicated (sequential or concurrent) run start equal and must end equal:
 * same balances, lot, judgements and points per campaign; the budget row grows by exactly what the
 * payment was granted and never passes the budget; the ledger check finds nothing.
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import fc from 'fast-check';
import type { StoredDefinition } from '../../src/loyalty/campaign-store.js';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { startTestService, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { lettersOnly, postPlatform } from '../support/webhooks.js';
import {
  canonicalAndScheduled,
  givesBack,
  replay,
  scheduleArb,
  type Delivery,
  type SchedulePick,
} from './ordering-stories.js';
import { balance, newShopper, paymentLedger, type LotFigures, type Shopper } from './support.js';

/** A stateful campaign: its definition and, for a budget, how much of it was spent before the payment. */
interface Drawn {
  readonly definition: StoredDefinition;
  readonly preSpent: number;
  readonly activated: boolean;
}

const drawnArb: fc.Arbitrary<Drawn> = fc
  .record({
    effect: fc.oneof(
      fc.record({ kind: fc.constant('multiplier' as const), factor: fc.constantFrom(1.5, 2, 3) }),
      fc.record({ kind: fc.constant('fixed_bonus' as const), points: fc.integer({ min: 1, max: 500 }) }),
      fc.record({ kind: fc.constant('points_per_unit' as const), points: fc.constantFrom(0.5, 1, 2) }),
    ),
    budget: fc.option(fc.integer({ min: 1, max: 600 }), { nil: undefined }),
    spentShare: fc.double({ min: 0, max: 1, noNaN: true }),
    cap: fc.option(
      fc.record({
        points: fc.integer({ min: 1, max: 300 }),
        period: fc.constantFrom('day' as const, 'week' as const, 'month' as const, 'campaign' as const),
      }),
      { nil: undefined },
    ),
    purchase: fc.constantFrom('none', 'first', 'every1st', 'every2nd'),
    optIn: fc.constantFrom('none', 'activated', 'not_activated'),
    timeZone: fc.constantFrom('Europe/London', 'Pacific/Kiritimati', 'America/New_York'),
    maxBonusPerPayment: fc.option(fc.integer({ min: 1, max: 1_000 }), { nil: undefined }),
    priority: fc.integer({ min: 0, max: 3 }),
    stacking: fc.constantFrom('exclusive' as const, 'combinable' as const),
  })
  .map((r) => ({
    definition: {
      name: 'stateful property campaign',
      startsAt: '2000-01-01T00:00:00Z',
      conditions: {
        timeZone: r.timeZone,
        ...(r.purchase === 'first' ? { firstPurchaseOnly: true } : {}),
        ...(r.purchase === 'every2nd' ? { everyNthPurchase: 2 } : {}),
        ...(r.optIn === 'none' ? {} : { optInRequired: true }),
      },
      effect: r.effect,
      ...(r.maxBonusPerPayment === undefined ? {} : { maxBonusPerPayment: r.maxBonusPerPayment }),
      ...(r.cap === undefined ? {} : { maxBonusPerShopper: r.cap }),
      ...(r.budget === undefined ? {} : { budget: r.budget }),
      priority: r.priority,
      stacking: r.stacking,
    },
    preSpent: r.budget === undefined ? 0 : Math.floor(r.budget * r.spentShare),
    activated: r.optIn === 'activated',
  }));

/** Up to four campaigns; the first with a budget left and no purchase or opt-in condition, so bonuses are seen. */
const campaignSetArb = fc.tuple(drawnArb, fc.array(drawnArb, { minLength: 0, maxLength: 3 })).map(([first, rest]) => [
  {
    ...first,
    definition: {
      ...first.definition,
      conditions: { timeZone: first.definition.conditions.timeZone as string },
      budget: 400,
    },
    preSpent: Math.min(first.preSpent, 350),
    activated: false,
  },
  ...rest,
]);

/** A lot's campaign bookings that hold points: [campaign, pending, earn, reversal]. */
function booked(campaigns: unknown): [string, number, number, number][] {
  const list = (campaigns ?? []) as { campaignId: string; pending: number; earn: number; reversal: number }[];
  return list
    .filter((c) => c.pending !== 0 || c.earn !== 0 || c.reversal !== 0)
    .map((c) => [c.campaignId, c.pending, c.earn, c.reversal]);
}

describe('loyalty campaigns: any arrival order and duplication books the same ledger under budgets, caps, purchase numbers and opt-in', function () {
  this.timeout(300_000);
  let svc: TestService;
  const usedPans = new Set<string>();

  let installed: { id: string; drawn: Drawn }[] = [];

  /** A new shopper, and the shared state put back as drawn: each run starts from the same budgets. */
  const freshShopper = async (): Promise<Shopper> => {
    for (;;) {
      const pan = generatePans(1)[0] as string;
      if (usedPans.has(pan)) continue;
      usedPans.add(pan);
      const shopper = await newShopper(svc, pan);
      await resetShared(shopper.shopperRef);
      return shopper;
    }
  };

  const resetShared = async (shopperRef: string): Promise<void> => {
    const knex = svc.db.knex;
    // The test, as the table's owner, sets the guard aside to put the budgets back; the service never lowers one.
    await knex.transaction(async (trx) => {
      await trx.raw('alter table loyalty_campaign_budgets disable trigger loyalty_campaign_budgets_guard');
      await trx('loyalty_campaign_budgets').delete();
      await trx.raw('alter table loyalty_campaign_budgets enable trigger loyalty_campaign_budgets_guard');
    });
    const budgets = installed.filter((c) => c.drawn.definition.budget !== undefined);
    if (budgets.length > 0) {
      await knex('loyalty_campaign_budgets').insert(
        budgets.map((c) => ({ campaign_id: c.id, spent: c.drawn.preSpent, updated_at: new Date() })),
      );
    }
    const activated = installed.filter((c) => c.drawn.activated);
    if (activated.length > 0) {
      await knex('loyalty_campaign_activations').insert(
        activated.map((c) => ({
          shopper_ref: shopperRef,
          campaign_id: c.id,
          activated_at: new Date(0),
          activated_by: 'property',
        })),
      );
    }
  };

  const send = async (d: Delivery): Promise<void> => {
    const res = await postPlatform(svc, d.body, { id: d.deliveryId });
    expect(res.status, `${d.label}: ${res.text}`).to.equal(200);
  };

  /** Replaces the campaigns in force by this set (each a new campaign, in force since the epoch). */
  const install = async (set: readonly Drawn[]): Promise<void> => {
    const knex = svc.db.knex;
    // The table is append-only (a trigger refuses UPDATE and DELETE): the test, as its owner, sets it
    // aside for the swap; the service never deletes a version.
    await knex.transaction(async (trx) => {
      await trx.raw('alter table loyalty_campaign_versions disable trigger loyalty_campaign_versions_append_only');
      await trx('loyalty_campaign_versions').delete();
      await trx.raw('alter table loyalty_campaign_versions enable trigger loyalty_campaign_versions_append_only');
    });
    installed = set.map((drawn) => ({ id: `cmp_${lettersOnly(randomBytes(13).toString('hex'))}`, drawn }));
    await knex('loyalty_campaign_versions').insert(
      installed.map(({ id, drawn: { definition } }) => ({
        campaign_id: id,
        version: 1,
        definition: JSON.stringify(definition),
        effective_from: new Date(0),
        created_by: 'property',
        created_at: new Date(),
      })),
    );
  };

  /** What the payment earned: balance, lot (with its campaign judgements) and net points per campaign. */
  const outcomeOf = async (shopper: Shopper, payment: string) => {
    const { available, pending, lifetimeEarned } = await balance(svc, shopper.shopperRef);
    const { lot, netPoints } = await paymentLedger(svc, payment);
    const knex = svc.db.knex;
    const row = (await knex('payments').where({ external_id: payment }).first('id')) as { id: string };
    const lotRow = (await knex('loyalty_lots').where({ payment_id: row.id }).first('campaigns')) as
      { campaigns: unknown } | undefined;
    const perCampaign = (await knex('loyalty_entries')
      .where({ payment_id: row.id })
      .whereNotNull('campaign_id')
      .groupBy('campaign_id', 'campaign_version')
      .orderBy('campaign_id')
      .select('campaign_id', knex.raw('sum(points)::int as points'))) as { campaign_id: string; points: number }[];
    const campaigns = lotRow?.campaigns;
    return {
      balance: { available, pending, lifetimeEarned },
      lot,
      netPoints,
      campaigns: typeof campaigns === 'string' ? (JSON.parse(campaigns) as unknown) : (campaigns ?? null),
      // Net zero is no contribution (a pending bonus voided by a cancel nets to zero, or never books).
      perCampaign: perCampaign.map((p) => [p.campaign_id, Number(p.points)]).filter(([, points]) => points !== 0),
    };
  };

  let bonusesSeen = 0;

  const check = async (set: readonly Drawn[], pick: SchedulePick, concurrent: boolean): Promise<void> => {
    await install(set);
    const { story } = pick;
    const runner = { freshShopper, send, outcomeOf };
    const { canonical, shuffled } = await canonicalAndScheduled(runner, pick, concurrent, 'cmp');

    const context = `campaigns ${JSON.stringify(set)}; story ${JSON.stringify(story)}; canonical ${JSON.stringify(
      canonical,
    )}; shuffled ${JSON.stringify(shuffled)}`;
    expect(shuffled.balance, `balance; ${context}`).to.deep.equal(canonical.balance);
    expect(shuffled.netPoints, `net points; ${context}`).to.equal(canonical.netPoints);
    // A payment that never earns may or may not have opened a lot (a cancel before its authorisation
    // never does): its campaigns' bookings are compared, and their judgements when both have a lot.
    expect(booked(shuffled.campaigns), `campaign bookings; ${context}`).to.deep.equal(booked(canonical.campaigns));
    if (canonical.lot !== undefined && shuffled.lot !== undefined) {
      expect(shuffled.campaigns, `campaign judgements; ${context}`).to.deep.equal(canonical.campaigns);
    }
    expect(shuffled.perCampaign, `points per campaign; ${context}`).to.deep.equal(canonical.perCampaign);
    const empty: LotFigures = {
      pending: 0,
      earnTarget: 0,
      reversalTarget: 0,
      credited: 0,
      recovered: 0,
      writtenOff: 0,
      remaining: 0,
    };
    // Credited and recovered are gross movements (see ordering.property.test.ts): compared net when
    // the story takes points back and gives them back.
    const net = (l: LotFigures) => ({ ...l, credited: l.credited - l.recovered, recovered: 0 });
    const lotOf = (l: LotFigures | undefined) => (givesBack(story) ? net(l ?? empty) : (l ?? empty));
    expect(lotOf(shuffled.lot), `lot; ${context}`).to.deep.equal(lotOf(canonical.lot));
    if (canonical.perCampaign.some(([, points]) => points !== 0)) bonusesSeen++;
    // The budget grew by exactly what the shuffled run's payment was granted, and never passed it.
    const granted = new Map(
      ((shuffled.campaigns ?? []) as { campaignId: string; bonus: number }[]).map((c) => [c.campaignId, c.bonus]),
    );
    for (const { id, drawn } of installed) {
      const budget = drawn.definition.budget;
      if (budget === undefined) continue;
      const row = (await svc.db.knex('loyalty_campaign_budgets').where({ campaign_id: id }).first('spent')) as {
        spent: number;
      };
      expect(Number(row.spent), `budget spent; ${context}`).to.equal(drawn.preSpent + (granted.get(id) ?? 0));
      expect(Number(row.spent), `budget; ${context}`).to.be.at.most(budget);
    }
    const report = await checkLedger(svc.db.knex);
    expect(report.violations, `ledger check; ${context}`).to.deep.equal([]);
  };

  before(async () => {
    svc = await startTestService();
  });
  after(async () => svc.close());

  it('when the events of a payment arrive one at a time in any order, redelivered and re-sent, under random budgets, caps, purchase numbers and opt-ins, then the ledger is the in-order one', async () => {
    bonusesSeen = 0;
    await fc.assert(
      fc.asyncProperty(campaignSetArb, scheduleArb, (set, schedule) => check(set, schedule, false)),
      { numRuns: 20, ...replay },
    );
    // Not a vacuous property: campaigns did give points in some runs.
    expect(bonusesSeen).to.be.greaterThan(0);
  });

  it('when they arrive in concurrent bursts, under random budgets, caps, purchase numbers and opt-ins, then the ledger is the in-order one', async () => {
    bonusesSeen = 0;
    await fc.assert(
      fc.asyncProperty(campaignSetArb, scheduleArb, (set, schedule) => check(set, schedule, true)),
      { numRuns: 20, ...replay },
    );
    expect(bonusesSeen).to.be.greaterThan(0);
  });
});
