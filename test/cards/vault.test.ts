import { expect } from 'chai';
import { createDatabase } from '../../src/db/database.js';
import { verifyAuditChain } from '../../src/audit/audit-log.js';
import { signToken } from '../support/auth.js';
import { createTestDatabase, testDbConfig, usingPostgres, type TestDatabase } from '../support/database.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { TEST_PANS, generatePans, spaced } from '../support/pans.js';

const VISA = TEST_PANS.visa[0];
const MASTERCARD = TEST_PANS.mastercard[0];
const PAR = 'V0010013816180398947592732139';
const WRITE = 'tokens:write tokens:read';

describe('card vault', function () {
  let svc: TestService;
  let token: string;

  before(async () => {
    svc = await startTestService();
    token = await signToken({ scope: WRITE });
  });
  after(async () => svc.close());

  const tokenise = (body: unknown, bearer = token) => svc.request('POST', '/v1/tokens', { token: bearer, json: body });

  describe('tokenising a PAN', () => {
    it('when a PAN is seen for the first time, then 201 with a new token and shopper, and only display data', async () => {
      const res = await tokenise({ pan: VISA, expiryMonth: 12, expiryYear: 2030 });
      expect(res.status).to.equal(201);
      expect(res.body.token).to.match(/^tok_[a-z2-7]{26}$/);
      expect(res.body.shopperReference).to.match(/^shp_[a-z2-7]{26}$/);
      expect(res.body).to.include({ brand: 'visa', last4: '1111', expiryMonth: 12, expiryYear: 2030 });
      expect(res.text).not.to.contain(VISA);
    });

    it('when the same PAN comes again, written differently, then 200 with the same token and shopper', async () => {
      const first = await tokenise({ pan: MASTERCARD });
      const again = await tokenise({ pan: spaced(MASTERCARD) });
      const dashed = await tokenise({ pan: MASTERCARD.replace(/(\d{4})(?=\d)/g, '$1-') });
      expect(first.status).to.equal(201);
      expect(again.status).to.equal(200);
      expect(dashed.status).to.equal(200);
      expect(again.body.token).to.equal(first.body.token);
      expect(dashed.body.shopperReference).to.equal(first.body.shopperReference);
    });

    it('when different PANs are tokenised, then they get different tokens and shoppers', async () => {
      const pans = generatePans(5);
      const results = await Promise.all(pans.map((pan) => tokenise({ pan })));
      expect(new Set(results.map((r) => r.body.token)).size).to.equal(5);
      expect(new Set(results.map((r) => r.body.shopperReference)).size).to.equal(5);
    });

    it('when many new cards arrive at once, each twice, then each gets one card and nothing is orphaned', async () => {
      const pans = generatePans(40, '555555');
      const counts = async () => {
        const count = async (table: string, where: Record<string, string> = {}) =>
          Number(((await svc.db.knex(table).where(where).count({ n: '*' })) as { n: unknown }[])[0]?.n);
        return {
          shoppers: await count('shoppers'),
          cards: await count('cards'),
          identifiers: await count('card_identifiers'),
          created: await count('outbound_events', { type: 'shopper.created' }),
        };
      };
      const before = await counts();
      const results = await Promise.all([...pans, ...pans].map((pan) => tokenise({ pan })));
      expect(results.map((r) => r.status).sort()).to.deep.equal([...pans.map(() => 200), ...pans.map(() => 201)]);
      for (const pan of pans) {
        const mine = results.filter((_, i) => i % pans.length === pans.indexOf(pan));
        expect(new Set(mine.map((r) => r.body.token)).size).to.equal(1);
      }
      expect(new Set(results.map((r) => r.body.shopperReference)).size).to.equal(40);
      // Nothing orphaned by the races: one shopper, card, identifier and shopper.created event per PAN.
      const after = await counts();
      expect({
        shoppers: after.shoppers - before.shoppers,
        cards: after.cards - before.cards,
        identifiers: after.identifiers - before.identifiers,
        created: after.created - before.created,
      }).to.deep.equal({ shoppers: 40, cards: 40, identifiers: 40, created: 40 });
    });

    it('when first sightings queue behind those in flight, then they share one statement (group commit)', async () => {
      // In process, so that all 40 are waiting at once (over HTTP, arrival order is up to the
      // scheduler): their lookups share statements and miss together, then four first sightings run
      // (CARD_CREATE_CONCURRENCY) while the other 36 queue for the next statement.
      const pans = generatePans(40, '601100');
      const statements: string[] = [];
      const listen = (q: { sql: string }) => statements.push(q.sql);
      svc.db.knex.on('query', listen);
      let cards: { card: { token: string }; created: boolean }[];
      try {
        cards = await Promise.all(pans.map((pan) => svc.service.vault.tokenise({ kind: 'pan', pan })));
      } finally {
        svc.db.knex.off('query', listen);
      }
      expect(cards.every((c) => c.created)).to.equal(true);
      expect(new Set(cards.map((c) => c.card.token)).size).to.equal(40);
      const firstSightings = statements.filter((q) => q.includes('insert into "shoppers"'));
      // At most four alone per wave of arrivals (two waves: the first lookups, then the rest), the
      // others together; 40 would mean no sharing at all.
      expect(firstSightings.length).to.be.within(2, 12);
    });

    it('when a later expiry arrives for a known card (reissue), then the card keeps its token and shows the later expiry', async () => {
      const [pan] = generatePans(1);
      const first = await tokenise({ pan, expiryMonth: 1, expiryYear: 2027 });
      const reissued = await tokenise({ pan, expiryMonth: 1, expiryYear: 2031 });
      const older = await tokenise({ pan, expiryMonth: 6, expiryYear: 2026 });
      expect(reissued.body.token).to.equal(first.body.token);
      expect(reissued.body.expiryYear).to.equal(2031);
      const read = await svc.request('GET', `/v1/tokens/${first.body.token as string}`, { token });
      expect(read.body).to.include({ expiryMonth: 1, expiryYear: 2031 });
      expect(older.body.expiryYear).to.equal(2031);
    });

    describe('when the input is not acceptable, then a stable code and no echo of the number', () => {
      const cases: [string, unknown, number, string][] = [
        ['Luhn failure', { pan: '4111111111111112' }, 422, 'PAN_INVALID'],
        ['letters', { pan: '4111 1111 1111 111x' }, 422, 'PAN_INVALID'],
        ['too short for the contract', { pan: '41111111' }, 400, 'VALIDATION_FAILED'],
        ['a CVV beside the PAN', { pan: VISA, cvv: '123' }, 422, 'SENSITIVE_AUTHENTICATION_DATA'],
        ['track data', { pan: VISA, track2: `;${VISA}=2512101?` }, 422, 'SENSITIVE_AUTHENTICATION_DATA'],
        ['expiry month without year', { pan: VISA, expiryMonth: 5 }, 422, 'EXPIRY_INVALID'],
        ['month 13', { pan: VISA, expiryMonth: 13, expiryYear: 2030 }, 400, 'VALIDATION_FAILED'],
        ['both PAN and PAR', { pan: VISA, par: PAR }, 400, 'VALIDATION_FAILED'],
        ['nothing', {}, 400, 'VALIDATION_FAILED'],
        ['a PAR in lower case', { par: PAR.toLowerCase() }, 400, 'VALIDATION_FAILED'],
        ['a PAN as a number', { pan: 4111111111111111 }, 400, 'VALIDATION_FAILED'],
      ];
      for (const [name, body, status, code] of cases) {
        it(name, async () => {
          const res = await tokenise(body);
          expect(res.status).to.equal(status);
          expect(res.body.code).to.equal(code);
          expect(res.headers.get('content-type')).to.contain('application/problem+json');
          expect(res.text).not.to.contain(VISA);
          expect(res.text).not.to.contain('4111111111111112');
        });
      }
    });

    it('when the caller lacks tokens:write, then 403 INSUFFICIENT_SCOPE', async () => {
      const res = await tokenise({ pan: VISA }, await signToken({ scope: 'tokens:read' }));
      expect(res.status).to.equal(403);
      expect(res.body.code).to.equal('INSUFFICIENT_SCOPE');
    });

    it('when a shopper-bound token tries to tokenise, then 403 and nothing is created', async () => {
      const [pan] = generatePans(1);
      const shopperToken = await signToken({ scope: WRITE, shopperRef: 'shp_aaaaaaaaaaaaaaaaaaaaaaaaaa' });
      const res = await tokenise({ pan }, shopperToken);
      expect(res.status).to.equal(403);
      expect((await tokenise({ pan })).status).to.equal(201);
    });
  });

  describe('PAR and gateway aliases', () => {
    it('when a PAR is seen first, then a card without display data is created, and the same PAR returns it', async () => {
      const first = await tokenise({ par: PAR });
      expect(first.status).to.equal(201);
      expect(first.body).not.to.have.property('last4');
      const again = await tokenise({ par: PAR });
      expect(again.status).to.equal(200);
      expect(again.body.token).to.equal(first.body.token);
    });

    it('when an alias has the same digits as a PAN, then it is a different identifier (domain separation)', async () => {
      const [pan] = generatePans(1);
      const byPan = await tokenise({ pan });
      const byAlias = await tokenise({ alias: { namespace: 'adyen.alias', value: pan } });
      const otherNamespace = await tokenise({ alias: { namespace: 'stripe.fingerprint', value: pan } });
      expect(byAlias.status).to.equal(201);
      expect(otherNamespace.status).to.equal(201);
      expect(new Set([byPan.body.token, byAlias.body.token, otherNamespace.body.token]).size).to.equal(3);
    });

    it('when a PAR and an alias are attached to a PAN card, then each resolves to that card and shopper', async () => {
      const [pan] = generatePans(1);
      const card = await tokenise({ pan });
      const path = `/v1/tokens/${card.body.token as string}/identifiers`;
      const par = 'V001' + 'A'.repeat(13) + String(Date.now()).slice(-12);
      const attachPar = await svc.request('POST', path, { token, json: { par } });
      const attachAlias = await svc.request('POST', path, {
        token,
        json: { alias: { namespace: 'adyen.alias', value: 'H167852639363479' } },
      });
      const again = await svc.request('POST', path, { token, json: { par } });
      expect(attachPar.status).to.equal(201);
      expect(attachAlias.status).to.equal(201);
      expect(again.status).to.equal(200);
      const viaPar = await tokenise({ par });
      const viaAlias = await tokenise({ alias: { namespace: 'adyen.alias', value: 'H167852639363479' } });
      expect(viaPar.body.token).to.equal(card.body.token);
      expect(viaAlias.body.shopperReference).to.equal(card.body.shopperReference);
    });

    it("when an identifier already belongs to another shopper's card, then 409 and no merge (a PAN for a card with one: CARD_HAS_DIFFERENT_PAN)", async () => {
      const [panA, panB] = generatePans(2);
      const a = await tokenise({ pan: panA });
      const b = await tokenise({ pan: panB });
      const alias = { namespace: 'stripe.fingerprint', value: `fp_${Date.now()}` };
      await svc.request('POST', `/v1/tokens/${a.body.token as string}/identifiers`, { token, json: { alias } });
      const conflict = await svc.request('POST', `/v1/tokens/${b.body.token as string}/identifiers`, {
        token,
        json: { alias },
      });
      expect(conflict.status).to.equal(409);
      expect(conflict.body.code).to.equal('IDENTIFIER_ALREADY_LINKED');
      expect((await tokenise({ alias })).body.token).to.equal(a.body.token);
      const panOfA = await svc.request('POST', `/v1/tokens/${b.body.token as string}/identifiers`, {
        token,
        json: { pan: panA },
      });
      // Known elsewhere or unknown, a PAN for a card that has another is one refusal: no membership answer.
      expect([panOfA.status, panOfA.body.code]).to.deep.equal([409, 'CARD_HAS_DIFFERENT_PAN']);
      const [unknownPan] = generatePans(1);
      const unknown = await svc.request('POST', `/v1/tokens/${b.body.token as string}/identifiers`, {
        token,
        json: { pan: unknownPan },
      });
      expect([unknown.status, unknown.body.code]).to.deep.equal([409, 'CARD_HAS_DIFFERENT_PAN']);
      const ownPan = await svc.request('POST', `/v1/tokens/${b.body.token as string}/identifiers`, {
        token,
        json: { pan: panB },
      });
      expect(ownPan.status).to.equal(200);
    });

    it('when a PAN is attached to a PAR-only card, then the card gains display data; a second, different PAN is refused', async () => {
      const [pan, other] = generatePans(2);
      const par = 'V002' + 'B'.repeat(13) + String(Date.now()).slice(-12);
      const card = await tokenise({ par });
      const path = `/v1/tokens/${card.body.token as string}/identifiers`;
      const attached = await svc.request('POST', path, { token, json: { pan, expiryMonth: 3, expiryYear: 2030 } });
      expect(attached.status).to.equal(201);
      expect(attached.body).to.include({ brand: 'visa', last4: pan!.slice(-4), expiryMonth: 3 });
      expect((await tokenise({ pan })).body.token).to.equal(card.body.token);
      const second = await svc.request('POST', path, { token, json: { pan: other } });
      expect(second.status).to.equal(409);
      expect(second.body.code).to.equal('CARD_HAS_DIFFERENT_PAN');
    });

    it('when attaching to an unknown token, then 404 NOT_FOUND', async () => {
      const res = await svc.request('POST', '/v1/tokens/tok_aaaaaaaaaaaaaaaaaaaaaaaaaa/identifiers', {
        token,
        json: { par: PAR },
      });
      expect(res.status).to.equal(404);
      expect(res.body.code).to.equal('NOT_FOUND');
    });
  });

  describe('reading a token', () => {
    it("when a shopper token reads its own card, then 200; another shopper's card, then 404", async () => {
      const [mine, theirs] = generatePans(2);
      const a = await tokenise({ pan: mine });
      const b = await tokenise({ pan: theirs });
      const shopper = await signToken({ scope: 'tokens:read', shopperRef: a.body.shopperReference as string });
      expect((await svc.request('GET', `/v1/tokens/${a.body.token as string}`, { token: shopper })).status).to.equal(
        200,
      );
      const other = await svc.request('GET', `/v1/tokens/${b.body.token as string}`, { token: shopper });
      expect(other.status).to.equal(404);
      expect(other.body.code).to.equal('NOT_FOUND');
    });

    it('when the token is malformed, then 400 VALIDATION_FAILED', async () => {
      const res = await svc.request('GET', `/v1/tokens/${VISA}`, { token });
      expect(res.status).to.equal(400);
      expect(res.text).not.to.contain(VISA);
    });
  });

  describe('detokenisation', () => {
    it('when disabled by configuration (the default), then 403 DETOKENISATION_DISABLED and the attempt is audited', async () => {
      const card = await tokenise({ pan: VISA });
      const caller = await signToken({ scope: 'tokens:detokenise', subject: 'support-tool' });
      const res = await svc.request('POST', `/v1/tokens/${card.body.token as string}/detokenise`, {
        token: caller,
        json: { reason: 'chargeback investigation 42' },
      });
      expect(res.status).to.equal(403);
      expect(res.body.code).to.equal('DETOKENISATION_DISABLED');
      const entry = await svc.db
        .knex('audit_events')
        .where({ action: 'card.detokenise', actor: 'support-tool' })
        .first();
      expect(entry).to.include({ outcome: 'denied', resource: card.body.token });
    });
  });
});

