/**
 * Where the master key (KEK) comes from. Behind an interface so a KMS can replace the local key: the
 * rest of the service only ever asks the source to wrap or unwrap data keys, never for the KEK.
 *
 * The local source holds the 256-bit KEK in process memory and wraps with AES-256-GCM, binding each
 * wrapped key to its identity through the additional authenticated data, so a wrapped key copied onto
 * another key's row fails to unwrap instead of silently serving the wrong purpose or version.
 */
import fs from 'node:fs';
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import type { MasterKeyConfig } from '../config/config.js';
import { split as shamirSplit } from 'shamir-secret-sharing';
import { readOrCreateSecretFile } from '../config/dev-secret-file.js';
import { SharesMasterKey } from './master-key-sources/shares.js';

export interface KeyIdRename {
  readonly from: string;
  readonly to: string;
}

/**
 * Whether the source can wrap and unwrap now. `VAULT_SEALED`: the key is in custodians' shares and
 * not rebuilt yet (master-key-sources/shares.ts); `MASTER_KEY_UNAVAILABLE`: the device holding it
 * does not answer (PKCS#11). Never contains key material.
 */
export type MasterKeyReadiness =
  { ready: true } | { ready: false; code: 'VAULT_SEALED' | 'MASTER_KEY_UNAVAILABLE'; detail: string };

export interface MasterKeySource {
  /** Stable, non-secret identifier of the KEK (a fingerprint), stored beside every wrapped key. */
  readonly keyId: string;
  /** Identifiers an earlier release gave these KEKs, and their identifiers now: stored rows are renamed. */
  readonly keyIdRenames?: readonly KeyIdRename[];
  /** A human description for logs and the key inventory. Never contains key material. */
  readonly description: string;
  wrap(plaintextKey: Buffer, aad: string): Promise<Buffer>;
  unwrap(wrappedKey: Buffer, aad: string): Promise<Buffer>;
  /** /readyz's `masterKey` check; card routes answer the code while not ready. */
  readiness(): MasterKeyReadiness;
}

const IV_BYTES = 12;
const TAG_BYTES = 16;
const FORMAT_V1 = 1;

export class LocalMasterKey implements MasterKeySource {
  readonly keyId: string;
  readonly keyIdRenames: readonly KeyIdRename[];

  private readonly key: Buffer;

  constructor(
    key: Buffer,
    readonly description: string,
  ) {
    if (key.length !== 32) throw new Error('the master key must be 32 bytes');
    // A copy this object owns, so that wipe() clears the only copy it is responsible for.
    this.key = Buffer.from(key);
    // A one-way fingerprint identifies the KEK without revealing it (domain-separated SHA-256), in
    // base64url: the hex form used before held a Luhn-valid run of 13+ digits for about one master
    // key in two thousand, and the audit trail refuses PAN-like values, so every key operation
    // under such a master key failed. Rows that still name a KEK by its hex id are renamed at start
    // (KeyRing.ensureInitialKeys).
    const digest = createHash('sha256').update('loyalty-vault/kek-id/v1\0').update(key).digest();
    this.keyId = `local:${digest.toString('base64url').slice(0, 16)}`;
    this.keyIdRenames = [{ from: `local:${digest.toString('hex').slice(0, 16)}`, to: this.keyId }];
  }

  readiness(): MasterKeyReadiness {
    return { ready: true };
  }

  /**
   * Shamir M-of-N shares of this key (src/keys/key-shares.ts): the only way its bytes leave this
   * object. The caller wipes the shares once they are encrypted to their holders.
   */
  async shamirSplit(total: number, threshold: number): Promise<Uint8Array[]> {
    const secret = Uint8Array.from(this.key);
    try {
      return await shamirSplit(secret, total, threshold);
    } finally {
      secret.fill(0);
    }
  }

  /** Overwrites the key bytes (a sealed vault, master-key-sources/shares.ts). Unusable afterwards. */
  wipe(): void {
    this.key.fill(0);
  }

  wrap(plaintextKey: Buffer, aad: string): Promise<Buffer> {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(Buffer.from(aad, 'utf8'));
    const body = Buffer.concat([cipher.update(plaintextKey), cipher.final()]);
    return Promise.resolve(Buffer.concat([Buffer.of(FORMAT_V1), iv, cipher.getAuthTag(), body]));
  }

