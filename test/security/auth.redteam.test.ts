/**
 * Red team, authentication and limits (issue 16), through the real HTTP API of a running service:
 * look-alike subjects that would pass for a client certificate's, tokens that live ten years or were
 * "issued" in the future, unknown-token probing of detokenisation spread over two instances, and
 * membership probing of the vault. Each attack must be refused with its stable code and leave no
 * trace where it could do harm: no look-alike actor in the audit trail, no look-alike rate-limit bucket.
 */
import { expect } from 'chai';
import { SignJWT, type JWTPayload } from 'jose';
import { createDatabase } from '../../src/db/database.js';
import { TEST_AUDIENCE, TEST_ISSUER, signToken, testIssuer } from '../support/auth.js';
import { createTestDatabase, testDbConfig, usingPostgres, type TestDatabase } from '../support/database.js';
import { startTestService, testEnv, type TestResponse, type TestService } from '../support/harness.js';
import { TEST_PANS, generatePans } from '../support/pans.js';

const YEAR = 365 * 86_400;

/** A token with exactly these claims over the defaults (`undefined` removes one). */
async function forge(claims: Readonly<Record<string, unknown>>): Promise<string> {
  const { privateKey, kid } = await testIssuer();
  const now = Math.floor(Date.now() / 1000);
  const payload: Record<string, unknown> = {
    iss: TEST_ISSUER,
    aud: TEST_AUDIENCE,
    sub: 'attacker',
    iat: now,
    exp: now + 300,
    scope: 'tokens:read tokens:write tokens:detokenise loyalty:admin',
  };
  for (const [name, value] of Object.entries(claims)) {
    if (value === undefined) delete payload[name];
    else payload[name] = value;
  }
  return new SignJWT(payload as JWTPayload).setProtectedHeader({ alg: 'ES256', kid, typ: 'JWT' }).sign(privateKey);
}

function expectRefused(res: TestResponse, code: string): void {
  expect(res.status, res.text).to.equal(401);
  expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
  expect(res.body.code).to.equal(code);
  expect(res.headers.get('www-authenticate')).to.match(/^Bearer/);
}

