/**
 * The data-key purposes and what each is: algorithm, security strength, default cryptoperiod and its
 * reason. A leaf module: config validates cryptoperiods against it, the key ring creates keys by it.
 */
export type KeyPurpose =
  'pan-encryption' | 'identifier-mac' | 'audit-signing' | 'mtls-client-ca' | 'subscription-secret';

export interface KeySpec {
  readonly algorithm: string;
  readonly strengthBits: number;
  /** Default cryptoperiod and its reason (PCI DSS 3.6.1.1, 3.7.4). */
  readonly cryptoperiodDays: number;
}

export const KEY_SPECS: Readonly<Record<KeyPurpose, KeySpec>> = {
  // AES-GCM with random 96-bit IVs must stay far below 2^32 encryptions per key (NIST SP 800-38D);
  // a year of card tokenisations is orders of magnitude below that, and a yearly rotation is routine.
  'pan-encryption': { algorithm: 'AES-256-GCM', strengthBits: 256, cryptoperiodDays: 365 },
  // HMAC keys do not wear out with use; two years bounds the exposure of a silently leaked key.
  'identifier-mac': { algorithm: 'HMAC-SHA256', strengthBits: 256, cryptoperiodDays: 730 },
  // Ed25519 (about 128-bit security strength, NIST SP 800-57): signs audit exports. A private
  // signature key is used only by the export command; NIST SP 800-57 suggests 1–3 years.
  'audit-signing': { algorithm: 'Ed25519', strengthBits: 128, cryptoperiodDays: 730 },
  // RSA-3072 (128-bit security strength) signs the mTLS client certificates of tills, checkout and
  // the platform gateway. A private signature key: NIST SP 800-57 suggests 1–3 years; two years, and
  // its certificate stays valid for the cryptoperiod plus the longest client certificate, so that a
  // certificate issued on the last day of the period never outlives its issuer.
  'mtls-client-ca': { algorithm: 'RSA-3072 (sha256WithRSAEncryption)', strengthBits: 128, cryptoperiodDays: 730 },
  // Seals outbound-event subscribers' signing secrets (src/events/subscription-secrets.ts). A key of its
  // own: what protects a CRM's webhook secret is not what protects PANs, so neither key's rotation,
  // retirement or compromise drags the other along. AES-GCM like pan-encryption, yearly for the same reason.
  'subscription-secret': { algorithm: 'AES-256-GCM', strengthBits: 256, cryptoperiodDays: 365 },
};

export const KEY_PURPOSES = Object.keys(KEY_SPECS) as KeyPurpose[];
