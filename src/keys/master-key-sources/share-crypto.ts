/**
 * The cryptography of master-key shares, all from node:crypto except the Shamir split itself.
 *
 * - **Split**: Shamir M-of-N over GF(256) by `shamir-secret-sharing` (Privy's, independently audited
 *   by Cure53 and Zellic, no dependencies). A share is 33 bytes: 32 bytes of y values and the x
 *   coordinate. Fewer than M shares say nothing about the key (information-theoretic), and Shamir has
 *   no integrity of its own: a wrong share rebuilds a wrong key silently. So every share has a
 *   {@link shareDigest} in the split record, and the rebuilt key must have the pinned key id.
 * - **Encryption to a custodian**: ECDH X25519 with an ephemeral key, HKDF-SHA256, AES-256-GCM (the
 *   shape of HPKE base mode / age's X25519 recipient). The custodian's X25519 key is the birational
 *   image of the Ed25519 key they registered for dual control (RFC 7748 §4.1; libsodium's
 *   `crypto_sign_ed25519_pk_to_curve25519`, age's `ssh-ed25519` recipients). Why converted rather than a
 *   second key registered alongside: the Ed25519 key is the one whose registration is already sealed
 *   and dual-controlled (custodian-registration.ts); a second key would need a second ceremony and a
 *   second seal, and an unsealed "encryption key" column would be exactly what an insider with write
 *   access swaps to have a share encrypted to themselves. Using one key pair for Ed25519 signatures
 *   and X25519 key agreement is proven safe (Thormarker, "On using the same key pair for Ed25519 and
 *   an X25519 based KEM", 2021), and the HKDF info binds every derived key to its purpose.
 * - **Transport to an instance**: the same envelope, to the instance's ephemeral X25519 key, which
 *   lives only while that instance is sealed (shares.ts): a captured request body, a TLS-terminating
 *   proxy or a request log never holds a share, and a body replayed after a seal or restart decrypts
 *   under no key the instance still has.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  randomBytes,
  type KeyObject,
} from 'node:crypto';

export const SHARE_BYTES = 33;

/** The X25519 public key (raw, 32 bytes) of an Ed25519 public key given as its raw 32 bytes. */
export function x25519PublicFromEd25519(edPublic: Buffer): Buffer {
  if (edPublic.length !== 32) throw new Error('an Ed25519 public key is 32 bytes');
  const p = 2n ** 255n - 19n;
  const bytes = Buffer.from(edPublic);
  bytes[31]! &= 0x7f; // the sign of x: not needed for Montgomery u
  const y = BigInt('0x' + Buffer.from(bytes).reverse().toString('hex'));
  if (y >= p) throw new Error('not a canonical Ed25519 public key');
  // u = (1 + y) / (1 - y) mod p (RFC 7748 §4.1, the birational map from edwards25519)
  const u = ((1n + y) * modPow((1n - y + p) % p, p - 2n, p)) % p;
  return Buffer.from(u.toString(16).padStart(64, '0'), 'hex').reverse();
}

function modPow(base: bigint, exponent: bigint, modulus: bigint): bigint {
  let result = 1n;
  let b = base % modulus;
  let e = exponent;
  while (e > 0n) {
    if (e & 1n) result = (result * b) % modulus;
    b = (b * b) % modulus;
    e >>= 1n;
  }
  return result;
}

const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

export function x25519PublicKey(raw: Buffer): KeyObject {
  return createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

/**
 * The X25519 private key of an Ed25519 private key: the first half of SHA-512(seed), which is the
 * Ed25519 secret scalar before clamping (X25519 clamps it itself). Runs only in the custodian's CLI.
 */
export function x25519PrivateFromEd25519(edPrivate: KeyObject): KeyObject {
  if (edPrivate.asymmetricKeyType !== 'ed25519') throw new Error('a custodian key is Ed25519');
  const jwk = edPrivate.export({ format: 'jwk' }) as { d?: string };
  const seed = Buffer.from(jwk.d ?? '', 'base64url');
  const h = createHash('sha512').update(seed).digest();
  seed.fill(0);
  const der = Buffer.concat([X25519_PKCS8_PREFIX, h.subarray(0, 32)]);
  h.fill(0);
  const key = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  der.fill(0);
  return key;
}

export function rawX25519Public(key: KeyObject): Buffer {
  return Buffer.from(String((key.export({ format: 'jwk' }) as { x?: string }).x ?? ''), 'base64url');
}

/** An envelope: what only the holder of the recipient's X25519 private key opens. All base64url. */
export interface Envelope {
  readonly epk: string;
  readonly iv: string;
  readonly ct: string;
  readonly tag: string;
}

function envelopeKey(shared: Buffer, epk: Buffer, recipient: Buffer, info: string): Buffer {
  return Buffer.from(hkdfSync('sha256', shared, Buffer.concat([epk, recipient]), `loyalty-vault/${info}`, 32));
}

/**
 * Encrypts `plaintext` to `recipient` (raw X25519 public key). `context` names what this is and for
 * whom (split id, custodian, instance nonce): it is both the HKDF info and the GCM AAD, so an envelope
 * moved to another context fails to open.
 */
export function sealTo(recipient: Buffer, plaintext: Buffer, context: string): Envelope {
  const ephemeral = generateKeyPairSync('x25519');
  const epk = rawX25519Public(ephemeral.publicKey);
  const shared = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: x25519PublicKey(recipient) });
  const key = envelopeKey(shared, epk, recipient, context);
  shared.fill(0);
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(context, 'utf8'));
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  key.fill(0);
  return {
    epk: epk.toString('base64url'),
    iv: iv.toString('base64url'),
    ct: ct.toString('base64url'),
    tag: cipher.getAuthTag().toString('base64url'),
  };
}

/** Opens an envelope; throws when it was not made for this key and context, or was altered. */
export function openEnvelope(privateKey: KeyObject, envelope: Envelope, context: string): Buffer {
  const epk = Buffer.from(envelope.epk, 'base64url');
  const recipient = rawX25519Public(createPublicKey(privateKey));
  const shared = diffieHellman({ privateKey, publicKey: x25519PublicKey(epk) });
  const key = envelopeKey(shared, epk, recipient, context);
  shared.fill(0);
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(envelope.iv, 'base64url'));
    decipher.setAAD(Buffer.from(context, 'utf8'));
    decipher.setAuthTag(Buffer.from(envelope.tag, 'base64url'));
    return Buffer.concat([decipher.update(Buffer.from(envelope.ct, 'base64url')), decipher.final()]);
  } finally {
    key.fill(0);
  }
}

/**
 * The commitment to one share kept in the split record: domain-separated SHA-256 bound to the split
 * and the custodian, base64url (never hex: hex digests can read as card numbers). A share's y bytes
 * are uniformly random, so the digest reveals nothing a brute force could use (2^256 candidates).
 */
export function shareDigest(splitId: string, thumbprint: string, share: Uint8Array): string {
  return createHash('sha256')
    .update(`loyalty-vault/master-key-share/v1\0${splitId}\0${thumbprint}\0`)
    .update(share)
    .digest('base64url');
}

export function isEnvelope(value: unknown): value is Envelope {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return ['epk', 'iv', 'ct', 'tag'].every(
    (k) => typeof v[k] === 'string' && /^[A-Za-z0-9_-]{1,200}$/.test(String(v[k])),
  );
}
