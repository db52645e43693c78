import { expect } from 'chai';
import { derivePayment, diffPayments, EMPTY_FIGURES, type PaymentFact } from '../../src/payments/payment-state.js';

const t = (minute: number): Date => new Date(Date.UTC(2026, 10, 1, 12, minute));
const fact = (kind: PaymentFact['kind'], key: string, amount: number | null, minute = 0): PaymentFact => ({
  kind,
  key,
  amount,
  currency: amount === null ? null : 'GBP',
  occurredAt: t(minute),
});

function permutations<T>(items: readonly T[]): T[][] {
  if (items.length <= 1) return [[...items]];
  return items.flatMap((item, i) =>
    permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((rest) => [item, ...rest]),
  );
}

describe('payment state (derived from facts)', () => {
  const manual = { autoCapture: false };

  it('when only a capture is known, then the payment awaits its authorisation (parked)', () => {
    expect(derivePayment([fact('captured', 'capture', 1000)], manual).state).to.equal('awaiting_authorisation');
  });

  it('when a failed authorisation follows a successful one, then it stays authorised', () => {
    const figures = derivePayment(
      [fact('authorised', 'auth', 1000, 1), fact('authorisation_failed', 'x', null, 2)],
      manual,
    );
    expect(figures).to.include({ state: 'authorised', authorisedAmount: 1000 });
  });

  it('when only a failed authorisation is known, then authorisation_failed', () => {
    expect(derivePayment([fact('authorisation_failed', 'x', null)], manual).state).to.equal('authorisation_failed');
  });

  it('when an auto-capture channel sends only the authorisation, then it is captured', () => {
    expect(derivePayment([fact('authorised', 'auth', 1000)], { autoCapture: true })).to.include({
      state: 'captured',
      capturedAmount: 1000,
    });
  });

  it('when refunds exceed the captured amount, then the refunded amount is capped at the capture', () => {
    const figures = derivePayment(
      [
        fact('authorised', 'auth', 1000),
        fact('captured', 'capture', 1000),
        fact('refunded', 'r1', 700),
        fact('refunded', 'r2', 700),
      ],
      manual,
    );
    expect(figures).to.include({ state: 'refunded', refundedAmount: 1000 });
  });

  it('when a refund failed, then its amount is no longer refunded', () => {
    const figures = derivePayment(
      [
        fact('authorised', 'auth', 1000),
        fact('captured', 'capture', 1000),
        fact('refunded', 'r1', 300),
        fact('refund_failed', 'r1', 300),
      ],
      manual,
    );
    expect(figures).to.include({ state: 'captured', refundedAmount: 0 });
  });

  it('when CANCEL_OR_REFUND meets an uncaptured payment, then cancelled; a captured one, then refunded', () => {
    const uncaptured = derivePayment([fact('authorised', 'auth', 1000), fact('cancel_or_refund', 'c', 1000)], manual);
    expect(uncaptured.state).to.equal('cancelled');
    const captured = derivePayment(
      [fact('authorised', 'auth', 1000), fact('captured', 'capture', 1000), fact('cancel_or_refund', 'c', 1000)],
      manual,
    );
    expect(captured).to.include({ state: 'refunded', refundedAmount: 1000 });
  });

  it('when a chargeback is reversed, then the payment is back to captured', () => {
    const base = [fact('authorised', 'auth', 1000), fact('captured', 'capture', 1000), fact('chargeback', 'cb', 1000)];
    expect(derivePayment(base, manual)).to.include({ state: 'charged_back', chargedBackAmount: 1000 });
    expect(derivePayment([...base, fact('chargeback_reversed', 'cbr', 1000)], manual)).to.include({
      state: 'captured',
      chargedBackAmount: 0,
    });
  });

  it('when facts in another currency arrive, then they are not netted against the payment', () => {
    const figures = derivePayment(
      [
        fact('authorised', 'auth', 1000),
        fact('captured', 'capture', 1000),
        { ...fact('refunded', 'r', 500), currency: 'USD' },
      ],
      manual,
    );
    expect(figures.refundedAmount).to.equal(0);
  });

  it('every order of authorise, capture, partial refund, refund and chargeback derives the same state', () => {
    const facts = [
      fact('authorised', 'auth', 10_000, 1),
      fact('captured', 'capture', 10_000, 2),
      fact('refunded', 'r1', 2_500, 3),
      fact('refunded', 'r2', 2_500, 4),
      fact('chargeback', 'cb', 5_000, 5),
    ];
    const outcomes = new Set(
      permutations(facts).map((order) => {
        // Applied one at a time, as deliveries arrive: the final derivation sees the whole set.
        let figures = EMPTY_FIGURES;
        for (let i = 1; i <= order.length; i++) figures = derivePayment(order.slice(0, i), manual);
        return JSON.stringify(figures);
      }),
    );
    expect(outcomes.size).to.equal(1);
    expect(JSON.parse([...outcomes][0] as string)).to.include({
      state: 'charged_back',
      capturedAmount: 10_000,
      refundedAmount: 5_000,
      chargedBackAmount: 5_000,
    });
  });

  it('a transition reports the signed change of every amount, and none when nothing changed', () => {
    const before = derivePayment([fact('authorised', 'auth', 1000)], manual);
    const after = derivePayment([fact('authorised', 'auth', 1000), fact('captured', 'capture', 1000)], manual);
    expect(diffPayments(before, after)).to.deep.include({
      from: 'authorised',
      to: 'captured',
      delta: { authorised: 0, captured: 1000, refunded: 0, chargedBack: 0 },
    });
    expect(diffPayments(after, after)).to.equal(undefined);
  });
});