describe('card vault with detokenisation enabled', () => {
  let svc: TestService;
  before(async () => {
    svc = await startTestService({
      env: await testEnv({ DETOKENISE_ENABLED: 'true', DETOKENISE_RATE_LIMIT_PER_MINUTE: '3' }),
    });
  });
  after(async () => svc.close());

  it('when a client with the scope gives a reason, then it gets the PAN, and the audit trail records who and why (no PAN)', async () => {
    const writer = await signToken({ scope: WRITE });
    const card = await svc.request('POST', '/v1/tokens', { token: writer, json: { pan: MASTERCARD } });
    const caller = await signToken({ scope: 'tokens:detokenise', subject: 'refund-service' });
    const res = await svc.request('POST', `/v1/tokens/${card.body.token as string}/detokenise`, {
      token: caller,
      json: { reason: 'refund to original card' },
    });
    expect(res.status).to.equal(200);
    expect(res.body).to.deep.equal({ token: card.body.token, pan: MASTERCARD });
    const entry = await svc.db.knex('audit_events').where({ action: 'card.detokenise', outcome: 'success' }).first();
    expect(entry.actor).to.equal('refund-service');
    expect(entry.details.reason).to.equal('refund to original card');
    expect(JSON.stringify(entry)).not.to.contain(MASTERCARD);
    expect((await verifyAuditChain(svc.db.knex)).ok).to.equal(true);
  });

  it('when the scope is missing, when the reason is missing or holds a card number, then refused with a code', async () => {
    const writer = await signToken({ scope: WRITE + ' tokens:detokenise' });
    const card = await svc.request('POST', '/v1/tokens', { token: writer, json: { pan: VISA } });
    const path = `/v1/tokens/${card.body.token as string}/detokenise`;
    const noScope = await svc.request('POST', path, {
      token: await signToken({ scope: WRITE }),
      json: { reason: 'why not' },
    });
    expect(noScope.body.code).to.equal('INSUFFICIENT_SCOPE');
    const noReason = await svc.request('POST', path, { token: writer, json: {} });
    expect(noReason.body.code).to.equal('VALIDATION_FAILED');
    const panReason = await svc.request('POST', path, { token: writer, json: { reason: `customer said ${VISA}` } });
    expect(panReason.status).to.equal(422);
    expect(panReason.body.code).to.equal('REASON_INVALID');
    expect(panReason.text).not.to.contain(VISA);
    const shopper = await signToken({ scope: 'tokens:detokenise', shopperRef: card.body.shopperReference as string });
    expect((await svc.request('POST', path, { token: shopper, json: { reason: 'mine' } })).status).to.equal(403);
  });

  it('when a client exceeds its per-minute limit, then 429 TOO_MANY_REQUESTS with Retry-After, audited as denied', async () => {
    const writer = await signToken({ scope: WRITE });
    const card = await svc.request('POST', '/v1/tokens', { token: writer, json: { pan: TEST_PANS.amex[0] } });
    const caller = await signToken({ scope: 'tokens:detokenise', subject: 'greedy-client' });
    const statuses: number[] = [];
    let last;
    for (let i = 0; i < 5; i++) {
      last = await svc.request('POST', `/v1/tokens/${card.body.token as string}/detokenise`, {
        token: caller,
        json: { reason: 'bulk export' },
      });
      statuses.push(last.status);
    }
    expect(statuses).to.deep.equal([200, 200, 200, 429, 429]);
    expect(last!.body.code).to.equal('TOO_MANY_REQUESTS');
    // A sliding minute: attempts of this window still weigh in the next one, so up to two minutes.
    expect(Number(last!.headers.get('retry-after'))).to.be.within(1, 120);
    const denied = await svc.db
      .knex('audit_events')
      .where({ actor: 'greedy-client', outcome: 'denied' })
      .count<{ count: string }[]>('* as count');
    // One denied entry per client and minute past the limit, however many attempts (the rest are counted).
    expect(Number(denied[0]!.count)).to.be.within(1, 2);
  });
});

