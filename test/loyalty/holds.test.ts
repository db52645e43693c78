/**
 * Authorisation holds (issue 21): what the ledger says happened to pending points, holds that lapse
 * after the programme's hold window (released exactly once, however many runs race), late captures,
 * partial and multiple captures. Payments are Adyen notifications (each capture its own PSP reference).
 */
import { expect } from 'chai';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { usingPostgres } from '../support/database.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { adyenPayment, aliasShopper, entriesOf, movableClock, publishRules } from './hold-support.js';
import { balance } from './support.js';

const HOUR = 3_600_000;

describe('loyalty: authorisation holds', function () {
  this.timeout(120_000);
  let svc: TestService;
  const time = movableClock();

  /** A release run with the clock moved by `offsetMs`, then back to now (webhooks carry real times). */
  const releaseAt = async (offsetMs: number) => {
    time.set(offsetMs);
    try {
      return await svc.service.loyalty.releaseDueHolds();
    } finally {
      time.set(0);
    }
  };

  let env: Awaited<ReturnType<typeof testEnv>>;

  before(async () => {
    // One environment (master key, secrets) for both instances of the two-instance test.
    env = await testEnv();
    svc = await startTestService({ env, clock: time.clock });
    await publishRules(svc, { holdWindowHours: 24 });
  });
  afterEach(async () => {
    expect((await checkLedger(svc.db.knex)).violations).to.deep.equal([]);
  });
  after(async () => svc.close());

  it('when an authorisation is captured in full, then the ledger reads hold, hold_captured, earn', async () => {
    const s = await aliasShopper(svc);
    const p = adyenPayment(s, 10_000);
    await p.send(svc, { type: 'authorised' });
    expect(await balance(svc, s.shopperRef)).to.include({ available: 0, pending: 100 });
    await p.send(svc, { type: 'captured', id: 'c1', amount: 10_000 });
    expect(await entriesOf(svc, p.psp)).to.deep.equal([
      ['hold', 100],
      ['hold_captured', -100],
      ['earn', 100],
    ]);
    expect(await balance(svc, s.shopperRef)).to.include({ available: 100, pending: 0 });
  });

  it('when an authorisation is cancelled, then its hold ends as hold_cancelled and nothing is earned', async () => {
    const s = await aliasShopper(svc);
    const p = adyenPayment(s, 4_000);
    await p.send(svc, { type: 'authorised' });
    await p.send(svc, { type: 'cancelled' });
    expect(await entriesOf(svc, p.psp)).to.deep.equal([
      ['hold', 40],
      ['hold_cancelled', -40],
    ]);
    expect(await balance(svc, s.shopperRef)).to.include({ available: 0, pending: 0 });
  });

  it('when the hold window has not passed, then a release run leaves the hold alone', async () => {
    const s = await aliasShopper(svc);
    const p = adyenPayment(s, 2_500);
    await p.send(svc, { type: 'authorised' });
    await releaseAt(23 * HOUR);
    expect(await entriesOf(svc, p.psp)).to.deep.equal([['hold', 25]]);
    expect(await balance(svc, s.shopperRef)).to.include({ pending: 25 });
  });

  it('when the window lapses without a capture, then concurrent release runs release the hold exactly once, and a late capture still earns', async () => {
    const s = await aliasShopper(svc);
    const p = adyenPayment(s, 7_000);
    await p.send(svc, { type: 'authorised' });
    time.set(25 * HOUR);
    const runs = await Promise.all([1, 2, 3].map(() => svc.service.loyalty.releaseDueHolds()));
    time.set(0);
    // Each run releases every due hold it can lock; this one's 70 points are released by exactly one.
    expect(runs.filter((r) => r.points > 0).length, JSON.stringify(runs)).to.be.at.least(1);
    expect(await entriesOf(svc, p.psp)).to.deep.equal([
      ['hold', 70],
      ['hold_expired', -70],
    ]);
    expect(await balance(svc, s.shopperRef)).to.include({ available: 0, pending: 0 });
    // Another run finds nothing left to release.
    await releaseAt(30 * HOUR);
    expect(await entriesOf(svc, p.psp)).to.have.length(2);

    await p.send(svc, { type: 'captured', id: 'late', amount: 7_000 });
    expect(await entriesOf(svc, p.psp)).to.deep.equal([
      ['hold', 70],
      ['hold_expired', -70],
      ['earn', 70],
    ]);
    expect(await balance(svc, s.shopperRef)).to.include({ available: 70, pending: 0 });
    const lot = await svc.db.knex('loyalty_lots').where({ shopper_ref: s.shopperRef }).first();
    expect(lot.hold_expired_at).to.not.equal(null);
  });

  it('when a capture takes less than was authorised, then it earns on what was captured and releases the rest; further captures add up, never beyond the authorisation', async () => {
    const s = await aliasShopper(svc);
    const p = adyenPayment(s, 10_000);
    await p.send(svc, { type: 'authorised' });
    await p.send(svc, { type: 'captured', id: 'c1', amount: 3_000 });
    expect(await entriesOf(svc, p.psp)).to.deep.equal([
      ['hold', 100],
      ['hold_captured', -30],
      ['hold_released', -70],
      ['earn', 30],
    ]);
    expect(await balance(svc, s.shopperRef)).to.include({ available: 30, pending: 0 });
    await p.send(svc, { type: 'captured', id: 'c2', amount: 5_000 });
    expect(await balance(svc, s.shopperRef)).to.include({ available: 80, pending: 0 });
    // A third capture beyond what is left of the authorisation earns only up to it.
    await p.send(svc, { type: 'captured', id: 'c3', amount: 4_000 });
    expect(await balance(svc, s.shopperRef)).to.include({ available: 100, pending: 0 });
    // Redelivered, nothing changes.
    await p.send(svc, { type: 'captured', id: 'c2', amount: 5_000 });
    expect((await entriesOf(svc, p.psp)).slice(4)).to.deep.equal([
      ['earn', 50],
      ['earn', 20],
    ]);
    // Nothing is pending: a release run has nothing to do for it.
    await releaseAt(48 * HOUR);
    expect(await entriesOf(svc, p.psp)).to.have.length(6);
  });

  it('when a programme version has no hold window, then its holds never lapse', async () => {
    await publishRules(svc, { holdWindowHours: null });
    try {
      const s = await aliasShopper(svc);
      const p = adyenPayment(s, 1_500);
      await p.send(svc, { type: 'authorised' });
      await releaseAt(24 * 365 * HOUR);
      expect(await entriesOf(svc, p.psp)).to.deep.equal([['hold', 15]]);
    } finally {
      await publishRules(svc, { holdWindowHours: 24 });
    }
  });

  describe('two service instances on one PostgreSQL', () => {
    let b: TestService;

    before(async function () {
      if (!usingPostgres) this.skip();
      b = await startTestService({
        env: { ...env, DATA_DIR: `${env['DATA_DIR'] as string}-b` },
        db: svc.db,
        clock: time.clock,
      });
    });
    after(async () => b?.close());

    it('when both instances run the release job at once over many lapsed holds, then each hold is released exactly once', async () => {
      const shoppers = await Promise.all([1, 2, 3, 4, 5, 6].map(() => aliasShopper(svc)));
      const payments = shoppers.flatMap((s) => [adyenPayment(s, 1_000), adyenPayment(s, 2_000)]);
      for (const p of payments) await p.send(svc, { type: 'authorised' });
      time.set(25 * HOUR);
      try {
        await Promise.all([
          svc.service.loyalty.releaseDueHolds(),
          b.service.loyalty.releaseDueHolds(),
          svc.service.loyalty.releaseDueHolds(),
          b.service.loyalty.releaseDueHolds(),
        ]);
      } finally {
        time.set(0);
      }
      for (const p of payments) {
        const entries = await entriesOf(svc, p.psp);
        expect(entries.map(([kind]) => kind)).to.deep.equal(['hold', 'hold_expired']);
      }
      for (const s of shoppers) expect(await balance(svc, s.shopperRef)).to.include({ pending: 0, available: 0 });
    });
  });
});
