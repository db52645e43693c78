import { expect } from 'chai';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { usingPostgres } from '../support/database.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { newShopper, payment, redeem, type Shopper } from './support.js';

const DAY = 86_400_000;

describe('loyalty: expiry notices (points.expiring)', function () {
  this.timeout(120_000);
  let svc: TestService;
  let offset = 0;
  const clock = (): Date => new Date(Date.now() + offset);
  const pans = generatePans(10, '411114');
  let next = 0;

  /** A shopper with one in-store (auto-captured) lot of `points`; the lot's expiry date. */
  async function lotOf(points: number): Promise<{ s: Shopper; lotId: string; expiresAt: Date }> {
    const s = await newShopper(svc, pans[next++] as string);
    await payment(s, { amount: points * 100, channel: 'in_store' }).send(svc, { type: 'authorised' });
    const lot = await svc.db.knex('loyalty_lots').where({ shopper_ref: s.shopperRef }).first('id', 'expires_at');
    return { s, lotId: lot.id, expiresAt: new Date(lot.expires_at) };
  }
  const expiring = (shopperRef: string) =>
    svc.db.knex('outbound_events').where({ type: 'points.expiring', shopper_ref: shopperRef }).orderBy('seq');

  before(async () => {
    const env = await testEnv({ LOYALTY_EXPIRY_NOTICE_DAYS: '30,7', LOYALTY_EXPIRY_INTERVAL_MS: '0' });
    svc = await startTestService({ env, clock });
  });
  afterEach(async () => {
    offset = 0;
    expect((await checkLedger(svc.db.knex)).violations).to.deep.equal([]);
  });
  after(async () => svc.close());

  it('when a lot enters each notice window, then one points.expiring event per window, and runs after that send nothing', async () => {
    const { s, lotId, expiresAt } = await lotOf(40);
    const notices = svc.service.loyalty.notices;
    offset = expiresAt.getTime() - 31 * DAY - Date.now();
    expect((await notices.sendDue()).notices).to.equal(0);
    expect(await expiring(s.shopperRef)).to.have.length(0);

    offset = expiresAt.getTime() - 29 * DAY - Date.now();
    const first = await notices.sendDue();
    expect(first.notices).to.be.at.least(1);
    expect((await notices.sendDue()).notices).to.equal(0);
    let events = await expiring(s.shopperRef);
    expect(events).to.have.length(1);
    const body = JSON.parse(events[0].body);
    expect(body.type).to.equal('points.expiring');
    expect(body.data).to.deep.include({ shopperReference: s.shopperRef, lotId, points: 40, noticeDays: 30 });
    expect(body.data.expiresAt).to.equal(expiresAt.toISOString());

    offset = expiresAt.getTime() - 6 * DAY - Date.now();
    await notices.sendDue();
    await notices.sendDue();
    events = await expiring(s.shopperRef);
    expect(events.map((e) => JSON.parse(e.body).data.noticeDays)).to.deep.equal([30, 7]);
    expect(new Set(events.map((e) => e.id)).size).to.equal(2);
  });

  it('when a lot has nothing left, then it gets no notice', async () => {
    const { s, expiresAt } = await lotOf(10);
    expect((await redeem(svc, s.shopperRef, 10, 'notice-spent-1')).status).to.equal(201);
    offset = expiresAt.getTime() - 5 * DAY - Date.now();
    await svc.service.loyalty.notices.sendDue();
    expect(await expiring(s.shopperRef)).to.have.length(0);
  });

  it('when several runs race, then each lot and window is noticed exactly once', async () => {
    const lots = await Promise.all([lotOf(11), lotOf(12), lotOf(13)]);
    const latest = Math.max(...lots.map((l) => l.expiresAt.getTime()));
    offset = latest - 3 * DAY - Date.now();
    const runs = await Promise.all(Array.from({ length: 6 }, () => svc.service.loyalty.notices.sendDue(1)));
    const ours = await svc.db
      .knex('loyalty_expiry_notices')
      .whereIn(
        'lot_id',
        lots.map((l) => l.lotId),
      )
      .select('lot_id', 'notice_days');
    expect(ours).to.have.length(6);
    for (const l of lots) {
      const events = await expiring(l.s.shopperRef);
      expect(events.map((e) => JSON.parse(e.body).data.noticeDays).sort()).to.deep.equal([30, 7]);
    }
    expect(runs.reduce((sum, r) => sum + r.notices, 0)).to.be.at.least(6);
  });

  it('when a notice row is edited or deleted, then the database refuses it (append-only)', async () => {
    const { expiresAt } = await lotOf(9);
    offset = expiresAt.getTime() - 2 * DAY - Date.now();
    await svc.service.loyalty.notices.sendDue();
    const refusal = await svc.db
      .knex('loyalty_expiry_notices')
      .delete()
      .then(() => undefined)
      .catch((e: Error) => e);
    expect(String(refusal)).to.match(/append-only/);
  });

  describe('two service instances on one PostgreSQL', () => {
    let a: TestService;
    let b: TestService;
    let offsetAb = 0;
    const clockAb = (): Date => new Date(Date.now() + offsetAb);

    before(async function () {
      if (!usingPostgres) this.skip();
      const env = await testEnv({
        DB_POOL_MAX: '10',
        LOYALTY_EXPIRY_NOTICE_DAYS: '14',
        LOYALTY_EXPIRY_INTERVAL_MS: '0',
      });
      a = await startTestService({ env, clock: clockAb });
      b = await startTestService({
        env: { ...env, DATA_DIR: `${env['DATA_DIR'] as string}-b` },
        db: a.db,
        clock: clockAb,
      });
    });
    after(async () => {
      await b?.close();
      await a?.close();
    });

    it('when both instances run the notices at once, many times, then every lot gets exactly one notice', async () => {
      const refs: string[] = [];
      for (const pan of generatePans(8, '422224')) {
        const s = await newShopper(a, pan);
        await payment(s, { amount: 2_000, channel: 'in_store' }).send(a, { type: 'authorised' });
        refs.push(s.shopperRef);
      }
      const lots = await a.db.knex('loyalty_lots').whereIn('shopper_ref', refs).select('id', 'expires_at');
      offsetAb = Math.max(...lots.map((l) => new Date(l.expires_at).getTime())) - DAY - Date.now();
      const runs = await Promise.all(
        Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? a : b).service.loyalty.notices.sendDue(2)),
      );
      expect(runs.reduce((sum, r) => sum + r.notices, 0)).to.be.at.least(lots.length);
      const events = await a.db.knex('outbound_events').where({ type: 'points.expiring' }).whereIn('shopper_ref', refs);
      expect(events).to.have.length(lots.length);
      expect(new Set(events.map((e) => JSON.parse(e.body).data.lotId))).to.have.property('size', lots.length);
    });
  });
});