  unwrap(wrapped: Buffer, aad: string): Promise<Buffer> {
    if (wrapped.length < 1 + IV_BYTES + TAG_BYTES || wrapped[0] !== FORMAT_V1) {
      return Promise.reject(new Error('wrapped key has an unknown format'));
    }
    const iv = wrapped.subarray(1, 1 + IV_BYTES);
    const tag = wrapped.subarray(1 + IV_BYTES, 1 + IV_BYTES + TAG_BYTES);
    const decipher = createDecipheriv('aes-256-gcm', this.key, iv);
    decipher.setAAD(Buffer.from(aad, 'utf8'));
    decipher.setAuthTag(tag);
    return Promise.resolve(
      Buffer.concat([decipher.update(wrapped.subarray(1 + IV_BYTES + TAG_BYTES)), decipher.final()]),
    );
  }
}

/**
 * The current master key plus previous ones during a master-key rotation: wraps with the current
 * key only, unwraps with whichever key wrapped the data key (AES-GCM authentication tells them
 * apart). Configured with MASTER_KEY_PREVIOUS while `keys rotate --purpose master` rewraps every
 * data key; removed once `keys status` shows no key wrapped by a previous master key.
 */
export class MasterKeySet implements MasterKeySource {
  readonly keyId: string;
  readonly description: string;

  constructor(
    private readonly current: MasterKeySource,
    readonly previous: readonly MasterKeySource[],
  ) {
    this.keyId = current.keyId;
    this.description = `${current.description} (+${previous.length} previous master key(s) for unwrapping only)`;
    this.keyIdRenames = [current, ...previous].flatMap((source) => source.keyIdRenames ?? []);
  }

  readonly keyIdRenames: readonly KeyIdRename[];

  wrap(plaintextKey: Buffer, aad: string): Promise<Buffer> {
    return this.current.wrap(plaintextKey, aad);
  }

  readiness(): MasterKeyReadiness {
    return this.current.readiness();
  }

  async unwrap(wrapped: Buffer, aad: string): Promise<Buffer> {
    let failure: unknown;
    for (const source of [this.current, ...this.previous]) {
      try {
        return await source.unwrap(wrapped, aad);
      } catch (error) {
        failure = error;
      }
    }
    throw failure instanceof Error ? failure : new Error('no configured master key unwraps this key');
  }
}

export interface LoadedMasterKey {
  readonly source: MasterKeySource;
  /** Set when a development key was generated on this start: the caller warns loudly. */
  readonly generatedDevKeyFile: string | undefined;
  readonly isDevelopmentKey: boolean;
}

export async function loadMasterKey(
  config: MasterKeyConfig,
  previousBase64: readonly string[] = [],
): Promise<LoadedMasterKey> {
  const loaded = await loadCurrentMasterKey(config);
  if (previousBase64.length === 0) return loaded;
  const previous = previousBase64.map(
    (b64, i) => new LocalMasterKey(decodeKey(b64, 'MASTER_KEY_PREVIOUS'), `MASTER_KEY_PREVIOUS #${i + 1}`),
  );
  return { ...loaded, source: new MasterKeySet(loaded.source, previous) };
}

async function loadCurrentMasterKey(config: MasterKeyConfig): Promise<LoadedMasterKey> {
  switch (config.source) {
    case 'shares':
      // Sealed: the service rebuilds the key from custodians' submissions (keys unseal); the key
      // CLI from the share files it is given (MASTER_KEY_SHARE_FILES), when it is given any.
      return {
        source: await SharesMasterKey.load(config, (key, description) => new LocalMasterKey(key, description)),
        generatedDevKeyFile: undefined,
        isDevelopmentKey: false,
      };
    case 'env':
      return {
        source: new LocalMasterKey(decodeKey(config.keyBase64, 'MASTER_KEY'), 'MASTER_KEY environment variable'),
        generatedDevKeyFile: undefined,
        isDevelopmentKey: false,
      };
    case 'file': {
      let text: string;
      try {
        text = fs.readFileSync(config.file, 'utf8');
      } catch (error) {
        throw new Error(`MASTER_KEY_FILE cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`, {
          cause: error,
        });
      }
      return {
        source: new LocalMasterKey(decodeKey(text.trim(), 'MASTER_KEY_FILE'), `file ${config.file}`),
        generatedDevKeyFile: undefined,
        isDevelopmentKey: false,
      };
    }
    case 'generated-dev': {
      const { content, created } = await readOrCreateSecretFile(config.file, () =>
        Promise.resolve(randomBytes(32).toString('base64') + '\n'),
      );
      return {
        source: new LocalMasterKey(decodeKey(content.trim(), config.file), `DEVELOPMENT key file ${config.file}`),
        generatedDevKeyFile: created ? config.file : undefined,
        isDevelopmentKey: true,
      };
    }
  }
}

function decodeKey(base64: string, name: string): Buffer {
  const key = Buffer.from(base64, 'base64');
  if (key.length !== 32 || key.toString('base64') !== base64) {
    throw new Error(`${name} must hold 32 bytes (256 bits) encoded as base64`);
  }
  return key;
}
