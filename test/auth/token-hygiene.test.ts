/**
 * Token hygiene (issue 16): the lifetime a token may claim, an `iat` from the future, and the subject
 * that becomes an audit actor and a rate-limit bucket. Time is frozen: every token is signed against
 * the same instant that the authenticator reads, so no case depends on when it runs.
 */
import { expect } from 'chai';
import { SignJWT, createLocalJWKSet, type JWTPayload } from 'jose';
import { createAuthenticator, type Principal } from '../../src/auth/authenticator.js';
import type { Config } from '../../src/config/config.js';
import { AppError, type ErrorCode } from '../../src/errors/app-error.js';
import { problemStatus } from '../../src/http/problem-statuses.js';
import { TEST_AUDIENCE, TEST_ISSUER, testIssuer, testJwks } from '../support/auth.js';

/** 2026-12-06T09:00:00Z, frozen. */
const NOW = 1_796_547_600;
const DAY = 86_400;
const YEAR = 365 * DAY;

function authConfig(overrides: Partial<Config['auth']> = {}): Config['auth'] {
  return {
    issuer: TEST_ISSUER,
    audience: TEST_AUDIENCE,
    keys: { source: 'static', jwks: { keys: [] } },
    algorithms: ['ES256'],
    clockToleranceSeconds: 30,
    maxTokenAgeSeconds: DAY,
    ...overrides,
  };
}

/** A token with exactly these claims (`undefined` leaves one out), signed by the test issuer. */
async function sign(claims: Readonly<Record<string, unknown>>): Promise<string> {
  const { privateKey, kid } = await testIssuer();
  const payload: Record<string, unknown> = {
    iss: TEST_ISSUER,
    aud: TEST_AUDIENCE,
    sub: 'till-1',
    iat: NOW,
    exp: NOW + 300,
  };
  for (const [name, value] of Object.entries(claims)) {
    if (value === undefined) delete payload[name];
    else payload[name] = value;
  }
  return new SignJWT(payload as JWTPayload).setProtectedHeader({ alg: 'ES256', kid, typ: 'JWT' }).sign(privateKey);
}

async function outcome(token: string, auth: Config['auth'] = authConfig()): Promise<ErrorCode | Principal> {
  const authenticator = createAuthenticator(auth, createLocalJWKSet(await testJwks()), () => NOW * 1000);
  try {
    return await authenticator.authenticate(token);
  } catch (error) {
    if (error instanceof AppError) {
      expect(problemStatus(error)).to.equal(401);
      return error.code;
    }
    throw error;
  }
}

function codeOf(result: ErrorCode | Principal): string {
  return typeof result === 'string' ? result : 'OK';
}

