import { expect } from 'chai';
import { SignJWT, exportSPKI, generateKeyPair, importJWK, type CryptoKey } from 'jose';
import type { ErrorCode } from '../../src/errors/app-error.js';
import { newId } from '../../src/ids/prefixed-id.js';
import { TEST_AUDIENCE, TEST_ISSUER, signToken, testIssuer } from '../support/auth.js';
import { startTestService, type TestResponse, type TestService } from '../support/harness.js';

const b64url = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');
const now = (): number => Math.floor(Date.now() / 1000);

function validClaims(): Record<string, unknown> {
  return { iss: TEST_ISSUER, aud: TEST_AUDIENCE, sub: 'attacker', scope: 'a:write', iat: now(), exp: now() + 300 };
}

/** A token whose header names a symmetric algorithm, keyed with bytes that are public. */
async function hmacToken(secret: string, alg: 'HS256' | 'HS512' = 'HS256'): Promise<string> {
  const { kid } = await testIssuer();
  return new SignJWT(validClaims()).setProtectedHeader({ alg, kid, typ: 'JWT' }).sign(new TextEncoder().encode(secret));
}

async function publicKeyPem(): Promise<string> {
  return exportSPKI((await importJWK((await testIssuer()).publicJwk, 'ES256')) as CryptoKey);
}

async function tokenFromOtherKey(alg: 'ES256' | 'ES384' | 'EdDSA', kid: string | undefined): Promise<string> {
  const { privateKey } = await generateKeyPair(alg);
  return new SignJWT(validClaims())
    .setProtectedHeader({ alg, typ: 'JWT', ...(kid === undefined ? {} : { kid }) })
    .sign(privateKey);
}

