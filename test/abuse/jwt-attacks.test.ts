/**
 * Attacks on who the caller is: forged and broken bearer tokens, each with its exact 401 code.
 */
import { expect } from 'chai';
import type { CryptoKey } from 'jose';
import { TEST_AUDIENCE, TEST_ISSUER, testIssuer } from '../support/auth.js';
import { startTestService, type TestService } from '../support/harness.js';

type Json = Record<string, unknown>;

const b64url = (value: string | Buffer): string => Buffer.from(value).toString('base64url');

/** A compact JWS written by hand, so that every header and claim can be anything an attacker likes. */
async function es256(header: Json, claims: Json, key: CryptoKey): Promise<string> {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  // WebCrypto's ECDSA signature is r || s, exactly the JWS ES256 encoding.
  const signature = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key, Buffer.from(input));
  return `${input}.${b64url(Buffer.from(signature))}`;
}

function claims(): Json {
  const now = Math.floor(Date.now() / 1000);
  return { iss: TEST_ISSUER, aud: TEST_AUDIENCE, sub: 'attacker', iat: now, exp: now + 300 };
}

describe('Abuse: attacks on authentication', function () {
  this.timeout(60_000);
  let svc: TestService;

  before(async () => {
    svc = await startTestService();
  });
  after(() => svc?.close());

  it('when a token names a crit header extension the service does not implement, then 401 TOKEN_MALFORMED', async () => {
    const { privateKey, kid } = await testIssuer();
    const genuine = await es256({ alg: 'ES256', kid }, claims(), privateKey);
    expect((await svc.request('GET', '/v1/whoami', { token: genuine })).status).to.equal(200);

    const header = { alg: 'ES256', kid, crit: ['urn:example:must-understand'], 'urn:example:must-understand': true };
    const res = await svc.request('GET', '/v1/whoami', { token: await es256(header, claims(), privateKey) });
    expect(res.status, res.text).to.equal(401);
    expect(res.body.code).to.equal('TOKEN_MALFORMED');
    expect(res.headers.get('www-authenticate')).to.equal('Bearer error="invalid_token"');
  });
});