describe('card vault across restarts and instances', () => {
  let db: TestDatabase;
  let env: Awaited<ReturnType<typeof testEnv>>;
  before(async () => {
    db = await createTestDatabase();
    env = await testEnv();
  });
  after(async () => db.close());

  it('when the service restarts with the same master key, then the same PAN gives the same token and shopper', async () => {
    const bearer = await signToken({ scope: WRITE });
    const first = await startTestService({ env, db });
    const before = await first.request('POST', '/v1/tokens', { token: bearer, json: { pan: TEST_PANS.discover[0] } });
    await first.close();
    const second = await startTestService({ env: { ...env, DATA_DIR: (await testEnv())['DATA_DIR'] }, db });
    const after = await second.request('POST', '/v1/tokens', { token: bearer, json: { pan: TEST_PANS.discover[0] } });
    await second.close();
    expect(before.status).to.equal(201);
    expect(after.status).to.equal(200);
    expect(after.body.token).to.equal(before.body.token);
    expect(after.body.shopperReference).to.equal(before.body.shopperReference);
    const keys = await db.knex('data_keys').select('purpose', 'version');
    // One version 1 per purpose (pan-encryption, identifier-mac, audit-signing, subscription-secret),
    // none added on restart.
    expect(keys).to.have.length(4);
  });

  it('when started with a different master key, then start-up fails closed, naming the key that cannot be unwrapped', async () => {
    let failure: unknown;
    try {
      const wrong = await startTestService({ env: await testEnv(), db });
      await wrong.close();
    } catch (error) {
      failure = error;
    }
    expect(String(failure)).to.match(/cannot unwrap data key (pan-encryption|identifier-mac|audit-signing) v1/);
  });

  it('when two instances tokenise the same new PANs concurrently, then each PAN ends with exactly one card', async function () {
    if (!usingPostgres) this.skip(); // real concurrency needs separate connections: PostgreSQL only
    const second = createDatabase(testDbConfig(db.url as string));
    const a = await startTestService({ env, db });
    const b = await startTestService({
      env: { ...env, DATA_DIR: (await testEnv())['DATA_DIR'] },
      db: { ...second, url: db.url },
    });
    try {
      const bearer = await signToken({ scope: WRITE });
      const pans = generatePans(10, '510510');
      const requests = pans.flatMap((pan) =>
        Array.from({ length: 8 }, (_, i) =>
          (i % 2 === 0 ? a : b).request('POST', '/v1/tokens', { token: bearer, json: { pan } }),
        ),
      );
      const results = await Promise.all(requests);
      for (let p = 0; p < pans.length; p++) {
        const mine = results.slice(p * 8, p * 8 + 8);
        expect(mine.map((r) => r.status).filter((s) => s === 201)).to.have.length(1);
        expect(mine.every((r) => r.status === 200 || r.status === 201)).to.equal(true);
        expect(new Set(mine.map((r) => r.body.token)).size).to.equal(1);
      }
      const tokens = [...new Set(results.map((r) => r.body.token as string))];
      const cards = await db.knex('cards').whereIn('token', tokens).count<{ count: string }[]>('* as count');
      expect(Number(cards[0]!.count)).to.equal(10);
    } finally {
      await a.close();
      await b.close();
      await second.close();
    }
  });
});