describe('token hygiene: lifetime, issued-at and subject', () => {
  describe('when a token claims a lifetime or an issue time, then it is judged on the frozen clock', () => {
    const cases: [string, Parameters<typeof sign>[0], Partial<Config['auth']>, string][] = [
      ['lives exactly the 24 h maximum', { iat: NOW, exp: NOW + DAY }, {}, 'OK'],
      ['lives one second longer than 24 h', { iat: NOW, exp: NOW + DAY + 1 }, {}, 'TOKEN_LIFETIME_TOO_LONG'],
      ['lives ten years', { iat: NOW, exp: NOW + 10 * YEAR }, {}, 'TOKEN_LIFETIME_TOO_LONG'],
      [
        'was issued 23 h ago and lives 24 h (old but within its lifetime)',
        { iat: NOW - 23 * 3600, exp: NOW - 23 * 3600 + DAY },
        {},
        'OK',
      ],
      [
        'lives ten years under a one-hour maximum',
        { iat: NOW, exp: NOW + 3601 },
        { maxTokenAgeSeconds: 3600 },
        'TOKEN_LIFETIME_TOO_LONG',
      ],
      [
        'lives ten years with the maximum turned off',
        { iat: NOW, exp: NOW + 10 * YEAR },
        { maxTokenAgeSeconds: undefined },
        'OK',
      ],
      ['has no iat while a maximum is set', { iat: undefined }, {}, 'TOKEN_ISSUED_AT_MISSING'],
      ['has no iat with the maximum turned off', { iat: undefined }, { maxTokenAgeSeconds: undefined }, 'OK'],
      ['has an iat that is not a number', { iat: 'yesterday' }, {}, 'TOKEN_CLAIM_INVALID'],
      ['was issued 30 s in the future (within the tolerance)', { iat: NOW + 30, exp: NOW + 330 }, {}, 'OK'],
      ['was issued 31 s in the future', { iat: NOW + 31, exp: NOW + 331 }, {}, 'TOKEN_ISSUED_IN_FUTURE'],
      [
        'was issued in ten years (and so "lives" only 5 minutes)',
        { iat: NOW + 10 * YEAR, exp: NOW + 10 * YEAR + 300 },
        {},
        'TOKEN_ISSUED_IN_FUTURE',
      ],
      [
        'was issued in the future with the maximum turned off',
        { iat: NOW + 3600, exp: NOW + 7200 },
        { maxTokenAgeSeconds: undefined },
        'TOKEN_ISSUED_IN_FUTURE',
      ],
      [
        'was issued 1 s in the future with no tolerance',
        { iat: NOW + 1 },
        { clockToleranceSeconds: 0 },
        'TOKEN_ISSUED_IN_FUTURE',
      ],
    ];
    for (const [name, claims, auth, expected] of cases) {
      it(`when it ${name}, then ${expected}`, async () => {
        expect(codeOf(await outcome(await sign(claims), authConfig(auth)))).to.equal(expected);
      });
    }
  });

  describe('when the subject holds invisible characters or names a client certificate, then it is refused', () => {
    const cases: [string, string, string][] = [
      ['the reserved prefix', 'mtls:till-1', 'TOKEN_SUBJECT_RESERVED'],
      ['the reserved prefix in capitals', 'MTLS:till-1', 'TOKEN_SUBJECT_RESERVED'],
      ['the reserved prefix in full-width letters', '\uff4d\uff54\uff4c\uff53:till-1', 'TOKEN_SUBJECT_RESERVED'],
      ['the reserved prefix with a full-width colon', 'mtls\uff1atill-1', 'TOKEN_SUBJECT_RESERVED'],
      [
        'the reserved prefix in mathematical bold letters',
        '\u{1d426}\u{1d42d}\u{1d425}\u{1d42c}:till-1',
        'TOKEN_SUBJECT_RESERVED',
      ],
      ['a leading space before the prefix', ' mtls:till-1', 'TOKEN_SUBJECT_INVALID'],
      ['a capital I for the l', 'mtIs:till-1', 'TOKEN_SUBJECT_RESERVED'],
      ['a digit one for the l', 'mt1s:till-1', 'TOKEN_SUBJECT_RESERVED'],
      ['rn for the m', 'rntls:till-1', 'TOKEN_SUBJECT_RESERVED'],
      ['a five for the s', 'MTL5:till-1', 'TOKEN_SUBJECT_RESERVED'],
      ['a ratio sign for the colon', 'mtls\u2236till-1', 'TOKEN_SUBJECT_RESERVED'],
      ['a modifier letter colon', 'mtls\ua789till-1', 'TOKEN_SUBJECT_RESERVED'],
      ['a triangular colon', 'mtls\u02d0till-1', 'TOKEN_SUBJECT_RESERVED'],
      ['a Hebrew sof pasuq', 'mtls\u05c3till-1', 'TOKEN_SUBJECT_RESERVED'],
      ['a full stop for the colon', 'mtls.till-1', 'TOKEN_SUBJECT_RESERVED'],
      ['a Braille blank in front', '\u2800mtls:till-1', 'TOKEN_SUBJECT_INVALID'],
      ['a Cyrillic te (cross-script look-alike)', 'm\u0442ls:till-1', 'TOKEN_SUBJECT_INVALID'],
      ['a letter outside ASCII', 'caf\u00e9', 'TOKEN_SUBJECT_INVALID'],
      ['a character outside the set', 'till#1', 'TOKEN_SUBJECT_INVALID'],
      ['a zero-width space inside the prefix', 'mtls\u200b:till-1', 'TOKEN_SUBJECT_INVALID'],
      ['a zero-width joiner', 'till\u200d-1', 'TOKEN_SUBJECT_INVALID'],
      ['a word joiner', 'mtls\u2060:till-1', 'TOKEN_SUBJECT_INVALID'],
      ['a byte-order mark', '\ufeffmtls:till-1', 'TOKEN_SUBJECT_INVALID'],
      ['a soft hyphen', 'mt\u00adls:till-1', 'TOKEN_SUBJECT_INVALID'],
      ['a right-to-left override', 'till-1\u202e', 'TOKEN_SUBJECT_INVALID'],
      ['a bidi isolate', '\u2067till-1\u2069', 'TOKEN_SUBJECT_INVALID'],
      ['a tag character', 'till-1\u{e0041}', 'TOKEN_SUBJECT_INVALID'],
      ['a Hangul filler (default-ignorable)', '\u3164till-1', 'TOKEN_SUBJECT_INVALID'],
      ['a variation selector', 'till\ufe0f-1', 'TOKEN_SUBJECT_INVALID'],
      ['a no-break space', 'till\u00a01', 'TOKEN_SUBJECT_INVALID'],
      ['an ideographic space', 'till\u30001', 'TOKEN_SUBJECT_INVALID'],
      ['a space', 'till 1', 'TOKEN_SUBJECT_INVALID'],
      ['a tab', 'till\t1', 'TOKEN_SUBJECT_INVALID'],
      ['a newline (log forging)', 'till-1\n{"actor":"admin"}', 'TOKEN_SUBJECT_INVALID'],
      ['a NUL', 'till-1\u0000', 'TOKEN_SUBJECT_INVALID'],
      ['a DEL', 'till-1\u007f', 'TOKEN_SUBJECT_INVALID'],
      ['a C1 control', 'till-1\u0085', 'TOKEN_SUBJECT_INVALID'],
      ['a private-use character', 'till-1\ue000', 'TOKEN_SUBJECT_INVALID'],
      ['an unassigned code point', 'till-1\u0378', 'TOKEN_SUBJECT_INVALID'],
      ['nothing', '', 'TOKEN_CLAIM_INVALID'],
      ['257 characters', 'a'.repeat(257), 'TOKEN_CLAIM_INVALID'],
    ];
    for (const [name, sub, expected] of cases) {
      it(`when it holds ${name}, then ${expected}`, async () => {
        expect(codeOf(await outcome(await sign({ sub })))).to.equal(expected);
      });
    }

    it('when the subject is not a string, then TOKEN_CLAIM_INVALID', async () => {
      expect(codeOf(await outcome(await sign({ sub: 42 as unknown as string })))).to.equal('TOKEN_CLAIM_INVALID');
    });
  });

  describe('when the subject is acceptable, then the principal carries its NFKC form', () => {
    const cases: [string, string, string][] = [
      ['plain ASCII', 'till-1', 'till-1'],
      ['full-width letters', '\uff54\uff49\uff4c\uff4c-1', 'till-1'],
      ['a ligature', '\ufb01nance-gw', 'finance-gw'],
      ['an e-mail address', 'ops@shop.example', 'ops@shop.example'],
      ['an Auth0 user', 'auth0|64f1a2b3c4d5e6f7a8b9c0d1', 'auth0|64f1a2b3c4d5e6f7a8b9c0d1'],
      ['an Auth0 social user', 'google-oauth2|104857382910394857392', 'google-oauth2|104857382910394857392'],
      ['an Auth0 client-credentials client', 'Xy7aBcD9eFgH1iJkL2mN@clients', 'Xy7aBcD9eFgH1iJkL2mN@clients'],
      ['an Okta user id', '00u1abcd2EFGH3ijk4l5', '00u1abcd2EFGH3ijk4l5'],
      ['a Keycloak / Cognito UUID', '3f2b8c1e-9a4d-4e7b-8f1a-2c3d4e5f6a7b', '3f2b8c1e-9a4d-4e7b-8f1a-2c3d4e5f6a7b'],
      [
        'an Entra ID pairwise id',
        'AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ',
        'AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ',
      ],
      ['a SPIFFE id', 'spiffe://shop.example/ns/pay/sa/gateway', 'spiffe://shop.example/ns/pay/sa/gateway'],
      ['a base64 id', 'ab+cd/ef==', 'ab+cd/ef=='],
      ['a URN with a colon after another prefix', 'urn:client:mtls:x', 'urn:client:mtls:x'],
    ];
    for (const [name, sub, expected] of cases) {
      it(`when it is ${name}, then the subject is ${JSON.stringify(expected)}`, async () => {
        const result = await outcome(await sign({ sub }));
        expect(typeof result, typeof result === 'string' ? result : '').to.equal('object');
        expect((result as Principal).subject).to.equal(expected);
      });
    }
  });
});
