/**
 * Bearer JWT verification with jose.
 *
 * Security decisions:
 * - Only asymmetric algorithms are accepted (allow-list from config). With a public-key-only key set,
 *   HS256 "signed with the public key" and `alg: none` are refused before any signature work.
 * - Issuer, audience, expiry and not-before are always checked; a small clock tolerance absorbs skew.
 * - Lifetime: a token whose `exp - iat` exceeds `auth.maxTokenAgeSeconds` (JWT_MAX_TOKEN_AGE, 24 h by
 *   default) is refused (`TOKEN_LIFETIME_TOO_LONG`), so a stolen 10-year token is worth nothing here.
 *   While a maximum is set, a token without `iat` is refused (`TOKEN_ISSUED_AT_MISSING`): its
 *   lifetime cannot be known, and the issuer that leaves it out is the one to fix. Since `exp` is
 *   in the future, a bounded lifetime also bounds the age (`now - iat`).
 * - An `iat` ahead of this clock by more than the tolerance is refused (`TOKEN_ISSUED_IN_FUTURE`): it
 *   would stretch the lifetime check, and no honest issuer signs from the future.
 * - `sub` is normalised and checked (./token-subject.ts) before it becomes an audit actor or a
 *   rate-limit bucket.
 * - Keys come from a remote JWKS (cached, refetched on an unknown `kid` with a cooldown, so a flood
 *   of bad tokens cannot turn into a flood of JWKS fetches) or from static public keys.
 */
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeProtectedHeader,
  jwtVerify,
  errors as joseErrors,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import { AppError, type ErrorCode } from '../errors/app-error.js';
import type { Config } from '../config/config.js';
import { isShopperRef } from '../ids/prefixed-id.js';
import { normaliseSubject } from './token-subject.js';

export { CERTIFICATE_SUBJECT_PREFIX } from './token-subject.js';

export interface Principal {
  /** `sub` claim: the calling client or user. */
  readonly subject: string;
  readonly scopes: ReadonlySet<string>;
  /** Present on shopper tokens (the loyalty app): the only shopper this token may reach. */
  readonly shopperRef: string | undefined;
  readonly tokenId: string | undefined;
  readonly expiresAt: Date | undefined;
}

export interface Authenticator {
  authenticate(bearerToken: string): Promise<Principal>;
}

/** A compact JWS has three base64url parts; anything else, or anything huge, is refused unread. */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
const MAX_TOKEN_LENGTH = 8192;

/**
 * Verified tokens are remembered, keyed by the exact token string: the same bytes carry the same
 * signature and claims, so only time can change the verdict. A hit re-checks expiry; an entry lives
 * at most {@link VERIFIED_CACHE_TTL_MS}, so a key removed from the JWKS stops being honoured within
 * that time. Bounded: the oldest entries are dropped first. Failures are never cached.
 */
const VERIFIED_CACHE_TTL_MS = 60_000;
const VERIFIED_CACHE_MAX = 10_000;

export function createAuthenticator(
  auth: Config['auth'],
  keys: JWTVerifyGetKey,
  now: () => number = Date.now,
): Authenticator {
  const verified = new Map<string, { principal: Principal; until: number }>();
  return {
    async authenticate(token) {
      const cached = verified.get(token);
      if (cached !== undefined) {
        if (now() < cached.until) return cached.principal;
        verified.delete(token);
      }
      const principal = await verify(token);
      const expiresMs = principal.expiresAt?.getTime() ?? 0;
      if (verified.size >= VERIFIED_CACHE_MAX) verified.delete(verified.keys().next().value as string);
      verified.set(token, { principal, until: Math.min(expiresMs, now() + VERIFIED_CACHE_TTL_MS) });
      return principal;
    },
  };

  async function verify(token: string): Promise<Principal> {
    if (token.length > MAX_TOKEN_LENGTH || !COMPACT_JWS.test(token)) throw new AppError('TOKEN_MALFORMED');
    if (namesCriticalExtension(token)) {
      // RFC 7515 §4.1.11: a token whose `crit` extensions are not understood must be refused. jose
      // refuses it as "not supported", which would otherwise read as a rejected algorithm.
      throw new AppError('TOKEN_MALFORMED', {
        detail: 'The token requires a header extension this service does not implement.',
      });
    }
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys, {
        issuer: auth.issuer,
        audience: auth.audience,
        algorithms: [...auth.algorithms],
        clockTolerance: auth.clockToleranceSeconds,
        currentDate: new Date(now()),
        requiredClaims: ['sub', 'exp'],
      }));
    } catch (error) {
      throw toAuthError(error);
    }
    checkIssuedAt(payload, auth, now());
    return toPrincipal(payload);
  }
}

