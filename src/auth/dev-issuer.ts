/**
 * DEVELOPMENT ONLY. A token signer for the embedded default, so that a newcomer can call the API
 * without an identity provider. The Ed25519 key pair is generated on first use into DATA_DIR (mode
 * 0600); the service trusts its public half only when no AUTH_JWKS_URL / AUTH_PUBLIC_KEYS is set,
 * NODE_ENV is not production, and either there is no DATABASE_URL (the embedded default) or
 * ALLOW_DEVELOPMENT_DEFAULTS=true says so: whoever can read that file mints tokens of any scope, so it
 * must never be trusted by a deployment on a shared database by accident (config refuses the rest).
 */
import { randomUUID } from 'node:crypto';
import { readOrCreateSecretFile } from '../config/dev-secret-file.js';
import { SignJWT, exportJWK, generateKeyPair, importJWK, type JWK, type JSONWebKeySet } from 'jose';

interface StoredKey {
  readonly kid: string;
  readonly privateJwk: JWK;
  readonly publicJwk: JWK;
}

export interface DevIssuer {
  readonly jwks: JSONWebKeySet;
  sign(claims: DevTokenClaims): Promise<string>;
}

export interface DevTokenClaims {
  readonly issuer: string;
  readonly audience: string;
  readonly subject: string;
  readonly scopes: readonly string[];
  readonly shopperRef?: string | undefined;
  readonly ttlSeconds: number;
}

export async function loadDevIssuer(file: string): Promise<DevIssuer> {
  const stored = await loadOrCreate(file);
  const privateKey = await importJWK(stored.privateJwk, 'EdDSA');
  return {
    jwks: { keys: [{ ...stored.publicJwk, kid: stored.kid, alg: 'EdDSA', use: 'sig' }] },
    async sign(claims) {
      const jwt = new SignJWT({
        scope: claims.scopes.join(' '),
        ...(claims.shopperRef === undefined ? {} : { shopper_ref: claims.shopperRef }),
      })
        .setProtectedHeader({ alg: 'EdDSA', kid: stored.kid, typ: 'JWT' })
        .setIssuer(claims.issuer)
        .setAudience(claims.audience)
        .setSubject(claims.subject)
        .setJti(randomUUID())
        .setIssuedAt()
        .setExpirationTime(`${claims.ttlSeconds}s`);
      return jwt.sign(privateKey);
    },
  };
}

async function loadOrCreate(file: string): Promise<StoredKey> {
  const { content } = await readOrCreateSecretFile(file, async () => {
    const { privateKey, publicKey } = await generateKeyPair('EdDSA', { extractable: true });
    const stored: StoredKey = {
      kid: `dev-${randomUUID().slice(0, 8)}`,
      privateJwk: await exportJWK(privateKey),
      publicJwk: await exportJWK(publicKey),
    };
    return JSON.stringify(stored);
  });
  return JSON.parse(content) as StoredKey;
}