describe('Red team: authentication and limits', function () {
  this.timeout(120_000);
  const DETOKENISE_LIMIT = 10;
  let db: TestDatabase;
  let env: Awaited<ReturnType<typeof testEnv>>;
  let a: TestService;
  let b: TestService;
  let secondPool: ReturnType<typeof createDatabase> | undefined;

  before(async () => {
    db = await createTestDatabase();
    env = await testEnv({
      DETOKENISE_ENABLED: 'true',
      DETOKENISE_RATE_LIMIT_PER_MINUTE: String(DETOKENISE_LIMIT),
      CARD_FIRST_SIGHTINGS_PER_MINUTE: '1',
      CARD_FIRST_SIGHTINGS_BURST: '5',
    });
    // Two instances on one database: on PostgreSQL each with its own pool, on PGlite one store.
    secondPool = usingPostgres ? createDatabase(testDbConfig(db.url as string)) : undefined;
    a = await startTestService({ env, db });
    b = await startTestService({
      env: { ...env, DATA_DIR: (await testEnv())['DATA_DIR'] },
      db: secondPool === undefined ? db : { ...secondPool, url: db.url },
    });
  });
  after(async () => {
    await a.close();
    await b.close();
    await secondPool?.close();
    await db.close();
  });

  describe('look-alike subjects of a client certificate (mtls:till-1)', () => {
    const lookAlikes: [string, string, string][] = [
      ['a leading space', ' mtls:till-1', 'TOKEN_SUBJECT_INVALID'],
      ['a trailing space', 'mtls:till-1 ', 'TOKEN_SUBJECT_INVALID'],
      ['a zero-width space in the prefix', 'mtls\u200b:till-1', 'TOKEN_SUBJECT_INVALID'],
      ['a zero-width non-joiner', 'mt\u200cls:till-1', 'TOKEN_SUBJECT_INVALID'],
      ['a word joiner', 'mtls\u2060:till-1', 'TOKEN_SUBJECT_INVALID'],
      ['a byte-order mark in front', '\ufeffmtls:till-1', 'TOKEN_SUBJECT_INVALID'],
      ['a right-to-left override', '\u202emtls:till-1', 'TOKEN_SUBJECT_INVALID'],
      ['a soft hyphen', 'mtl\u00ads:till-1', 'TOKEN_SUBJECT_INVALID'],
      ['a newline', 'mtls:till-1\nadmin', 'TOKEN_SUBJECT_INVALID'],
      ['full-width letters and colon', '\uff4d\uff54\uff4c\uff53\uff1atill-1', 'TOKEN_SUBJECT_RESERVED'],
      ['capitals', 'MTLS:till-1', 'TOKEN_SUBJECT_RESERVED'],
      ['the exact prefix', 'mtls:till-1', 'TOKEN_SUBJECT_RESERVED'],
      ['circled letters', '\u24dc\u24e3\u24db\u24e2:till-1', 'TOKEN_SUBJECT_RESERVED'],
      ['a Braille blank in front', '\u2800mtls:till-1', 'TOKEN_SUBJECT_INVALID'],
      ['a capital I for the l', 'mtIs:till-1', 'TOKEN_SUBJECT_RESERVED'],
      ['rn for the m', 'rntls:till-1', 'TOKEN_SUBJECT_RESERVED'],
      ['a ratio sign for the colon', 'mtls\u2236till-1', 'TOKEN_SUBJECT_RESERVED'],
      ['a modifier letter colon', 'mtls\ua789till-1', 'TOKEN_SUBJECT_RESERVED'],
      ['a triangular colon', 'mtls\u02d0till-1', 'TOKEN_SUBJECT_RESERVED'],
      ['a Hebrew sof pasuq', 'mtls\u05c3till-1', 'TOKEN_SUBJECT_RESERVED'],
      ['a Cyrillic te', 'm\u0442ls:till-1', 'TOKEN_SUBJECT_INVALID'],
    ];

    for (const [name, sub, code] of lookAlikes) {
      it(`when a token's subject is the certificate's with ${name}, then 401 ${code} on every route`, async () => {
        const token = await forge({ sub });
        expectRefused(await a.request('GET', '/v1/whoami', { token }), code);
        expectRefused(await b.request('POST', '/v1/tokens', { token, json: { pan: TEST_PANS.visa[0] } }), code);
        expectRefused(
          await a.request('POST', `/v1/tokens/tok_${'b'.repeat(26)}/detokenise`, { token, json: { reason: 'audit' } }),
          code,
        );
      });
    }

    it('when all the look-alikes have been tried, then none reached an audit actor or a rate-limit bucket', async () => {
      const actors = (await db.knex('audit_events').distinct('actor')) as { actor: string }[];
      const buckets = (await db.knex('rate_limit_windows').distinct('bucket')) as { bucket: string }[];
      const named = (text: string): boolean => /till-1/i.test(text.normalize('NFKC'));
      expect(actors.map((r) => r.actor).filter(named)).to.deep.equal([]);
      expect(buckets.map((r) => r.bucket).filter(named)).to.deep.equal([]);
    });

    it('when a subject is written in full-width letters but names no certificate, then it is served under its NFKC form', async () => {
      const token = await forge({ sub: '\uff54\uff49\uff4c\uff4c-9' }); // "ｔｉｌｌ-9"
      const me = await a.request('GET', '/v1/whoami', { token });
      expect(me.status).to.equal(200);
      expect(me.body.subject).to.equal('till-9');
      await b.request('POST', `/v1/tokens/tok_${'c'.repeat(26)}/detokenise`, { token, json: { reason: 'audit' } });
      const actors = (await db.knex('audit_events').where({ action: 'card.detokenise' }).distinct('actor')) as {
        actor: string;
      }[];
      expect(actors.map((r) => r.actor)).to.include('till-9');
      expect(actors.map((r) => r.actor)).not.to.include('\uff54\uff49\uff4c\uff4c-9');
    });
  });

  describe('token lifetime and issue time', () => {
    const now = (): number => Math.floor(Date.now() / 1000);
    const cases: [string, () => Promise<string>, string][] = [
      ['lives ten years', () => signToken({ scope: 'loyalty:admin', expiresIn: 10 * YEAR }), 'TOKEN_LIFETIME_TOO_LONG'],
      [
        'lives 24 h and one minute',
        () => signToken({ scope: 'loyalty:admin', expiresIn: 86_460 }),
        'TOKEN_LIFETIME_TOO_LONG',
      ],
      [
        'was issued ten years ago and expires in ten years',
        () => forge({ iat: now() - 10 * YEAR, exp: now() + 10 * YEAR }),
        'TOKEN_LIFETIME_TOO_LONG',
      ],
      [
        'was issued a year from now',
        () => forge({ iat: now() + YEAR, exp: now() + YEAR + 300 }),
        'TOKEN_ISSUED_IN_FUTURE',
      ],
      ['was issued an hour from now', () => forge({ iat: now() + 3600, exp: now() + 3900 }), 'TOKEN_ISSUED_IN_FUTURE'],
      [
        'has no iat (lifetime unknowable)',
        () => forge({ iat: undefined, exp: now() + 10 * YEAR }),
        'TOKEN_ISSUED_AT_MISSING',
      ],
    ];
    for (const [name, make, code] of cases) {
      it(`when a validly signed token ${name}, then 401 ${code}`, async () => {
        const token = await make();
        expectRefused(await a.request('GET', '/v1/whoami', { token }), code);
        expectRefused(await b.request('GET', `/v1/tokens/tok_${'d'.repeat(26)}`, { token }), code);
      });
    }

    it('when a token lives the full 24 hours, then it is accepted (the limit is not off by one)', async () => {
      expect((await a.request('GET', '/v1/whoami', { token: await signToken({ expiresIn: 86_400 }) })).status).to.equal(
        200,
      );
    });
  });

  describe('detokenisation probing across two instances', () => {
    it('when a client probes eleven unknown tokens alternating between instances, then the eleventh is 429, and so is a real card after it', async () => {
      const writer = await signToken({ scope: 'tokens:write', subject: 'seeder' });
      const card = await a.request('POST', '/v1/tokens', { token: writer, json: { pan: TEST_PANS.mastercard[0] } });
      const prober = await signToken({ scope: 'tokens:detokenise', subject: 'red-team-prober' });
      const statuses: number[] = [];
      for (let i = 0; i <= DETOKENISE_LIMIT; i++) {
        const unknown = `tok_${'e'.repeat(24)}${'abcdefghijklmnopqrstuvwxyz'[i]}${'abcdefghijklmnopqrstuvwxyz'[i]}`;
        const res = await (i % 2 === 0 ? a : b).request('POST', `/v1/tokens/${unknown}/detokenise`, {
          token: prober,
          json: { reason: 'looking around' },
        });
        statuses.push(res.status);
      }
      expect(statuses).to.deep.equal([...Array<number>(DETOKENISE_LIMIT).fill(404), 429]);
      const real = await b.request('POST', `/v1/tokens/${card.body.token as string}/detokenise`, {
        token: prober,
        json: { reason: 'now the real one' },
      });
      expect(real.status).to.equal(429);
      expect(real.text).not.to.contain(TEST_PANS.mastercard[0]);
    });
  });

  describe('membership probing of the vault', () => {
    it('when a client probes cards past its first-sighting budget, then known and unknown cards get the same 429', async () => {
      const writer = await signToken({ scope: 'tokens:write', subject: 'member-seeder' });
      const known = TEST_PANS.amex[0];
      await a.request('POST', '/v1/tokens', { token: writer, json: { pan: known } });
      const prober = await signToken({ scope: 'tokens:write', subject: 'red-team-membership' });
      const guesses = generatePans(8, '476173');
      const cardCount = async (): Promise<number> =>
        Number(((await db.knex('cards').count({ n: '*' })) as { n: unknown }[])[0]?.n);
      const answers: number[] = [];
      let before = 0;
      for (const [i, pan] of guesses.entries()) {
        if (i === 5) before = await cardCount();
        answers.push((await a.request('POST', '/v1/tokens', { token: prober, json: { pan } })).status);
      }
      expect(answers).to.deep.equal([201, 201, 201, 201, 201, 429, 429, 429]);
      // The refused guesses created nothing.
      expect(await cardCount()).to.equal(before);
      const knownAnswer = await a.request('POST', '/v1/tokens', { token: prober, json: { pan: known } });
      const unknownAnswer = await a.request('POST', '/v1/tokens', {
        token: prober,
        json: { pan: generatePans(1, '476174')[0] },
      });
      expect([knownAnswer.status, knownAnswer.body.code]).to.deep.equal([
        unknownAnswer.status,
        unknownAnswer.body.code,
      ]);
      expect(knownAnswer.body.code).to.equal('FIRST_SIGHTING_RATE_LIMITED');
    });

    it('when a client probes card numbers by attaching them to a card, then known and unknown get one answer, and each attach spends the budget', async () => {
      const writer = await signToken({ scope: 'tokens:write', subject: 'member-seeder' });
      const [own, known] = generatePans(2, '476175');
      await a.request('POST', '/v1/tokens', { token: writer, json: { pan: known } });
      const card = await a.request('POST', '/v1/tokens', { token: writer, json: { pan: own } });
      const path = `/v1/tokens/${card.body.token as string}/identifiers`;
      const prober = await signToken({ scope: 'tokens:write', subject: 'red-team-attach' });
      const identifiers = async (): Promise<number> =>
        Number(((await db.knex('card_identifiers').count({ n: '*' })) as { n: unknown }[])[0]?.n);

      const knownAnswer = await a.request('POST', path, { token: prober, json: { pan: known } });
      const unknownAnswer = await b.request('POST', path, {
        token: prober,
        json: { pan: generatePans(1, '476176')[0] },
      });
      expect([knownAnswer.status, knownAnswer.body.code]).to.deep.equal([409, 'CARD_HAS_DIFFERENT_PAN']);
      expect([unknownAnswer.status, unknownAnswer.body.code]).to.deep.equal([409, 'CARD_HAS_DIFFERENT_PAN']);
      expect(knownAnswer.text).not.to.contain(known);

      // Unknown PARs are attached (as tokenising them would create a card), each spending the budget (5).
      const par = (i: number): string => 'V004' + 'D'.repeat(13) + String(Date.now() + i).slice(-12);
      const attached: number[] = [];
      for (let i = 0; i < 3; i++) {
        attached.push(
          (await (i % 2 === 0 ? b : a).request('POST', path, { token: prober, json: { par: par(i) } })).status,
        );
      }
      expect(attached).to.deep.equal([201, 201, 201]);

      // Spent: every attach and every tokenisation is refused alike, on both instances, and nothing is attached.
      const before = await identifiers();
      const answers = [
        await a.request('POST', path, { token: prober, json: { pan: known } }),
        await b.request('POST', path, { token: prober, json: { pan: generatePans(1, '476177')[0] } }),
        await a.request('POST', path, { token: prober, json: { par: par(9) } }),
        await b.request('POST', '/v1/tokens', { token: prober, json: { pan: known } }),
      ];
      expect(answers.map((r) => [r.status, r.body.code])).to.deep.equal(
        Array(4).fill([429, 'FIRST_SIGHTING_RATE_LIMITED']),
      );
      expect(await identifiers()).to.equal(before);
    });
  });
});
