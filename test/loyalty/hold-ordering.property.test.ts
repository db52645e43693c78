/**
 * Property: holds, partial and multiple captures, and hold releases keep a payment's ledger a function
 * of its facts, whatever the arrival order, the duplicates and when the release job ran.
 *
 * fast-check generates one Adyen payment (authorised; 0–3 captures, each its own PSP reference, which
 * may add up to more than the authorisation; maybe a cancel; maybe a refund) and a schedule: the
 * notifications shuffled, some sent twice, with hold release runs (the clock past the hold window) at
 * random points, some of them concurrent with a delivery. Both runs end with a release run once every
 * event is in.
 *
 * The release is the one time-dependent fact (src/loyalty/hold-release-service.ts): whether it came
 * before a capture changes which entries explain the change (`hold_captured` + `earn`, or
 * `hold_expired` then `earn`), never the outcome. So the canonical run (in order, each event once) and
 * the scheduled one must end with the same balance, lot figures and net points, the canonical one must
 * match a model (earn on what was captured, capped at the authorisation; a refund's proportion back;
 * nothing left pending), and the ledger check must find nothing.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { startTestService, type TestService } from '../support/harness.js';
import { postAdyen } from '../support/webhooks.js';
import { adyenPayment, aliasShopper, movableClock, publishRules, type AdyenStep } from './hold-support.js';
import { replay } from './ordering-stories.js';
import { balance, paymentLedger, type LotFigures } from './support.js';

interface HoldStory {
  readonly amount: number;
  readonly captures: readonly number[];
  readonly cancelled: boolean;
  readonly refund: number | null;
}

const holdStoryArb: fc.Arbitrary<HoldStory> = fc
  .record({
    amount: fc.integer({ min: 100, max: 50_000 }),
    captureShares: fc.array(fc.double({ min: 0.01, max: 1, noNaN: true }), { maxLength: 3 }),
    cancelled: fc.boolean(),
    refundShare: fc.option(fc.double({ min: 0.01, max: 1, noNaN: true })),
  })
  .map(({ amount, captureShares, cancelled, refundShare }) => {
    const captures = captureShares.map((share) => Math.max(1, Math.round(amount * share)));
    const captured = Math.min(
      amount,
      captures.reduce((sum, c) => sum + c, 0),
    );
    const refund = refundShare === null || captured === 0 ? null : Math.max(1, Math.round(captured * refundShare));
    return { amount, captures, cancelled, refund };
  });

function stepsOf(story: HoldStory): AdyenStep[] {
  return [
    { type: 'authorised' },
    ...story.captures.map((amount, i): AdyenStep => ({ type: 'captured', id: `c${i + 1}`, amount })),
    ...(story.cancelled ? [{ type: 'cancelled' } as const] : []),
    ...(story.refund === null ? [] : [{ type: 'refunded', id: 'r1', amount: story.refund } as const]),
  ];
}

/** The model: one point per whole pound of what was captured (at most the authorisation), less the refund's share. */
function modelOf(story: HoldStory): { available: number; pending: number } {
  const captured = Math.min(
    story.amount,
    story.captures.reduce((sum, c) => sum + c, 0),
  );
  const earn = Math.floor(captured / 100);
  const refunded = Math.min(captured, story.refund ?? 0);
  const reversal =
    captured === 0 ? 0 : Number((2n * BigInt(earn) * BigInt(refunded) + BigInt(captured)) / (2n * BigInt(captured)));
  return { available: earn - reversal, pending: 0 };
}

const scheduleArb = holdStoryArb.chain((story) => {
  const n = stepsOf(story).length;
  return fc.record({
    story: fc.constant(story),
    again: fc.array(fc.boolean(), { minLength: n, maxLength: n }),
    order: fc.shuffledSubarray(
      Array.from({ length: 2 * n }, (_, i) => i),
      { minLength: 2 * n, maxLength: 2 * n },
    ),
    // Before which deliveries a release run happens, and whether it runs concurrently with it.
    releases: fc.array(fc.constantFrom('none', 'before', 'alongside'), { minLength: 2 * n, maxLength: 2 * n }),
  });
});

