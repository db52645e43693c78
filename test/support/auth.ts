/**
 * A test identity provider: an ES256 key pair made once per run, its public JWKS handed to the
 * service as AUTH_PUBLIC_KEYS, and a signer with overridable claims and headers for attack cases.
 */
import { SignJWT, exportJWK, generateKeyPair, type JWK, type CryptoKey, type JWTPayload } from 'jose';

export const TEST_ISSUER = 'https://idp.test.example/';
export const TEST_AUDIENCE = 'loyalty-vault-test';

interface Issuer {
  readonly privateKey: CryptoKey;
  readonly publicJwk: JWK;
  readonly kid: string;
}

let issuer: Promise<Issuer> | undefined;

export function testIssuer(): Promise<Issuer> {
  issuer ??= (async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    return {
      privateKey,
      publicJwk: { ...(await exportJWK(publicKey)), kid: 'test-key-1', alg: 'ES256', use: 'sig' },
      kid: 'test-key-1',
    };
  })();
  return issuer;
}

export async function testJwks(): Promise<{ keys: JWK[] }> {
  return { keys: [(await testIssuer()).publicJwk] };
}

export interface TokenOptions {
  readonly scope?: string;
  readonly shopperRef?: string;
  readonly subject?: string;
  readonly issuer?: string;
  readonly audience?: string;
  /** Seconds from now; negative for an expired token. */
  readonly expiresIn?: number;
  readonly notBefore?: number;
  readonly extraClaims?: JWTPayload;
  readonly kid?: string;
}

export async function signToken(options: TokenOptions = {}): Promise<string> {
  const { privateKey, kid } = await testIssuer();
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT({
    ...(options.scope === undefined ? {} : { scope: options.scope }),
    ...(options.shopperRef === undefined ? {} : { shopper_ref: options.shopperRef }),
    ...options.extraClaims,
  })
    .setProtectedHeader({ alg: 'ES256', kid: options.kid ?? kid, typ: 'JWT' })
    .setIssuer(options.issuer ?? TEST_ISSUER)
    .setAudience(options.audience ?? TEST_AUDIENCE)
    .setSubject(options.subject ?? 'test-client')
    .setIssuedAt(now)
    .setExpirationTime(now + (options.expiresIn ?? 300));
  if (options.notBefore !== undefined) jwt.setNotBefore(now + options.notBefore);
  return jwt.sign(privateKey);
}
