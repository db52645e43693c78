/**
 * The stories of one payment the ordering properties generate (fast-check arbitraries), their
 * deliveries (in order, or shuffled with redeliveries and re-sends) and a model of the default rules.
 * Shared by test/loyalty/ordering.property.test.ts and campaign-ordering.property.test.ts.
 */
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { lettersOnly, paymentId, platformEvent } from '../support/webhooks.js';
import type { LotFigures, Shopper } from './support.js';

export type Channel = 'online' | 'in_store';

export interface Refund {
  readonly id: string;
  readonly amount: number;
  readonly fails: boolean;
}

export interface Story {
  readonly channel: Channel;
  readonly currency: 'GBP' | 'JPY' | 'KWD';
  readonly amount: number;
  readonly outcome:
    | { readonly kind: 'cancelled' }
    | {
        readonly kind: 'captured';
        /** What the capture takes (a partial capture when less than the amount; online only: in store is auto-captured). */
        readonly captured: number;
        readonly refunds: readonly Refund[];
        readonly chargeback: { readonly amount: number; readonly reversed: boolean } | null;
      };
}

export type StoryEvent =
  | { readonly type: 'payment.authorised' | 'payment.cancelled' }
  | { readonly type: 'payment.captured'; readonly amount: number }
  | { readonly type: 'payment.refunded' | 'payment.refund_failed'; readonly refund: { id: string; amount: number } }
  | {
      readonly type: 'payment.chargeback' | 'payment.chargeback_reversed';
      readonly chargeback: { id: string; amount: number };
    };

/** The story's business events, in the order a well-behaved gateway would send them. */
export function eventsOf(story: Story): StoryEvent[] {
  const events: StoryEvent[] = [{ type: 'payment.authorised' }];
  if (story.outcome.kind === 'cancelled') return [...events, { type: 'payment.cancelled' }];
  events.push({ type: 'payment.captured', amount: story.outcome.captured });
  for (const r of story.outcome.refunds) {
    events.push({ type: 'payment.refunded', refund: { id: r.id, amount: r.amount } });
    if (r.fails) events.push({ type: 'payment.refund_failed', refund: { id: r.id, amount: r.amount } });
  }
  const cb = story.outcome.chargeback;
  if (cb !== null) {
    events.push({ type: 'payment.chargeback', chargeback: { id: 'cb1', amount: cb.amount } });
    if (cb.reversed) events.push({ type: 'payment.chargeback_reversed', chargeback: { id: 'cb1', amount: cb.amount } });
  }
  return events;
}

export const storyArb: fc.Arbitrary<Story> = fc
  .record({
    channel: fc.constantFrom<Channel>('online', 'in_store'),
    currency: fc.constantFrom('GBP' as const, 'JPY' as const, 'KWD' as const),
    amount: fc.oneof(fc.integer({ min: 1, max: 5_000 }), fc.integer({ min: 5_000, max: 50_000_000 })),
    cancelled: fc.boolean(),
  })
  .chain(({ channel, currency, amount, cancelled }) => {
    if (cancelled) return fc.constant<Story>({ channel, currency, amount, outcome: { kind: 'cancelled' } });
    // A full capture favoured; otherwise a partial one (the rest of the hold is released).
    const capturedArb = fc.oneof({ weight: 3, arbitrary: fc.constant(amount) }, fc.integer({ min: 1, max: amount }));
    return capturedArb.chain((captured) => capturedStory(channel, currency, amount, captured));
  });

