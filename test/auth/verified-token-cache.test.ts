import { expect } from 'chai';
import { createLocalJWKSet, type JWTVerifyGetKey } from 'jose';
import { createAuthenticator } from '../../src/auth/authenticator.js';
import { AppError } from '../../src/errors/app-error.js';
import { TEST_AUDIENCE, TEST_ISSUER, signToken, testJwks } from '../support/auth.js';

describe('verified token cache', () => {
  let clock: number;
  let keyLookups: number;
  let authenticator: ReturnType<typeof createAuthenticator>;

  beforeEach(async () => {
    clock = Date.now();
    keyLookups = 0;
    const local = createLocalJWKSet(await testJwks());
    const counting: JWTVerifyGetKey = (header, token) => {
      keyLookups++;
      return local(header, token);
    };
    authenticator = createAuthenticator(
      {
        issuer: TEST_ISSUER,
        audience: TEST_AUDIENCE,
        keys: { source: 'static', jwks: { keys: [] } },
        algorithms: ['ES256'],
        clockToleranceSeconds: 30,
        maxTokenAgeSeconds: 86_400,
      },
      counting,
      () => clock,
    );
  });

  async function codeOf(token: string): Promise<string> {
    try {
      await authenticator.authenticate(token);
    } catch (error) {
      return (error as AppError).code;
    }
    return 'OK';
  }

  it('when the same token comes again, then it is not verified again', async () => {
    const token = await signToken({ scope: 'a b', expiresIn: 600 });
    const first = await authenticator.authenticate(token);
    const second = await authenticator.authenticate(token);
    expect(second).to.equal(first);
    expect(keyLookups).to.equal(1);
  });

  it('when a cached token expires, then it is refused with TOKEN_EXPIRED (the cache never outlives exp)', async () => {
    const token = await signToken({ expiresIn: 40 });
    expect(await codeOf(token)).to.equal('OK');
    clock += 41_000; // past exp, still within the 30 s tolerance: verified again, accepted
    expect(await codeOf(token)).to.equal('OK');
    expect(keyLookups).to.equal(2);
    clock += 60_000; // past exp + tolerance
    expect(await codeOf(token)).to.equal('TOKEN_EXPIRED');
  });

  it('when an entry is older than a minute, then the token is verified again (key removal takes effect)', async () => {
    const token = await signToken({ expiresIn: 3600 });
    await authenticator.authenticate(token);
    clock += 61_000;
    await authenticator.authenticate(token);
    expect(keyLookups).to.equal(2);
  });

  it('when a token fails, then the failure is not cached and a tampered copy never hits the cache', async () => {
    const token = await signToken({ expiresIn: 600 });
    const [h, p, s] = token.split('.');
    // Change a character in the middle: the last one carries padding bits that decoders may ignore,
    // so rewriting the tail can leave the decoded signature unchanged.
    const middle = Math.floor(s!.length / 2);
    const swapped = s![middle] === 'A' ? 'B' : 'A';
    const tampered = `${h}.${p}.${s!.slice(0, middle)}${swapped}${s!.slice(middle + 1)}`;
    expect(await codeOf(tampered)).to.equal('TOKEN_SIGNATURE_INVALID');
    expect(await codeOf(token)).to.equal('OK');
    expect(await codeOf(tampered)).to.equal('TOKEN_SIGNATURE_INVALID');
  });
});
