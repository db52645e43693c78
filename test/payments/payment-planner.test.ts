/**
 * The payment planner on its own: no database, no clock, no ids. Each case is one event against one
 * (locked) payment row and the facts already stored for it.
 */
import { expect } from 'chai';
import type { CardView } from '../../src/cards/vault-service.js';
import type { EventFact, PaymentEventInput } from '../../src/payments/payment-event.js';
import { figuresOf, mergeFacts, paymentsToLock, planEvent } from '../../src/payments/payment-planner.js';
import type { PaymentFact } from '../../src/payments/payment-state.js';
import type { IngestWork, LockedPayment } from '../../src/payments/payment-types.js';

const NOW = new Date(Date.UTC(2026, 10, 1, 12, 30));
const t = (minute: number): Date => new Date(Date.UTC(2026, 10, 1, 12, minute));
const context = { now: NOW, newInboxId: 'evt_new', autoCaptureChannels: ['in_store'] };

const fact = (
  kind: EventFact['kind'],
  key: string,
  amount: number | null,
  currency: string | null = 'GBP',
): EventFact => ({
  kind,
  key,
  amount,
  currency: amount === null ? null : currency,
  occurredAt: t(1),
});

function payment(overrides: Partial<LockedPayment> = {}): LockedPayment {
  return {
    id: 'pay_1',
    provider: 'platform',
    external_id: 'ext-1',
    state: 'awaiting_authorisation',
    card_token: null,
    shopper_ref: null,
    card_last4: null,
    wallet_type: null,
    token_last4: null,
    channel: null,
    store_id: null,
    terminal_id: null,
    merchant_reference: null,
    currency: null,
    authorised_amount: 0,
    captured_amount: 0,
    refunded_amount: 0,
    charged_back_amount: 0,
    authorised_at: null,
    created_at: t(0),
    updated_at: t(0),
    inserted: false,
    ...overrides,
  };
}

function work(
  facts: readonly EventFact[] | undefined,
  options: {
    channel?: 'online' | 'in_store';
    channelIsHint?: boolean;
    rejection?: string;
    replayOf?: string;
    card?: CardView;
    storeId?: string;
  } = {},
): IngestWork {
  const event: PaymentEventInput = {
    provider: 'platform',
    eventKey: 'msg_1',
    eventType: 'payment.test',
    effect:
      facts === undefined
        ? undefined
        : {
            paymentExternalId: 'ext-1',
            facts,
            card: [],
            cardToken: undefined,
            last4: '1111',
            details: {
              channel: options.channel,
              ...(options.channelIsHint === undefined ? {} : { channelIsHint: options.channelIsHint }),
              storeId: options.storeId,
              terminalId: undefined,
              merchantReference: undefined,
            },
          },
    storedPayload: () => ({}),
    ...(options.rejection === undefined ? {} : { rejection: options.rejection }),
  };
  return {
    event,
    card: options.card,
    secretIndex: 0,
    ...(options.replayOf === undefined ? {} : { replayOf: options.replayOf }),
  };
}

const card: CardView = { token: 'tok_1', shopperReference: 'shp_1', last4: '4242' } as CardView;

