/**
 * Property: the ledger of a payment depends on the set of its facts, never on how they arrived.
 *
 * fast-check generates the story of one payment (authorised; captured, in full or in part (the rest of
 * the hold released), with 0–3 partial refunds, some
 * of which fail, and an optional chargeback that may be reversed; or cancelled instead of captured)
 * and a delivery schedule for it: every event in a random order, some redelivered with the same
 * delivery id, some sent again as the same business event under a new delivery id. The canonical run
 * (in order, each event once) and the shuffled run go to two fresh shoppers of one service; their
 * balances, lots and per-payment net points must be equal, the canonical one must match a small
 * model of the rules, and the invariant check must find nothing.
 *
 * A failure prints fast-check's seed and path: see `replay` below to rerun exactly that case.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { startTestService, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { postPlatform } from '../support/webhooks.js';
import {
  canonicalAndScheduled,
  givesBack,
  modelOf,
  replay,
  scheduleArb,
  type Delivery,
  type Outcome,
  type SchedulePick,
} from './ordering-stories.js';
import { balance, newShopper, paymentLedger, type LotFigures, type Shopper } from './support.js';

describe('loyalty: any arrival order and any duplication of a payment’s events books the same ledger', function () {
  this.timeout(120_000);
  let svc: TestService;
  const usedPans = new Set<string>();

  /** A card no other run has used: each run's shoppers start with an empty ledger. */
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

  const outcomeOf = async (shopper: Shopper, payment: string): Promise<Outcome> => {
    const { available, pending, lifetimeEarned } = await balance(svc, shopper.shopperRef);
    const { lot, netPoints } = await paymentLedger(svc, payment);
    return { balance: { available, pending, lifetimeEarned }, lot, netPoints };
  };

  /** The canonical run, then the scheduled one; compares them. */
  const check = async (pick: SchedulePick, concurrent: boolean): Promise<void> => {
    const { story } = pick;
    const runner = { freshShopper, send, outcomeOf };
    const { canonical, shuffled, schedule } = await canonicalAndScheduled(runner, pick, concurrent, 'ord');

    const context =
      `story ${JSON.stringify(story)}; deliveries: ${schedule.map((d) => d.label).join(', ')}; ` +
      `canonical ${JSON.stringify(canonical)}; shuffled ${JSON.stringify(shuffled)}`;
    expect(canonical.balance, `canonical vs the model; ${context}`).to.include(modelOf(story));
    expect(shuffled.balance, `balance; ${context}`).to.deep.equal(canonical.balance);
    expect(shuffled.netPoints, `net points of the payment; ${context}`).to.equal(canonical.netPoints);
    expect(shuffled.netPoints, `net points are what is available and pending; ${context}`).to.equal(
      shuffled.balance.available + shuffled.balance.pending,
    );
    // A payment that never earns may or may not have an empty lot (a cancel before its authorisation
    // never opens one): compare an absent lot as an empty one.
    const empty: LotFigures = {
      pending: 0,
      earnTarget: 0,
      reversalTarget: 0,
      credited: 0,
      recovered: 0,
      writtenOff: 0,
      remaining: 0,
    };
    const lotA = canonical.lot ?? empty;
    const lotB = shuffled.lot ?? empty;
    const net = (l: LotFigures) => ({ ...l, credited: l.credited - l.recovered, recovered: 0 });
    if (givesBack(story)) {
      // Credited and recovered count gross movements: a reversal later cancelled (refund then its
      // failure) adds to both, and the failure arriving first adds to neither. Their difference, and
      // everything else, must not depend on the order.
      expect(net(lotB), `lot (credited − recovered); ${context}`).to.deep.equal(net(lotA));
    } else {
      expect(lotB, `lot; ${context}`).to.deep.equal(lotA);
    }
    const report = await checkLedger(svc.db.knex);
    expect(report.violations, `ledger check; ${context}`).to.deep.equal([]);
  };

  before(async () => {
    svc = await startTestService();
  });
  after(async () => svc.close());

  it('when the events arrive one at a time in any order, redelivered and re-sent, then the ledger is the in-order one', async () => {
    await fc.assert(
      fc.asyncProperty(scheduleArb, (s) => check(s, false)),
      { numRuns: 25, ...replay },
    );
  });

  it('when they arrive in concurrent bursts in any order, redelivered and re-sent, then the ledger is the in-order one', async () => {
    await fc.assert(
      fc.asyncProperty(scheduleArb, (s) => check(s, true)),
      { numRuns: 25, ...replay },
    );
  });
});