describe('authentication: bearer JWT on GET /v1/whoami', () => {
  let svc: TestService;

  before(async () => {
    svc = await startTestService();
  });
  after(() => svc.close());

  const whoami = (token: string | undefined, headers: Record<string, string> = {}) =>
    svc.request('GET', '/v1/whoami', { ...(token === undefined ? {} : { token }), headers });

  function expectUnauthorized(res: TestResponse, code: ErrorCode): void {
    expect(res.status, res.text).to.equal(401);
    expect(res.body.code).to.equal(code);
    expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
    expect(res.headers.get('www-authenticate')).to.equal(
      code === 'TOKEN_MISSING' ? 'Bearer' : 'Bearer error="invalid_token"',
    );
  }

  it('when the token is valid, then 200 with the subject, sorted scopes and shopper', async () => {
    const shopperRef = newId('shp');
    const res = await whoami(await signToken({ scope: 'b:write a:read', shopperRef, subject: 'loyalty-app' }));
    expect(res.status, res.text).to.equal(200);
    expect(res.body).to.include({ subject: 'loyalty-app', shopperReference: shopperRef });
    expect(res.body.scopes).to.deep.equal(['a:read', 'b:write']);
    expect(Date.parse(res.body.expiresAt as string)).to.be.greaterThan(Date.now());
  });

  it('when the token has no scope claim, then 200 with no scopes (whoami needs none)', async () => {
    const res = await whoami(await signToken());
    expect(res.status).to.equal(200);
    expect(res.body.scopes).to.deep.equal([]);
    expect(res.body).not.to.have.property('shopperReference');
  });

  it('when no Authorization header is sent, then 401 TOKEN_MISSING with a bare Bearer challenge', async () => {
    expectUnauthorized(await whoami(undefined), 'TOKEN_MISSING');
  });

  describe('when the Authorization header is not a bearer JWT, then 401 TOKEN_MALFORMED', () => {
    const cases: [string, string][] = [
      ['another scheme', 'Basic dXNlcjpwYXNzd29yZA=='],
      ['an empty bearer', 'Bearer '],
      ['two tokens', 'Bearer a.b.c d.e.f'],
      ['garbage', 'Bearer garbage'],
      ['two parts', 'Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0'],
      ['four parts', 'Bearer a.b.c.d'],
      ['characters outside base64url', 'Bearer eyJ+.eyJ/.c2ln='],
      ['parts that are not JSON', `Bearer ${Buffer.from('nope').toString('base64url')}.e30.c2ln`],
      ['an oversized token', `Bearer eyJhbGciOiJFUzI1NiJ9.${'A'.repeat(9000)}.c2ln`],
    ];
    for (const [name, header] of cases) {
      it(`when it is ${name}, then TOKEN_MALFORMED`, async () => {
        expectUnauthorized(await whoami(undefined, { authorization: header }), 'TOKEN_MALFORMED');
      });
    }
  });

  describe('when a claim is not acceptable, then 401 with the stable code', () => {
    const cases: [string, () => Promise<string>, ErrorCode][] = [
      ['the token expired beyond the clock tolerance', () => signToken({ expiresIn: -120 }), 'TOKEN_EXPIRED'],
      ['the audience is another service', () => signToken({ audience: 'another-service' }), 'TOKEN_CLAIM_INVALID'],
      ['the issuer is another one', () => signToken({ issuer: 'https://evil.example/' }), 'TOKEN_CLAIM_INVALID'],
      ['not-before is in the future', () => signToken({ notBefore: 600 }), 'TOKEN_NOT_YET_VALID'],
      ['the subject is missing', () => signToken({ subject: '' }), 'TOKEN_CLAIM_INVALID'],
      // Reserved for client certificates: the same audit actor and rate-limit bucket as till-7's certificate.
      [
        'the subject is that of a client certificate (mtls:till-7)',
        () => signToken({ subject: 'mtls:till-7' }),
        'TOKEN_SUBJECT_RESERVED',
      ],
      [
        'the subject uses the reserved prefix in capitals (MTLS:till-7)',
        () => signToken({ subject: 'MTLS:till-7' }),
        'TOKEN_SUBJECT_RESERVED',
      ],
      ['the scope is not a string', () => signToken({ extraClaims: { scope: ['a:write'] } }), 'TOKEN_CLAIM_INVALID'],
      [
        'the shopper reference is not one',
        () => signToken({ extraClaims: { shopper_ref: 'shp_4111111111111111' } }),
        'TOKEN_CLAIM_INVALID',
      ],
    ];
    for (const [name, make, code] of cases) {
      it(`when ${name}, then ${code}`, async () => {
        const res = await whoami(await make());
        expectUnauthorized(res, code);
        expect(res.text).not.to.contain('evil.example');
        expect(res.text).not.to.contain('4111111111111111');
      });
    }

    it('when the token has no exp claim, then TOKEN_CLAIM_INVALID', async () => {
      const { privateKey, kid } = await testIssuer();
      const claims = validClaims();
      delete claims['exp'];
      const token = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid }).sign(privateKey);
      expectUnauthorized(await whoami(token), 'TOKEN_CLAIM_INVALID');
    });
  });

  describe('when expiry or not-before is within the clock tolerance, then the token is accepted', () => {
    it('when it expired 10 s ago, then 200', async () => {
      expect((await whoami(await signToken({ expiresIn: -10 }))).status).to.equal(200);
    });
    it('when it becomes valid in 10 s, then 200', async () => {
      expect((await whoami(await signToken({ notBefore: 10 }))).status).to.equal(200);
    });
  });

  describe('when the signature or algorithm is an attack, then 401 before any trust is given', () => {
    it('when alg is "none" with an empty signature, then TOKEN_ALGORITHM_REJECTED', async () => {
      const token = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(validClaims())}.`;
      expectUnauthorized(await whoami(token), 'TOKEN_ALGORITHM_REJECTED');
    });

    it('when alg is "none" with the kid of a trusted key, then TOKEN_ALGORITHM_REJECTED', async () => {
      const { kid } = await testIssuer();
      const token = `${b64url({ alg: 'none', kid })}.${b64url(validClaims())}.`;
      expectUnauthorized(await whoami(token), 'TOKEN_ALGORITHM_REJECTED');
    });

    it('when HS256 is keyed with the public key PEM (RS/HS confusion), then TOKEN_ALGORITHM_REJECTED', async () => {
      expectUnauthorized(await whoami(await hmacToken(await publicKeyPem())), 'TOKEN_ALGORITHM_REJECTED');
    });

    it('when HS512 is keyed with the public JWK JSON, then TOKEN_ALGORITHM_REJECTED', async () => {
      const jwk = JSON.stringify((await testIssuer()).publicJwk);
      expectUnauthorized(await whoami(await hmacToken(jwk, 'HS512')), 'TOKEN_ALGORITHM_REJECTED');
    });

    it('when an asymmetric algorithm outside the configured list is used (ES384), then TOKEN_ALGORITHM_REJECTED', async () => {
      expectUnauthorized(await whoami(await tokenFromOtherKey('ES384', 'test-key-1')), 'TOKEN_ALGORITHM_REJECTED');
    });

    it('when the kid is unknown, then TOKEN_KEY_UNKNOWN', async () => {
      expectUnauthorized(await whoami(await signToken({ kid: 'rotated-away' })), 'TOKEN_KEY_UNKNOWN');
    });

    it('when another key signs under the trusted kid, then TOKEN_SIGNATURE_INVALID', async () => {
      expectUnauthorized(await whoami(await tokenFromOtherKey('ES256', 'test-key-1')), 'TOKEN_SIGNATURE_INVALID');
    });

    it('when the payload is altered after signing, then TOKEN_SIGNATURE_INVALID', async () => {
      const [header, , signature] = (await signToken({ scope: 'a:read' })).split('.');
      const forged = `${header}.${b64url({ ...validClaims(), scope: 'admin' })}.${signature}`;
      expectUnauthorized(await whoami(forged), 'TOKEN_SIGNATURE_INVALID');
    });

    it('when the signature is stripped from a valid token, then TOKEN_SIGNATURE_INVALID', async () => {
      const [header, payload] = (await signToken()).split('.');
      expectUnauthorized(await whoami(`${header}.${payload}.`), 'TOKEN_SIGNATURE_INVALID');
    });
  });

  it('when tokens were sent, then none of them reaches the log', async () => {
    const token = await signToken({ scope: 'a:read' });
    expect((await whoami(token)).status).to.equal(200);
    expect(svc.logs()).to.contain('"operationId":"getCurrentPrincipal"');
    expect(svc.logs()).not.to.contain(token.split('.')[2]);
    expect(svc.logs()).not.to.match(/eyJ[A-Za-z0-9_-]{10,}/);
  });
});