/** `iat` against the clock and `exp - iat` against the maximum lifetime (see the file header). */
function checkIssuedAt(payload: JWTPayload, auth: Config['auth'], nowMs: number): void {
  const { iat, exp } = payload; // both numbers when present: jose has validated their type
  if (iat === undefined) {
    if (auth.maxTokenAgeSeconds !== undefined) {
      throw new AppError('TOKEN_ISSUED_AT_MISSING', {
        detail: 'The token must carry an "iat" claim: this service limits how long a token may live.',
      });
    }
    return;
  }
  if (iat > nowMs / 1000 + auth.clockToleranceSeconds) {
    throw new AppError('TOKEN_ISSUED_IN_FUTURE', {
      detail: 'The "iat" claim is later than the current time allows.',
    });
  }
  if (auth.maxTokenAgeSeconds !== undefined && exp !== undefined && exp - iat > auth.maxTokenAgeSeconds) {
    throw new AppError('TOKEN_LIFETIME_TOO_LONG', {
      detail: `The token lives longer ("exp" - "iat") than the ${auth.maxTokenAgeSeconds} seconds this service accepts.`,
    });
  }
}

export function keyResolverFor(
  keys: Config['auth']['keys'],
  devJwks?: Parameters<typeof createLocalJWKSet>[0],
): JWTVerifyGetKey {
  switch (keys.source) {
    case 'jwks-url':
      return createRemoteJWKSet(keys.url, {
        timeoutDuration: 5_000,
        cooldownDuration: 30_000,
        cacheMaxAge: 10 * 60_000,
      });
    case 'static':
      return createLocalJWKSet(keys.jwks);
    case 'dev-issuer':
      if (devJwks === undefined) throw new Error('the development issuer key set was not loaded');
      return createLocalJWKSet(devJwks);
  }
}

/** Whether the protected header has a `crit` member; this service implements no JWS extension. */
function namesCriticalExtension(token: string): boolean {
  try {
    return decodeProtectedHeader(token).crit !== undefined;
  } catch {
    return false; // not decodable: jwtVerify refuses it with its own code
  }
}

function toPrincipal(payload: JWTPayload): Principal {
  const subject = normaliseSubject(payload.sub);
  const scopeClaim = payload['scope'];
  if (scopeClaim !== undefined && typeof scopeClaim !== 'string') {
    throw new AppError('TOKEN_CLAIM_INVALID', { detail: 'The "scope" claim must be a space-separated string.' });
  }
  const shopperRef = payload['shopper_ref'];
  if (shopperRef !== undefined && (typeof shopperRef !== 'string' || !isShopperRef(shopperRef))) {
    throw new AppError('TOKEN_CLAIM_INVALID', { detail: 'The "shopper_ref" claim is not a shopper reference.' });
  }
  return {
    subject,
    scopes: new Set((scopeClaim ?? '').split(' ').filter((s) => s.length > 0)),
    shopperRef,
    tokenId: typeof payload.jti === 'string' ? payload.jti : undefined,
    expiresAt: payload.exp === undefined ? undefined : new Date(payload.exp * 1000),
  };
}

const JOSE_CODE_MAP: Readonly<Record<string, ErrorCode>> = {
  ERR_JWT_EXPIRED: 'TOKEN_EXPIRED',
  ERR_JOSE_ALG_NOT_ALLOWED: 'TOKEN_ALGORITHM_REJECTED',
  ERR_JOSE_NOT_SUPPORTED: 'TOKEN_ALGORITHM_REJECTED',
  ERR_JWS_SIGNATURE_VERIFICATION_FAILED: 'TOKEN_SIGNATURE_INVALID',
  ERR_JWKS_NO_MATCHING_KEY: 'TOKEN_KEY_UNKNOWN',
  ERR_JWKS_MULTIPLE_MATCHING_KEYS: 'TOKEN_KEY_UNKNOWN',
  ERR_JWKS_TIMEOUT: 'AUTH_KEYS_UNAVAILABLE',
  ERR_JWKS_INVALID: 'AUTH_KEYS_UNAVAILABLE',
  // jose raises the generic code when the JWKS endpoint answers with something other than 200.
  ERR_JOSE_GENERIC: 'AUTH_KEYS_UNAVAILABLE',
  ERR_JWS_INVALID: 'TOKEN_MALFORMED',
  ERR_JWT_INVALID: 'TOKEN_MALFORMED',
};

function toAuthError(error: unknown): AppError {
  if (error instanceof AppError) return error;
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    // jose checks `iat` only for its type here (its time is judged by checkIssuedAt).
    const code: ErrorCode = error.claim === 'nbf' ? 'TOKEN_NOT_YET_VALID' : 'TOKEN_CLAIM_INVALID';
    // The claim name is ours to say; its value is the caller's and is not repeated.
    return new AppError(code, { detail: `The "${error.claim}" claim is not accepted.`, cause: error });
  }
  const joseCode = (error as { code?: unknown } | null)?.code;
  if (typeof joseCode === 'string' && joseCode in JOSE_CODE_MAP) {
    return new AppError(JOSE_CODE_MAP[joseCode] as ErrorCode, { cause: error });
  }
  // A fetch failure of the remote JWKS (network, non-200) is ours, not the caller's.
  if (error instanceof joseErrors.JOSEError) return new AppError('TOKEN_MALFORMED', { cause: error });
  return new AppError('AUTH_KEYS_UNAVAILABLE', { cause: error });
}