function capturedStory(
  channel: Channel,
  currency: Story['currency'],
  amount: number,
  captured: number,
): fc.Arbitrary<Story> {
  // Distinct cut points (the full capture favoured, for full refunds): refund i is cut[i] − cut[i−1],
  // so the refunds are positive and sum to at most the captured amount.
  const cut = fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 1, max: captured }) }, fc.constant(captured));
  return fc
    .record({
      cuts: fc.uniqueArray(cut, { maxLength: 3 }),
      fails: fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }),
      chargeback: fc.option(fc.record({ share: fc.double({ min: 0, max: 1, noNaN: true }), reversed: fc.boolean() })),
    })
    .map(({ cuts, fails, chargeback }): Story => {
      const sorted = [...cuts].sort((a, b) => a - b);
      const refunds = sorted.map((c, i) => ({ id: `r${i + 1}`, amount: c - (sorted[i - 1] ?? 0), fails: fails[i]! }));
      const left = captured - (sorted.at(-1) ?? 0);
      const cbAmount = chargeback === null ? 0 : Math.max(1, Math.round(left * chargeback.share));
      return {
        channel,
        currency,
        amount,
        outcome: {
          kind: 'captured',
          captured,
          refunds,
          chargeback: chargeback === null || left === 0 ? null : { amount: cbAmount, reversed: chargeback.reversed },
        },
      };
    });
}

/** How each business event is delivered besides its first delivery. */
export interface Copies {
  /** Redeliveries with the same delivery id (a gateway retry). */
  readonly sameId: number;
  /** The same business event under new delivery ids (a gateway re-emitting it). */
  readonly newId: number;
}

/** A story, the copies of each of its events, and a permutation of all the deliveries. */
export const scheduleArb: fc.Arbitrary<SchedulePick> = storyArb.chain((story) => {
  const n = eventsOf(story).length;
  const copies = fc.array(fc.record({ sameId: fc.nat({ max: 2 }), newId: fc.nat({ max: 1 }) }), {
    minLength: n,
    maxLength: n,
  });
  return copies.chain((c) => {
    const total = c.reduce((sum, x) => sum + 1 + x.sameId + x.newId, 0);
    const indices = Array.from({ length: total }, (_, i) => i);
    return fc.record({
      story: fc.constant(story),
      copies: fc.constant<readonly Copies[]>(c),
      order: fc.shuffledSubarray(indices, { minLength: total, maxLength: total }),
      // Concurrent mode: where the shuffled deliveries are cut into bursts sent at once.
      bursts: fc.array(fc.boolean(), { minLength: total, maxLength: total }),
    });
  });
});

export interface Delivery {
  readonly body: Record<string, unknown>;
  readonly deliveryId: string;
  readonly label: string;
}

/** Builds each business event's body once: every copy of it is byte-for-byte the same event. */
export function deliveries(story: Story, payment: string, card: Shopper, copies: readonly Copies[]): Delivery[] {
  // Letters only: twelve hex digits are all decimal about once in 280 draws, and a Luhn-valid one
  // makes the delivery id read as a card number (refused).
  const run = lettersOnly(randomBytes(6).toString('hex'));
  const occurredAt = Date.now() - 60_000;
  return eventsOf(story).flatMap((e, i) => {
    const body = platformEvent({
      ...e,
      paymentId: payment,
      // A capture carries what it captures (a partial capture: less than the authorisation).
      amount: 'amount' in e ? e.amount : story.amount,
      currency: story.currency,
      channel: story.channel,
      card: { token: card.cardToken },
      // Distinct, ordered occurrence times: the story's own chronology, whatever the arrival order.
      occurredAt: new Date(occurredAt + i * 1_000).toISOString(),
    });
    const label = 'refund' in e ? `${e.type}(${e.refund.id})` : e.type;
    const c = copies[i] ?? { sameId: 0, newId: 0 };
    const first: Delivery = { body, deliveryId: `msg_${run}_e${i}_c0`, label };
    return [
      first,
      ...Array.from({ length: c.sameId }, () => ({ ...first, label: `${label} again` })),
      ...Array.from({ length: c.newId }, (_, k) => ({
        body,
        deliveryId: `msg_${run}_e${i}_c${k + 1}`,
        label: `${label} as a new delivery`,
      })),
    ];
  });
}

export interface Outcome {
  readonly balance: { available: number; pending: number; lifetimeEarned: number };
  readonly lot: LotFigures | undefined;
  readonly netPoints: number;
}

