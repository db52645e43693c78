/**
 * The tier rules as pure functions (src/loyalty/tiers.ts): periods, windows, upgrades, refund drops,
 * reviews under both downgrade policies, the tier at an authorisation, policy problems.
 */
import { expect } from 'chai';
import {
  currentWindow,
  initialState,
  onQualifyingChange,
  periodEndOf,
  periodStartOf,
  review,
  reviewWindows,
  tierAt,
  tierPolicyProblems,
  type TierPolicy,
  type TierState,
} from '../../src/loyalty/tiers.js';

const DAY = 86_400_000;
const LEVELS = [
  { name: 'member', threshold: 0, multiplier: 1 },
  { name: 'silver', threshold: 100, multiplier: 1.25 },
  { name: 'gold', threshold: 200, multiplier: 1.5 },
  { name: 'platinum', threshold: 400, multiplier: 2 },
];
const rolling: TierPolicy = {
  measure: 'points',
  window: { kind: 'rolling', days: 365 },
  levels: LEVELS,
  downgrade: 'one_level',
  graceDays: 10,
};
const quarterly: TierPolicy = { ...rolling, window: { kind: 'calendar', months: 3 }, graceDays: 0 };
const at = (iso: string): Date => new Date(iso);

describe('loyalty: tier rules (pure)', () => {
  it('when periods are calendar quarters, then a level reached in May counts in April–June and is reviewed on 1 July', () => {
    expect(periodStartOf(quarterly.window, at('2027-05-20T10:00:00Z')).toISOString()).to.equal('2027-04-01T00:00:00.000Z');
    expect(periodEndOf(quarterly.window, at('2027-10-01T00:00:00Z')).toISOString()).to.equal('2028-01-01T00:00:00.000Z');
    const up = onQualifyingChange(quarterly, initialState(quarterly, at('2027-05-20T10:00:00Z')), { sinceGrant: 0, current: 250 }, at('2027-05-20T10:00:00Z'));
    expect(up?.state).to.deep.include({ tier: 'gold', floorTier: 'member', seq: 1 });
    expect(up?.state.reviewAt?.toISOString()).to.equal('2027-07-01T00:00:00.000Z');
  }); // prettier-ignore

  it('when the window is rolling, then the level is held `days` plus grace from when it was reached, and its review counts those days and the grace window', () => {
    const now = at('2027-05-20T10:00:00Z');
    const up = onQualifyingChange(rolling, initialState(rolling, now), { sinceGrant: 0, current: 120 }, now);
    expect(up?.state.reviewAt?.getTime()).to.equal(now.getTime() + 375 * DAY);
    const w = reviewWindows(rolling, up?.state as TierState);
    expect(w.ended).to.deep.equal({ from: now, to: new Date(now.getTime() + 365 * DAY) });
    expect(w.grace).to.deep.equal({ from: new Date(now.getTime() + 10 * DAY), to: new Date(now.getTime() + 375 * DAY) });
    expect(currentWindow(rolling.window, now).from.getTime()).to.equal(now.getTime() - 365 * DAY);
  }); // prettier-ignore

  const platinum: TierState = {
    seq: 4,
    tier: 'platinum',
    floorTier: 'platinum',
    periodStart: at('2027-01-01T00:00:00Z'),
    reviewAt: at('2027-04-01T00:00:00Z'),
    changedAt: at('2027-01-05T00:00:00Z'),
  };

  it('when a review finds a figure for silver, then one_level steps down to gold and to_qualifying to silver; nothing goes below what the figure supports', () => {
    const t = at('2027-04-01T00:00:00Z');
    expect(review(quarterly, platinum, { ended: 150, grace: 0 }, t).state).to.deep.include({ tier: 'gold', floorTier: 'gold', seq: 5 });
    expect(review({ ...quarterly, downgrade: 'to_qualifying' }, platinum, { ended: 150, grace: 0 }, t).state.tier).to.equal('silver');
    expect(review(quarterly, { ...platinum, tier: 'silver', floorTier: 'silver' }, { ended: 150, grace: 0 }, t).reason).to.equal('renewed');
    expect(review(quarterly, platinum, { ended: 0, grace: 450 }, t)).to.deep.include({ reason: 'renewed', figure: 450 });
    const last = review(quarterly, { ...platinum, tier: 'silver' }, { ended: 0, grace: 0 }, t);
    expect(last.state).to.deep.include({ tier: 'member', reviewAt: null });
    expect(last.state.periodStart.toISOString()).to.equal('2027-04-01T00:00:00.000Z');
  }); // prettier-ignore

  it('when a refund takes back the figure of a provisional level, then it drops to what the rest supports, never below the floor; a confirmed level stays', () => {
    const provisional: TierState = { ...platinum, floorTier: 'silver' };
    const t = at('2027-02-01T00:00:00Z');
    expect(onQualifyingChange(quarterly, provisional, { sinceGrant: 410, current: 410 }, t)).to.equal(undefined);
    expect(onQualifyingChange(quarterly, provisional, { sinceGrant: 250, current: 250 }, t)).to.deep.include({ reason: 'refund', previousTier: 'platinum' });
    expect(onQualifyingChange(quarterly, provisional, { sinceGrant: 250, current: 250 }, t)?.state.tier).to.equal('gold');
    expect(onQualifyingChange(quarterly, provisional, { sinceGrant: 10, current: 10 }, t)?.state.tier).to.equal('silver');
    expect(onQualifyingChange(quarterly, platinum, { sinceGrant: 10, current: 10 }, t)).to.equal(undefined);
  }); // prettier-ignore

  it('when a payment is authorised, then it earns with the newest change at or before its authorisation (the first level before any), under that version’s multipliers', () => {
    const history = [
      { tier: 'gold', changedAt: at('2027-02-01T00:00:00Z'), seq: 1 },
      { tier: 'silver', changedAt: at('2027-06-01T00:00:00Z'), seq: 2 },
    ];
    expect(tierAt(rolling, history, at('2027-01-31T00:00:00Z'))).to.deep.equal({ name: 'member', multiplier: 1 });
    expect(tierAt(rolling, history, at('2027-02-01T00:00:00Z'))).to.deep.equal({ name: 'gold', multiplier: 1.5 });
    expect(tierAt(rolling, history, at('2027-07-01T00:00:00Z'))).to.deep.equal({ name: 'silver', multiplier: 1.25 });
    expect(tierAt(undefined, history, at('2027-07-01T00:00:00Z'))).to.equal(null);
  });

  it('when a policy contradicts itself, then each problem is named', () => {
    expect(tierPolicyProblems(rolling)).to.deep.equal([]);
    expect(
      tierPolicyProblems({
        ...rolling,
        measure: 'spend',
        window: { kind: 'calendar', months: 5 },
        levels: [
          { name: 'a', threshold: 1, multiplier: 1 },
          { name: 'a', threshold: 1, multiplier: 1 },
        ],
      }),
    ).to.deep.equal([
      'first_threshold_not_zero',
      'thresholds_not_ascending',
      'names_not_unique',
      'spend_needs_currency',
      'months_not_dividing_year',
    ]);
  });
});
