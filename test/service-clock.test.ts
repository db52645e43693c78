/**
 * One clock, made in the core (src/core.ts) and injected by every feature factory: moving the
 * service's clock moves what payments, the loyalty ledger and the key cryptoperiods decide, with no
 * row rewritten to fake the passing of time.
 */
import { expect } from 'chai';
import { startTestService, type TestService } from './support/harness.js';
import { generatePans } from './support/pans.js';
import { newShopper, payment } from './loyalty/support.js';

const MINUTE = 60_000;
const DAY = 86_400_000;

describe('the injected clock', function () {
  this.timeout(120_000);
  let svc: TestService;
  let offsetMs = 0;
  const pans = generatePans(2, '455555');

  before(async () => {
    svc = await startTestService({ clock: () => new Date(Date.now() + offsetMs) });
  });
  after(async () => svc.close());
  afterEach(() => {
    offsetMs = 0;
  });

  it("when the clock runs two minutes ahead, then a payment is stamped with the clock's time, not the machine's", async () => {
    const s = await newShopper(svc, pans[0] as string);
    offsetMs = 2 * MINUTE; // within the webhook signature's tolerance
    const p = payment(s, { amount: 1_000, channel: 'in_store' });
    const sent = Date.now();
    await p.send(svc, { type: 'authorised' });
    const row = (await svc.db.knex('payments').where({ external_id: p.id }).first('created_at')) as {
      created_at: Date;
    };
    expect(row.created_at.getTime()).to.be.at.least(sent + 2 * MINUTE - 1_000);
  });

  it('when the clock passes the points lifetime, then the expiry run expires the lots, and not before', async () => {
    const s = await newShopper(svc, pans[1] as string);
    await payment(s, { amount: 4_000, channel: 'in_store' }).send(svc, { type: 'authorised' });
    const mine = async () =>
      (await svc.db.knex('loyalty_entries').where({ shopper_ref: s.shopperRef, kind: 'expiry' })).length;
    await svc.service.loyalty.expireDue();
    expect(await mine()).to.equal(0);
    offsetMs = 400 * DAY; // past the default 12 months
    await svc.service.loyalty.expireDue();
    expect(await mine()).to.equal(1);
    expect((await svc.service.loyalty.balance(s.shopperRef)).available).to.equal(0);
  });

  it("when the clock passes a key's cryptoperiod, then the overdue gauge says so", async () => {
    const overdue = async (): Promise<string[]> =>
      (await svc.service.metrics.render())
        .split('\n')
        .filter((line) => line.startsWith('key_cryptoperiod_overdue{') && line.endsWith(' 1'));
    expect(await overdue()).to.deep.equal([]);
    offsetMs = 10 * 365 * DAY;
    expect(await overdue()).to.include('key_cryptoperiod_overdue{purpose="pan-encryption",version="1"} 1');
  });
});
