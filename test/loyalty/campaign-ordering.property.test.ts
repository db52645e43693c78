/**
 * Property: with campaigns in force, the ledger of a payment still depends on the set of its facts,
 * never on how they arrived. fast-check draws a random campaign set (conditions on channel, currency,
 * amount, days and time window; multiplier, fixed or per-unit bonus; caps; priorities, exclusive or
 * combinable) and a story of one payment with a random delivery schedule (ordering-stories.ts). The
 * in-order run and the shuffled, duplicated run must end with the same balances, the same lot (its
 * campaign judgements included) and the same points per campaign version, and the ledger check must
 * find nothing.
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import fc from 'fast-check';
import { WEEKDAYS } from '../../src/loyalty/campaign-rules.js';
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

const definitionArb: fc.Arbitrary<StoredDefinition> = fc.record(
  {
    name: fc.constant('property campaign'),
    startsAt: fc.constant('2000-01-01T00:00:00Z'),
    endsAt: fc.constantFrom('2001-01-01T00:00:00Z', '2999-01-01T00:00:00Z'),
    conditions: fc.record(
      {
        channels: fc.subarray(['online', 'in_store'], { minLength: 1 }),
        currency: fc.constantFrom('GBP', 'JPY', 'KWD'),
        daysOfWeek: fc.subarray([...WEEKDAYS], { minLength: 1 }),
        timeWindow: fc.record({
          from: fc.constantFrom('00:00', '06:30', '18:00'),
          to: fc.constantFrom('05:00', '12:00', '23:59'),
        }),
        timeZone: fc.constantFrom('Europe/London', 'Pacific/Kiritimati', 'America/New_York'),
      },
      { requiredKeys: ['timeZone'] },
    ),
    effect: fc.oneof(
      fc.record({ kind: fc.constant('multiplier' as const), factor: fc.constantFrom(1.5, 2, 3) }),
      fc.record({ kind: fc.constant('fixed_bonus' as const), points: fc.integer({ min: 1, max: 500 }) }),
      fc.record({ kind: fc.constant('points_per_unit' as const), points: fc.constantFrom(0.5, 1, 2) }),
    ),
    maxBonusPerPayment: fc.integer({ min: 1, max: 1_000 }),
    priority: fc.integer({ min: 0, max: 3 }),
    stacking: fc.constantFrom('exclusive' as const, 'combinable' as const),
  },
  { requiredKeys: ['name', 'startsAt', 'conditions', 'effect', 'priority', 'stacking'] },
);

/** A lot's campaign bookings that hold points: [campaign, pending, earn, reversal]. */
function booked(campaigns: unknown): [string, number, number, number][] {
  const list = (campaigns ?? []) as { campaignId: string; pending: number; earn: number; reversal: number }[];
  return list
    .filter((c) => c.pending !== 0 || c.earn !== 0 || c.reversal !== 0)
    .map((c) => [c.campaignId, c.pending, c.earn, c.reversal]);
}

/**
 * One campaign with no condition but its time zone, in force throughout (random effect, cap, priority
 * and stacking), then up to three random ones: every story that earns also earns a bonus, so the
 * properties below cannot pass without bonuses (with random conditions only, a CI run once drew 30 sets
 * of which none qualified, and the non-vacuity check failed).
 */
const alwaysInForceArb: fc.Arbitrary<StoredDefinition> = definitionArb.map((d) => ({
  ...d,
  endsAt: '2999-01-01T00:00:00Z',
  conditions: d.conditions.timeZone === undefined ? {} : { timeZone: d.conditions.timeZone },
}));
const campaignSetArb = fc
  .tuple(alwaysInForceArb, fc.array(definitionArb, { minLength: 0, maxLength: 3 }))
  .map(([always, rest]) => [always, ...rest]);

describe('loyalty campaigns: any arrival order and duplication books the same ledger with campaigns in force', function () {
  this.timeout(300_000);
  let svc: TestService;
  const usedPans = new Set<string>();

  const freshShopper = async (): Promise<Shopper> => {
    for (;;) {
      const pan = generatePans(1)[0] as string;
      if (usedPans.has(pan)) continue;
      usedPans.add(pan);
      return newShopper(svc, pan);
    }
  };

  const send = async (d: Delivery): Promise<void> => {
    const res = await postPlatform(svc, d.body, { id: d.deliveryId });
    expect(res.status, `${d.label}: ${res.text}`).to.equal(200);
  };

  /** Replaces the campaigns in force by this set (each a new campaign, in force since the epoch). */
  const install = async (set: readonly StoredDefinition[]): Promise<void> => {
    const knex = svc.db.knex;
    // The table is append-only (a trigger refuses UPDATE and DELETE): the test, as its owner, sets it
    // aside for the swap; the service never deletes a version.
    await knex.transaction(async (trx) => {
      await trx.raw('alter table loyalty_campaign_versions disable trigger loyalty_campaign_versions_append_only');
      await trx('loyalty_campaign_versions').delete();
      await trx.raw('alter table loyalty_campaign_versions enable trigger loyalty_campaign_versions_append_only');
    });
    await knex('loyalty_campaign_versions').insert(
      set.map((definition) => ({
        campaign_id: `cmp_${lettersOnly(randomBytes(13).toString('hex'))}`,
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

  const check = async (set: readonly StoredDefinition[], pick: SchedulePick, concurrent: boolean): Promise<void> => {
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
    const report = await checkLedger(svc.db.knex);
    expect(report.violations, `ledger check; ${context}`).to.deep.equal([]);
  };

  before(async () => {
    svc = await startTestService();
  });
  after(async () => svc.close());

  it('when the events of a payment arrive one at a time in any order, redelivered and re-sent, under random campaigns, then the ledger is the in-order one', async () => {
    bonusesSeen = 0;
    await fc.assert(
      fc.asyncProperty(campaignSetArb, scheduleArb, (set, schedule) => check(set, schedule, false)),
      { numRuns: 30, ...replay },
    );
    // Not a vacuous property: campaigns did give points in some runs.
    expect(bonusesSeen).to.be.greaterThan(0);
  });

  it('when they arrive in concurrent bursts, under random campaigns, then the ledger is the in-order one', async () => {
    bonusesSeen = 0;
    await fc.assert(
      fc.asyncProperty(campaignSetArb, scheduleArb, (set, schedule) => check(set, schedule, true)),
      { numRuns: 30, ...replay },
    );
    expect(bonusesSeen).to.be.greaterThan(0);
  });
});
