import { expect } from 'chai';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { startTestService, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { balance, newShopper, payment, redeem } from './support.js';

describe('loyalty: points from payment events', function () {
  this.timeout(60_000);
  let svc: TestService;
  const pans = generatePans(40, '411111');
  let next = 0;
  const shopper = () => newShopper(svc, pans[next++] as string);

  before(async () => {
    svc = await startTestService();
  });
  afterEach(async () => {
    const report = await checkLedger(svc.db.knex);
    expect(report.violations).to.deep.equal([]);
  });
  after(async () => svc.close());

  it('when an online payment is authorised, then its points are pending; when captured, available', async () => {
    const s = await shopper();
    const p = payment(s, { amount: 12_345 });
    await p.send(svc, { type: 'authorised' });
    expect(await balance(svc, s.shopperRef)).to.include({ available: 0, pending: 123 });
    await p.send(svc, { type: 'captured' });
    const after = await balance(svc, s.shopperRef);
    expect(after).to.include({ available: 123, pending: 0, lifetimeEarned: 123 });
  });

  it('when an in-store payment is authorised, then its points are available at once (auto-capture)', async () => {
    const s = await shopper();
    await payment(s, { channel: 'in_store', amount: 5_099 }).send(svc, { type: 'authorised' });
    expect(await balance(svc, s.shopperRef)).to.include({ available: 50, pending: 0 });
  });

  it('when a payment names a shopper merged meanwhile (its card not yet moved), then the points go to the survivor', async () => {
    const merged = await shopper();
    const survivor = await shopper();
    // The window a merge leaves to a delivery resolved before it: the merge row is there, the card
    // still names the merged shopper.
    await svc.db.knex('shopper_merges').insert({
      merged_ref: merged.shopperRef,
      survivor_ref: survivor.shopperRef,
      merged_by: 'test',
      merged_at: new Date(),
    });
    await payment(merged, { channel: 'in_store', amount: 4_200 }).send(svc, { type: 'authorised' });
    expect(await balance(svc, survivor.shopperRef)).to.include({ available: 42 });
    expect(await svc.db.knex('loyalty_accounts').where({ shopper_ref: merged.shopperRef })).to.have.length(0);
  });

  it('when an authorisation is cancelled, then the pending points are voided', async () => {
    const s = await shopper();
    const p = payment(s);
    await p.send(svc, { type: 'authorised' });
    await p.send(svc, { type: 'cancelled' });
    expect(await balance(svc, s.shopperRef)).to.include({ available: 0, pending: 0 });
  });

  it('when refunds arrive in parts, then each reverses its share and a full refund reverses exactly all', async () => {
    const s = await shopper();
    const p = payment(s, { amount: 10_000 });
    await p.send(svc, { type: 'authorised' });
    await p.send(svc, { type: 'captured' });
    await p.send(svc, { type: 'refunded', id: 'r1', amount: 3_333 });
    expect((await balance(svc, s.shopperRef)).available).to.equal(100 - 33);
    await p.send(svc, { type: 'refunded', id: 'r2', amount: 3_333 });
    expect((await balance(svc, s.shopperRef)).available).to.equal(100 - 67);
    await p.send(svc, { type: 'refunded', id: 'r3', amount: 3_334 });
    expect((await balance(svc, s.shopperRef)).available).to.equal(0);
  });

  it('when a refund fails, then its points come back exactly once', async () => {
    const s = await shopper();
    const p = payment(s);
    await p.send(svc, { type: 'authorised' });
    await p.send(svc, { type: 'captured' });
    await p.send(svc, { type: 'refunded', id: 'r1', amount: 5_000 });
    await p.send(svc, { type: 'refund_failed', id: 'r1', amount: 5_000 });
    await p.send(svc, { type: 'refund_failed', id: 'r1', amount: 5_000 });
    expect((await balance(svc, s.shopperRef)).available).to.equal(100);
  });

  it('when a chargeback arrives, then the rest is reversed; when it is reversed, then the points come back', async () => {
    const s = await shopper();
    const p = payment(s);
    await p.send(svc, { type: 'authorised' });
    await p.send(svc, { type: 'captured' });
    await p.send(svc, { type: 'refunded', id: 'r1', amount: 2_000 });
    await p.send(svc, { type: 'chargeback', id: 'cb1', amount: 8_000 });
    expect((await balance(svc, s.shopperRef)).available).to.equal(0);
    await p.send(svc, { type: 'chargeback_reversed', id: 'cb1', amount: 8_000 });
    expect((await balance(svc, s.shopperRef)).available).to.equal(80);
  });

  it('when refunded points were already spent, then the shortfall is written off explicitly, and a failed refund cancels the write-off first', async () => {
    const s = await shopper();
    const p = payment(s);
    await p.send(svc, { type: 'authorised' });
    await p.send(svc, { type: 'captured' });
    expect((await redeem(svc, s.shopperRef, 100, 'spend-all-1')).status).to.equal(201);
    await p.send(svc, { type: 'refunded', id: 'r1', amount: 10_000 });
    expect((await balance(svc, s.shopperRef)).available).to.equal(0);
    const { id: paymentRow } = await svc.db.knex('payments').where({ external_id: p.id }).first('id');
    const writtenOff = await svc.db.knex('loyalty_entries').where({ payment_id: paymentRow, kind: 'written_off' });
    expect(writtenOff.map((e) => e.points)).to.deep.equal([-100]);
    await p.send(svc, { type: 'refund_failed', id: 'r1', amount: 10_000 });
    expect((await balance(svc, s.shopperRef)).available).to.equal(0);
    const cancelled = await svc.db
      .knex('loyalty_entries')
      .where({ payment_id: paymentRow, kind: 'write_off_cancelled' });
    expect(cancelled.map((e) => e.points)).to.deep.equal([100]);
  });
});
