/**
 * Property: with tiers in the programme, the ledger of a payment still depends on the set of its
 * facts, never on how they arrived. Each run's shopper first reaches gold (×2) with a qualifying
 * purchase; then fast-check draws a story of one payment and a delivery schedule (ordering-stories.ts:
 * random order, redeliveries, re-sends). The in-order run and the shuffled, duplicated run must end
 * with the same balance, the same lot (the pinned tier included) and the same net points; the lot
 * must pin gold and earn twice the base points, and the ledger check must find nothing.
 *
 * The service's clock runs two minutes behind the machine's, so the upgrade (stamped on the clock)
 * comes before the stories' authorisations (stamped a minute before the machine's time); the tokens'
 * clock tolerance is widened to match.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { DEFAULT_RULES } from '../../src/loyalty/programme.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { postPlatform } from '../support/webhooks.js';
import {
  canonicalAndScheduled,
  givesBack,
  replay,
  scheduleArb,
  type Delivery,
  type SchedulePick,
  type Story,
} from './ordering-stories.js';
import { balance, newShopper, paymentLedger, payment, type LotFigures, type Shopper } from './support.js';

/** How far the service's clock runs behind the machine's (within the tokens' clock tolerance). */
const SKEW = 120_000;

interface TieredOutcome {
  readonly balance: { available: number; pending: number; lifetimeEarned: number };
  readonly lot: LotFigures | undefined;
  readonly tier: unknown;
  readonly netPoints: number;
}

/** Twice the default rules' points of the story's authorised amount (1 point per whole unit). */
/** Twice the points of what was captured (a partial capture earns on what it took; in store: the amount). */
function goldEarn(story: Story): number {
  const captured =
    story.channel !== 'in_store' && story.outcome.kind === 'captured' ? story.outcome.captured : story.amount;
  return 2 * Math.floor(captured / 10 ** { GBP: 2, JPY: 0, KWD: 3 }[story.currency]);
}

describe('loyalty: with tiers, any arrival order and any duplication of a payment’s events books the same ledger', function () {
  this.timeout(300_000);
  let svc: TestService;
  const usedPans = new Set<string>();

  /** A card no other run has used, its shopper made gold by one in-store purchase. */
  const freshShopper = async (): Promise<Shopper> => {
    for (;;) {
      const pan = generatePans(1)[0] as string;
      if (usedPans.has(pan)) continue;
      usedPans.add(pan);
      const s = await newShopper(svc, pan);
      const p = payment(s, {
        amount: 100_000,
        channel: 'in_store',
        occurredAt: new Date(Date.now() - 300_000).toISOString(),
      });
      const res = await postPlatform(svc, p.event({ type: 'authorised' }), { timestamp: new Date(Date.now() - SKEW) });
      expect(res.status, res.text).to.equal(200);
      const tier = await svc.service.loyalty.tiers.progress(s.shopperRef);
      expect(tier.progress?.tier).to.equal('gold');
      return s;
    }
  };

  const send = async (d: Delivery): Promise<void> => {
    const res = await postPlatform(svc, d.body, { id: d.deliveryId, timestamp: new Date(Date.now() - SKEW) });
    expect(res.status, `${d.label}: ${res.text}`).to.equal(200);
  };

  const outcomeOf = async (shopper: Shopper, externalId: string): Promise<TieredOutcome> => {
    const { available, pending, lifetimeEarned } = await balance(svc, shopper.shopperRef);
    const { lot, netPoints } = await paymentLedger(svc, externalId);
    const row = (await svc.db.knex('payments').where({ external_id: externalId }).first('id')) as { id: string };
    const lotRow = (await svc.db.knex('loyalty_lots').where({ payment_id: row.id }).first('tier')) as
      { tier: unknown } | undefined;
    const tier = typeof lotRow?.tier === 'string' ? JSON.parse(lotRow.tier) : (lotRow?.tier ?? null);
    return { balance: { available, pending, lifetimeEarned }, lot, tier, netPoints };
  };

  const check = async (pick: SchedulePick, concurrent: boolean): Promise<void> => {
    const { story } = pick;
    const { canonical, shuffled, schedule } = await canonicalAndScheduled(
      { freshShopper, send, outcomeOf },
      pick,
      concurrent,
      'tier',
    );
    const context =
      `story ${JSON.stringify(story)}; deliveries: ${schedule.map((d) => d.label).join(', ')}; ` +
      `canonical ${JSON.stringify(canonical)}; shuffled ${JSON.stringify(shuffled)}`;
    expect(shuffled.balance, `balance; ${context}`).to.deep.equal(canonical.balance);
    expect(shuffled.netPoints, `net points; ${context}`).to.equal(canonical.netPoints);
    // A cancel before its authorisation never opens a lot (compared as an empty one below): the pinned
    // tier is compared where both runs have a lot.
    if (canonical.lot !== undefined && shuffled.lot !== undefined) {
      expect(shuffled.tier, `pinned tier; ${context}`).to.deep.equal(canonical.tier);
    }
    const earns = story.outcome.kind === 'captured' || story.channel === 'in_store';
    if (earns && goldEarn(story) > 0) {
      expect(canonical.tier, `gold pinned; ${context}`).to.deep.equal({ name: 'gold', multiplier: 2 });
      expect(canonical.lot?.earnTarget, `×2 earned; ${context}`).to.equal(goldEarn(story));
    }
    const empty: LotFigures = {
      pending: 0,
      earnTarget: 0,
      reversalTarget: 0,
      credited: 0,
      recovered: 0,
      writtenOff: 0,
      remaining: 0,
    };
    const net = (l: LotFigures) => ({ ...l, credited: l.credited - l.recovered, recovered: 0 });
    const [lotA, lotB] = [canonical.lot ?? empty, shuffled.lot ?? empty];
    if (givesBack(story)) expect(net(lotB), `lot; ${context}`).to.deep.equal(net(lotA));
    else expect(lotB, `lot; ${context}`).to.deep.equal(lotA);
    expect((await checkLedger(svc.db.knex)).violations, `ledger check; ${context}`).to.deep.equal([]);
  };

  before(async () => {
    svc = await startTestService({
      env: await testEnv({ AUTH_CLOCK_TOLERANCE_SECONDS: '300' }),
      clock: () => new Date(Date.now() - SKEW),
    });
    await svc.service.loyalty.programme.publish(
      {
        ...DEFAULT_RULES,
        tiers: {
          measure: 'spend',
          currency: 'GBP',
          window: { kind: 'rolling', days: 365 },
          levels: [
            { name: 'member', threshold: 0, multiplier: 1 },
            { name: 'gold', threshold: 50_000, multiplier: 2 },
          ],
          downgrade: 'one_level',
          graceDays: 0,
        },
      },
      { subject: 'tier-property', origin: 'test' },
    );
  });
  after(async () => svc.close());

  it('when the events arrive one at a time in any order, redelivered and re-sent, then the ledger (and the pinned tier) is the in-order one', async () => {
    await fc.assert(
      fc.asyncProperty(scheduleArb, (s) => check(s, false)),
      { numRuns: 15, ...replay },
    );
  });

  it('when they arrive in concurrent bursts in any order, then the ledger (and the pinned tier) is the in-order one', async () => {
    await fc.assert(
      fc.asyncProperty(scheduleArb, (s) => check(s, true)),
      { numRuns: 15, ...replay },
    );
  });
});