/** An independent model of the default rules (1 point per whole unit, in store earns at once). */
export function modelOf(story: Story): { available: number; pending: number } {
  const unitsOf = (minor: number): number => Math.floor(minor / 10 ** { GBP: 2, JPY: 0, KWD: 3 }[story.currency]);
  // A cancel only cancels what was not captured; an in-store authorisation is its own (full) capture.
  if (story.outcome.kind === 'cancelled') {
    return { available: story.channel === 'in_store' ? unitsOf(story.amount) : 0, pending: 0 };
  }
  const captured = story.channel === 'in_store' ? story.amount : story.outcome.captured;
  const units = unitsOf(captured);
  const { refunds, chargeback } = story.outcome;
  const takenBack =
    refunds.filter((r) => !r.fails).reduce((sum, r) => sum + r.amount, 0) +
    (chargeback === null || chargeback.reversed ? 0 : chargeback.amount);
  const reversal = Number((2n * BigInt(units) * BigInt(takenBack) + BigInt(captured)) / (2n * BigInt(captured)));
  return { available: units - reversal, pending: 0 };
}

/** Whether the story can take points back and then give them back (a failed refund, a reversed chargeback). */
export function givesBack(story: Story): boolean {
  return (
    story.outcome.kind === 'captured' &&
    (story.outcome.refunds.some((r) => r.fails) || story.outcome.chargeback?.reversed === true)
  );
}

/**
 * fast-check prints `{ seed, path }` on a failure; `FC_SEED=<seed> FC_PATH=<path>` replays exactly that
 * counterexample (the seed alone reruns the whole failing sequence).
 */
export const replay: fc.Parameters<unknown> =
  process.env['FC_SEED'] === undefined
    ? {}
    : {
        seed: Number(process.env['FC_SEED']),
        ...(process.env['FC_PATH'] === undefined ? {} : { path: process.env['FC_PATH'] }),
        endOnFailure: true,
      };

export type SchedulePick = {
  readonly story: Story;
  readonly copies: readonly Copies[];
  readonly order: number[];
  readonly bursts: boolean[];
};

/** What a property test gives the runner: a new shopper per run, a delivery, and how an outcome is read. */
export interface StoryRunner<T> {
  freshShopper(): Promise<Shopper>;
  send(d: Delivery): Promise<void>;
  outcomeOf(shopper: Shopper, payment: string): Promise<T>;
}

/**
 * Sends a story once in its own order to one fresh shopper (the canonical run), then as scheduled to
 * another: shuffled, with redeliveries and new deliveries of the same events, one at a time or, when
 * `concurrent`, in the picked bursts at once. Returns both outcomes and the schedule, for comparing.
 */
export async function canonicalAndScheduled<T>(
  runner: StoryRunner<T>,
  { story, copies, order, bursts }: SchedulePick,
  concurrent: boolean,
  prefix: string,
): Promise<{ canonical: T; shuffled: T; schedule: Delivery[] }> {
  const canonicalShopper = await runner.freshShopper();
  const canonicalPayment = paymentId(`${prefix}-c`);
  for (const d of deliveries(story, canonicalPayment, canonicalShopper, [])) await runner.send(d);
  const canonical = await runner.outcomeOf(canonicalShopper, canonicalPayment);

  const shuffledShopper = await runner.freshShopper();
  const shuffledPayment = paymentId(`${prefix}-s`);
  const all = deliveries(story, shuffledPayment, shuffledShopper, copies);
  const schedule = order.map((i) => all[i] as Delivery);
  if (concurrent) {
    let burst: Delivery[] = [];
    for (const [i, d] of schedule.entries()) {
      burst.push(d);
      if (bursts[i] === true || i === schedule.length - 1) {
        await Promise.all(burst.map((b) => runner.send(b)));
        burst = [];
      }
    }
  } else {
    for (const d of schedule) await runner.send(d);
  }
  return { canonical, shuffled: await runner.outcomeOf(shuffledShopper, shuffledPayment), schedule };
}
