/**
 * The master-key source's contract, types only: what every source implements (master-key-sources/*)
 * and what the rest of the service holds. A leaf, so that the sources and their users never import
 * master-key-source.ts, which loads the sources (it would close a cycle).
 */
export interface KeyIdRename {
  readonly from: string;
  readonly to: string;
}

/**
 * Whether the source can wrap and unwrap now. A source that is not ready does not stop the data keys
 * already unwrapped into the key ring from serving; it stops what needs the source (a key-ring reload
 * after a rotation, a rotation, a seal check) and sends /readyz to 503 with this code.
 */
export type MasterKeyReadiness =
  { ready: true } | { ready: false; code: 'VAULT_SEALED' | 'MASTER_KEY_UNAVAILABLE'; detail: string };

/** Where the KEK lives, for the key inventory (PCI DSS 3.6.1.1). Never contains key material. */
export interface MasterKeyLocation {
  /** The source kind: env, file, generated-dev, pkcs11, … */
  readonly source: string;
  /** A human description: the file, or the token and key label. */
  readonly where: string;
  readonly tokenLabel?: string;
  readonly keyLabel?: string;
  /** The conventional key check value (first 3 bytes of the KEK's encryption of a zero block), hex. */
  readonly keyCheckValue: string;
}

export interface MasterKeySource {
  /** Stable, non-secret identifier of the KEK (a fingerprint), stored beside every wrapped key. */
  readonly keyId: string;
  /** Identifiers an earlier release gave these KEKs, and their identifiers now: stored rows are renamed. */
  readonly keyIdRenames?: readonly KeyIdRename[];
  /** A human description for logs and the key inventory. Never contains key material. */
  readonly description: string;
  /** Where the KEK lives (inventory). Optional so a source may be added before it reports one. */
  readonly location?: MasterKeyLocation | undefined;
  wrap(plaintextKey: Buffer, aad: string): Promise<Buffer>;
  unwrap(wrappedKey: Buffer, aad: string): Promise<Buffer>;
  /** Synchronous, cheap: the last known state. */
  readiness(): MasterKeyReadiness;
  /** Checks the source now (a token round trip); /readyz awaits it, bounded, before {@link readiness}. */
  refreshReadiness?(): Promise<void>;
  /** Releases what the source holds open (a token session). */
  close?(): Promise<void>;
}

export interface LoadedMasterKey {
  readonly source: MasterKeySource;
  /** Set when a development key was generated on this start: the caller warns loudly. */
  readonly generatedDevKeyFile: string | undefined;
  readonly isDevelopmentKey: boolean;
}
