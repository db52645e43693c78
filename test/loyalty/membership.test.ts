import { expect } from 'chai';
import { runLoyaltyCli } from '../../src/cli/loyalty.js';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { exportAllTables } from '../cards/leak.test.js';
import { signToken } from '../support/auth.js';
import { startTestService, type TestService } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { balance, newShopper, payment, redeem, type Shopper } from './support.js';

describe('loyalty: enrolment, card linking and merges, expiry, the invariant check', function () {
  this.timeout(120_000);
  let svc: TestService;
  let admin: string;
  const pans = generatePans(30, '433333');
  let next = 0;
  const shopper = (): Promise<Shopper> => newShopper(svc, pans[next++] as string);
  const own = (s: Shopper, scope = 'loyalty:read loyalty:write loyalty:redeem') =>
    signToken({ scope, shopperRef: s.shopperRef });
  const cli = async (...argv: string[]) => {
    let out = '';
    // The service's ledger: built by the same factory (createLoyaltyLedger) as the CLI's.
    const deps = { knex: svc.db.knex, ledger: svc.service.loyalty };
    const code = await runLoyaltyCli(argv, deps, { out: (t) => (out += t), err: (t) => (out += t) });
    return { code, out };
  };
  async function earned(s: Shopper, pounds: number, channel: 'online' | 'in_store' = 'in_store') {
    const p = payment(s, { amount: pounds * 100, channel });
    await p.send(svc, { type: 'authorised' });
    return p;
  }

  before(async () => {
    svc = await startTestService();
    admin = await signToken({ scope: 'loyalty:admin' });
  });
  after(async () => svc.close());

  describe('enrolment', () => {
    it('when a shopper enrols with an e-mail, then it is stored encrypted, never returned, and enrolling again keeps the first time', async () => {
      const s = await shopper();
      const email = `member.${next}@example.com`;
      const path = `/v1/shoppers/${s.shopperRef}/enrolment`;
      const first = await svc.request('POST', path, {
        token: await own(s),
        json: { email, externalMemberId: `M-${next}` },
      });
      expect(first.status, first.text).to.equal(200);
      expect(first.body).to.include({ enrolled: true, hasEmail: true, externalMemberId: `M-${next}` });
      expect(first.text).not.to.contain(email);
      const again = await svc.request('POST', path, { token: await own(s), json: {} });
      expect(again.body.enrolledAt).to.equal(first.body.enrolledAt);
      const dump = await exportAllTables(svc);
      expect(dump).not.to.contain(email);
      expect(svc.logs()).not.to.contain(email);
      const audit = await svc.db
        .knex('audit_events')
        .where({ action: 'loyalty.member.enrolled', resource: s.shopperRef });
      expect(audit).to.have.length(1);
    });

    it('when an external member id belongs to another shopper, then 409 EXTERNAL_MEMBER_ID_TAKEN', async () => {
      const [x, y] = [await shopper(), await shopper()];
      await svc.request('POST', `/v1/shoppers/${x.shopperRef}/enrolment`, {
        token: admin,
        json: { externalMemberId: 'TAKEN-1' },
      });
      const res = await svc.request('POST', `/v1/shoppers/${y.shopperRef}/enrolment`, {
        token: admin,
        json: { externalMemberId: 'TAKEN-1' },
      });
      expect(res.status).to.equal(409);
      expect(res.body.code).to.equal('EXTERNAL_MEMBER_ID_TAKEN');
    });

    it('when the e-mail is not an address, then 400 without echoing it', async () => {
      const s = await shopper();
      const res = await svc.request('POST', `/v1/shoppers/${s.shopperRef}/enrolment`, {
        token: admin,
        json: { email: 'not-an-address-4111111111111111' },
      });
      expect(res.status).to.equal(400);
      expect(res.text).not.to.contain('4111111111111111');
    });
  });

  describe('linking a card of another shopper merges the two', () => {
    it("when A links B's card, then B's cards, purchases, points and history move to A exactly once, and B's reference answers 308 to A", async () => {
      const a = await shopper();
      const b = await shopper();
      await earned(a, 30);
      const bPayment = await earned(b, 20, 'online');
      await bPayment.send(svc, { type: 'captured' });
      await earned(b, 5, 'online'); // 5 pending
      expect((await redeem(svc, b.shopperRef, 4, 'b-spend-merge')).status).to.equal(201);
      const tokenA0 = await own(a);
      // Only a member may claim another card's purchases with a shopper token.
      const notMember = await svc.request('POST', `/v1/shoppers/${a.shopperRef}/cards`, {
        token: tokenA0,
        json: { token: b.cardToken },
      });
      expect(notMember.status).to.equal(409);
      expect(notMember.body.code).to.equal('MEMBERSHIP_REQUIRED');
      await svc.request('POST', `/v1/shoppers/${a.shopperRef}/enrolment`, { token: tokenA0, json: {} });

      const tokenA = await own(a);
      const res = await svc.request('POST', `/v1/shoppers/${a.shopperRef}/cards`, {
        token: tokenA,
        json: { token: b.cardToken },
      });
      expect(res.status, res.text).to.equal(200);
      expect(res.body).to.deep.equal({
        shopperReference: a.shopperRef,
        cardToken: b.cardToken,
        alreadyLinked: false,
        mergedShopperReference: b.shopperRef,
      });
      const again = await svc.request('POST', `/v1/shoppers/${a.shopperRef}/cards`, {
        token: tokenA,
        json: { token: b.cardToken },
      });
      expect(again.body).to.include({ alreadyLinked: true });

      const merged = await balance(svc, a.shopperRef);
      expect(merged).to.include({ available: 30 + 20 - 4, pending: 5, lifetimeEarned: 50 });
      const redirected = await svc.request('GET', `/v1/shoppers/${b.shopperRef}/balance`, { token: await own(b) });
      expect(redirected.status).to.equal(308);
      expect(redirected.headers.get('location')).to.equal(`/v1/shoppers/${a.shopperRef}/balance`);
      expect(redirected.body).to.include({ code: 'SHOPPER_MERGED', survivorReference: a.shopperRef });
      // A card number pasted into the query is not repeated in the Location header.
      const pasted = await svc.request('GET', `/v1/shoppers/${b.shopperRef}/ledger?cursor=4111111111111111`, {
        token: await own(b),
      });
      expect(pasted.status).to.equal(308);
      expect(pasted.headers.get('location')).to.match(/^\/v1\/shoppers\/shp_[a-z2-7]+\/ledger\?cursor=/);
      expect(pasted.headers.get('location')).not.to.contain('4111111111111111');
      // B's own token is the same person's after the merge: it reaches the survivor.
      expect(
        (await svc.request('GET', `/v1/shoppers/${a.shopperRef}/balance`, { token: await own(b) })).status,
      ).to.equal(200);

      const purchases = await svc.request('GET', `/v1/shoppers/${a.shopperRef}/purchases`, { token: tokenA });
      expect(purchases.body.items).to.have.length(3);
      const ledger = await svc.request('GET', `/v1/shoppers/${a.shopperRef}/ledger?limit=200`, { token: tokenA });
      const kinds = ledger.body.items.map((e: { kind: string }) => e.kind);
      expect(kinds).to.include.members(['merge_in', 'merge_out', 'redemption']);
      const sum = ledger.body.items.reduce((t: number, e: { availableDelta: number }) => t + e.availableDelta, 0);
      expect(sum).to.equal(merged.available);
      expect(await svc.db.knex('cards').where({ token: b.cardToken }).first('shopper_ref')).to.deep.equal({
        shopper_ref: a.shopperRef,
      });
      expect(
        await svc.db.knex('audit_events').where({ action: 'shopper.merged', resource: a.shopperRef }),
      ).to.have.length(1);

      // A redemption retried under B's reference after the merge (following the 308) is not spent twice.
      const retried = await redeem(svc, a.shopperRef, 4, 'b-spend-merge');
      expect(retried.status).to.equal(201);
      expect(retried.headers.get('idempotent-replayed')).to.equal('true');
      expect((await balance(svc, a.shopperRef)).available).to.equal(30 + 20 - 4);
      // A refund of B's old purchase now takes the points back from the survivor.
      await bPayment.send(svc, { type: 'refunded', id: 'r-after-merge', amount: 2_000 });
      expect((await balance(svc, a.shopperRef)).available).to.equal(30 + 20 - 4 - 20);
      // And the pending purchase, captured now, becomes the survivor's.
      expect((await checkLedger(svc.db.knex)).violations).to.deep.equal([]);
    });

    it('when the card belongs to another enrolled member, then a shopper token gets 409 MERGE_REQUIRES_ADMIN and an admin may merge', async () => {
      const a = await shopper();
      const b = await shopper();
      await earned(b, 10);
      await svc.request('POST', `/v1/shoppers/${b.shopperRef}/enrolment`, { token: await own(b), json: {} });
      const path = `/v1/shoppers/${a.shopperRef}/cards`;
      const refused = await svc.request('POST', path, { token: await own(a), json: { token: b.cardToken } });
      expect(refused.status).to.equal(409);
      expect(refused.body.code).to.equal('MERGE_REQUIRES_ADMIN');
      expect(await svc.db.knex('shopper_merges').where({ merged_ref: b.shopperRef })).to.have.length(0);
      expect((await balance(svc, b.shopperRef)).available).to.equal(10);
      const merged = await svc.request('POST', path, { token: admin, json: { token: b.cardToken } });
      expect(merged.status).to.equal(200);
      expect((await balance(svc, a.shopperRef)).available).to.equal(10);
      expect((await svc.request('GET', `/v1/shoppers/${a.shopperRef}/enrolment`, { token: admin })).status).to.equal(
        405,
      );
    });

    it('when two links of the same card race, then one merge and the points counted once', async () => {
      const a = await shopper();
      const b = await shopper();
      await earned(b, 12);
      const token = await own(a);
      await svc.request('POST', `/v1/shoppers/${a.shopperRef}/enrolment`, { token, json: {} });
      const results = await Promise.all(
        Array.from({ length: 6 }, () =>
          svc.request('POST', `/v1/shoppers/${a.shopperRef}/cards`, { token, json: { token: b.cardToken } }),
        ),
      );
      expect(
        results.every((r) => r.status === 200),
        results.map((r) => r.text).join('\n'),
      ).to.equal(true);
      expect(results.filter((r) => r.body.alreadyLinked === false)).to.have.length(1);
      expect((await balance(svc, a.shopperRef)).available).to.equal(12);
      expect((await checkLedger(svc.db.knex)).violations).to.deep.equal([]);
    });

    it('when the card token is unknown, then 404', async () => {
      const a = await shopper();
      const res = await svc.request('POST', `/v1/shoppers/${a.shopperRef}/cards`, {
        token: await own(a),
        json: { token: 'tok_aaaaaaaaaaaaaaaaaaaaaaaaaa' },
      });
      expect(res.status).to.equal(404);
    });
  });

  describe('expiry and the check command', () => {
    it('when lots pass their expiry, then `loyalty expire` expires them once, whatever the number of runs', async () => {
      const s = await shopper();
      await earned(s, 40);
      await svc.db
        .knex('loyalty_lots')
        .where({ shopper_ref: s.shopperRef })
        .update({ expires_at: new Date(Date.now() - 1000) });
      const first = await cli('expire', '--json');
      expect(first.code).to.equal(0);
      expect(JSON.parse(first.out)).to.include({ lots: 1, points: 40 });
      const second = await cli('expire', '--json');
      expect(JSON.parse(second.out)).to.include({ lots: 0, points: 0 });
      expect((await balance(svc, s.shopperRef)).available).to.equal(0);
      const entries = await svc.db.knex('loyalty_entries').where({ shopper_ref: s.shopperRef, kind: 'expiry' });
      expect(entries.map((e) => e.points)).to.deep.equal([-40]);
    });

    it('when points expire within 30 days, then the balance lists them under expiringSoon', async () => {
      const s = await shopper();
      await earned(s, 7);
      const soon = new Date(Date.now() + 5 * 86_400_000);
      await svc.db.knex('loyalty_lots').where({ shopper_ref: s.shopperRef }).update({ expires_at: soon });
      expect((await balance(svc, s.shopperRef)).expiringSoon).to.deep.equal([
        { points: 7, expiresAt: soon.toISOString() },
      ]);
    });

    it('when the ledger is consistent, then `loyalty check` exits 0; when a balance is tampered with, then it exits 1 naming the shopper', async () => {
      const s = await shopper();
      await earned(s, 9);
      expect((await cli('check')).code).to.equal(0);
      await svc.db.knex('loyalty_accounts').where({ shopper_ref: s.shopperRef }).increment('available', 5);
      const broken = await cli('check');
      expect(broken.code).to.equal(1);
      expect(broken.out).to.contain(s.shopperRef);
      expect(broken.out).to.contain('account balances equal the sums of their entries');
      await svc.db.knex('loyalty_accounts').where({ shopper_ref: s.shopperRef }).decrement('available', 5);
      await svc.db.knex('loyalty_lots').where({ shopper_ref: s.shopperRef }).increment('remaining', 3);
      const lot = await cli('check', '--json');
      expect(lot.code).to.equal(1);
      expect(JSON.parse(lot.out).violations.map((v: { check: string }) => v.check)).to.include(
        'lots equal the sums of the entries that moved them, and none is over-spent',
      );
      await svc.db.knex('loyalty_lots').where({ shopper_ref: s.shopperRef }).decrement('remaining', 3);
      expect((await cli('check')).code).to.equal(0);
      expect((await cli('nonsense')).code).to.equal(2);
    });
  });
});