describe('loyalty: holds, partial captures and releases in any order book the same ledger', function () {
  this.timeout(300_000);
  let svc: TestService;
  const time = movableClock();

  const release = async (): Promise<void> => {
    await svc.service.loyalty.releaseDueHolds();
  };
  /** A release run two hours on (the hold window is one hour); the clock is back at now after it. */
  const releaseLater = async (): Promise<void> => {
    time.set(2 * 3_600_000);
    try {
      await release();
    } finally {
      time.set(0);
    }
  };
  const send = async (item: Record<string, unknown>, label: string): Promise<void> => {
    const res = await postAdyen(svc, [item]);
    expect(res.status, `${label}: ${res.text}`).to.equal(200);
  };

  const outcome = async (shopperRef: string, psp: string) => {
    const { available, pending, lifetimeEarned } = await balance(svc, shopperRef);
    const { lot, netPoints } = await paymentLedger(svc, psp);
    const empty: LotFigures = {
      pending: 0,
      earnTarget: 0,
      reversalTarget: 0,
      credited: 0,
      recovered: 0,
      writtenOff: 0,
      remaining: 0,
    };
    const l = lot ?? empty;
    // Credited and recovered count gross movements (a reversal shrunk by a later capture adds to both).
    return {
      balance: { available, pending, lifetimeEarned },
      lot: { ...l, credited: l.credited - l.recovered, recovered: 0 },
      netPoints,
    };
  };

  before(async () => {
    svc = await startTestService({ clock: time.clock });
    await publishRules(svc, { holdWindowHours: 1 });
  });
  after(async () => svc.close());

  it('when captures, cancels and refunds arrive in any order, redelivered, with release runs anywhere, then the ledger is the in-order one', async () => {
    await fc.assert(
      fc.asyncProperty(scheduleArb, async ({ story, again, order, releases }) => {
        const steps = stepsOf(story);
        // Authorised after the programme version with the hold window took effect.
        const start = Date.now();

        const canonicalShopper = await aliasShopper(svc);
        const canonical = adyenPayment(canonicalShopper, story.amount);
        for (const [i, step] of steps.entries()) {
          await send(canonical.item(step, new Date(start + i * 1_000)), step.type);
        }
        await releaseLater();

        const shopper = await aliasShopper(svc);
        const shuffled = adyenPayment(shopper, story.amount);
        // Each notification built once: its copy is byte-for-byte the same delivery.
        const items = steps.map((step, i) => shuffled.item(step, new Date(start + i * 1_000)));
        const labels: string[] = [];
        for (const [position, index] of order.entries()) {
          const i = index % steps.length;
          if (index >= steps.length && again[i] !== true) continue;
          const label = `${steps[i]?.type}${index >= steps.length ? ' again' : ''}`;
          const when = releases[position];
          if (when === 'before') {
            labels.push('release');
            await releaseLater();
          }
          labels.push(when === 'alongside' ? `${label} with a release` : label);
          if (when === 'alongside') {
            time.set(2 * 3_600_000);
            await Promise.all([send(items[i] as Record<string, unknown>, label), release()]).finally(() => time.set(0));
          } else {
            await send(items[i] as Record<string, unknown>, label);
          }
        }
        await releaseLater();

        const a = await outcome(canonicalShopper.shopperRef, canonical.psp);
        const b = await outcome(shopper.shopperRef, shuffled.psp);
        const context = `story ${JSON.stringify(story)}; schedule ${labels.join(', ')}; canonical ${JSON.stringify(a)}; shuffled ${JSON.stringify(b)}`;
        expect(a.balance, `canonical vs the model; ${context}`).to.include(modelOf(story));
        expect(b.balance, `balance; ${context}`).to.deep.equal(a.balance);
        expect(b.lot, `lot; ${context}`).to.deep.equal(a.lot);
        expect(b.netPoints, `net points; ${context}`).to.equal(a.netPoints);
        expect(b.netPoints, `net points are what is available; ${context}`).to.equal(b.balance.available);
        const report = await checkLedger(svc.db.knex);
        expect(report.violations, `ledger check; ${context}`).to.deep.equal([]);
      }),
      { numRuns: 20, ...replay },
    );
  });
});