describe('payment planner (pure)', () => {
  it('when the adapter rejected the event, then it is stored rejected with its code and nothing applies', () => {
    const plan = planEvent(
      work([fact('authorised', 'a', 1000)], { rejection: 'ADYEN_REFERENCE_INVALID' }),
      payment(),
      [],
      context,
    );
    expect(plan).to.include({ state: 'rejected', errorCode: 'ADYEN_REFERENCE_INVALID', inboxId: 'evt_new' });
    expect(plan.apply).to.equal(undefined);
    expect(plan.payment).to.equal(undefined);
  });

  it('when the event has no payment effect, then it is ignored', () => {
    const plan = planEvent(work(undefined), undefined, [], context);
    expect(plan).to.include({ state: 'ignored', errorCode: null });
    expect(plan.apply).to.equal(undefined);
  });

  it('when a fact is in another currency than the payment, then the event fails with PAYMENT_CURRENCY_MISMATCH', () => {
    const plan = planEvent(
      work([fact('captured', 'c', 500, 'EUR')]),
      payment({ currency: 'GBP', state: 'authorised' }),
      [],
      context,
    );
    expect(plan).to.include({ state: 'failed', errorCode: 'PAYMENT_CURRENCY_MISMATCH' });
    expect(plan.apply).to.equal(undefined);
  });

  it('when the authorisation arrives, then it applies, fills the payment from the event and the card, and reports the transition', () => {
    const plan = planEvent(
      work([fact('authorised', 'a', 1000)], { channel: 'online', card, storeId: 'store-9' }),
      payment({ inserted: true }),
      [],
      context,
    );
    expect(plan.state).to.equal('applied');
    expect(plan.apply?.update).to.include({
      state: 'authorised',
      currency: 'GBP',
      authorised_amount: 1000,
      card_token: 'tok_1',
      shopper_ref: 'shp_1',
      card_last4: '1111',
      channel: 'online',
      store_id: 'store-9',
      updated_at: NOW,
    });
    expect(plan.apply?.transition).to.include({ from: 'awaiting_authorisation', to: 'authorised', paymentId: 'pay_1' });
    expect(plan.apply?.transition).to.include({ inboxId: 'evt_new', paymentCreated: true, shopperRef: 'shp_1' });
    expect(plan.apply?.releasesParked).to.equal(false);
  });

  it('when a capture arrives before its authorisation, then it is parked', () => {
    const plan = planEvent(work([fact('captured', 'c', 1000)]), payment({ inserted: true }), [], context);
    expect(plan.state).to.equal('parked');
    expect(plan.apply?.update).to.include({ state: 'awaiting_authorisation' });
  });

  it('when the authorisation arrives for a payment with a parked capture, then it is captured and the parked event released', () => {
    const parked: PaymentFact[] = [fact('captured', 'c', 1000)];
    const plan = planEvent(work([fact('authorised', 'a', 1000)]), payment(), parked, context);
    expect(plan.state).to.equal('applied');
    expect(plan.apply?.update).to.include({ state: 'captured', captured_amount: 1000 });
    expect(plan.apply?.releasesParked).to.equal(true);
  });

  it('when the authorisation comes on an auto-capture channel, then the payment is captured at once', () => {
    const plan = planEvent(
      work([fact('authorised', 'a', 700)], { channel: 'in_store' }),
      payment({ inserted: true }),
      [],
      context,
    );
    expect(plan.apply?.update).to.include({ state: 'captured', captured_amount: 700 });
  });

  it('when a channel is only a hint, then it never replaces a known channel', () => {
    const plan = planEvent(
      work([fact('captured', 'c', 100)], { channel: 'in_store', channelIsHint: true }),
      payment({ channel: 'online', currency: 'GBP', state: 'authorised' }),
      [fact('authorised', 'a', 1000)],
      context,
    );
    expect(plan.apply?.update).to.include({ channel: 'online', state: 'captured', captured_amount: 100 });
  });

  it('when a fact is already stored, then the same fact again changes nothing (no transition)', () => {
    const stored: PaymentFact[] = [fact('authorised', 'a', 1000)];
    const row = payment({ state: 'authorised', currency: 'GBP', authorised_amount: 1000, authorised_at: t(1) });
    const plan = planEvent(work([fact('authorised', 'a', 1000)]), row, stored, context);
    expect(plan.state).to.equal('applied');
    expect(plan.apply?.transition).to.equal(undefined);
  });

  it('when the event is a replay, then it keeps the inbox id of the stored event', () => {
    const plan = planEvent(work([fact('authorised', 'a', 1000)], { replayOf: 'evt_old' }), payment(), [], context);
    expect(plan.inboxId).to.equal('evt_old');
    expect(plan.apply?.transition?.inboxId).to.equal('evt_old');
  });

  it('when stored and incoming facts share a kind and key, then the stored one wins', () => {
    const stored: PaymentFact[] = [fact('refunded', 'r1', 100)];
    const merged = mergeFacts(stored, [fact('refunded', 'r1', 999), fact('refunded', 'r2', 50)]);
    expect(merged.map((f) => [f.key, f.amount])).to.deep.equal([
      ['r1', 100],
      ['r2', 50],
    ]);
  });

  it('when a payment row is read, then its figures are the derived columns', () => {
    expect(
      figuresOf(payment({ state: 'captured', currency: 'GBP', authorised_amount: 5, captured_amount: 5 })),
    ).to.deep.equal({
      state: 'captured',
      currency: 'GBP',
      authorisedAmount: 5,
      capturedAmount: 5,
      refundedAmount: 0,
      chargedBackAmount: 0,
      authorisedAt: null,
    });
  });

  it('when a batch names payments in any order, then they are locked once each, in key order', () => {
    const of = (provider: 'stripe' | 'adyen', id: string): IngestWork => {
      const base = work([fact('captured', 'c', 1)]);
      return { ...base, event: { ...base.event, provider, effect: { ...base.event.effect!, paymentExternalId: id } } };
    };
    const keys = paymentsToLock([
      of('stripe', 'b'),
      of('adyen', 'z'),
      of('stripe', 'a'),
      of('stripe', 'b'),
      work(undefined),
    ]);
    expect(keys.map(([key]) => key)).to.deep.equal(['adyen z', 'stripe a', 'stripe b']);
  });
});
