/**
 * The in-process master key sources: `env` (MASTER_KEY), `file` (MASTER_KEY_FILE) and the generated
 * development key of the embedded default. All three hold the 256-bit KEK in this process's memory
 * and wrap with AES-256-GCM, binding each wrapped key to its identity through the additional
 * authenticated data, so a wrapped key copied onto another key's row fails to unwrap instead of
 * silently serving the wrong purpose or version.
 *
 * Threat model: whoever reads the environment (MASTER_KEY: /proc/<pid>/environ, a crash report, an
 * orchestrator's spec) or the file holds the KEK, hence every data key. That is why production refuses
 * the env source unless MASTER_KEY_ENV_ALLOWED=true (config.ts), and why the PKCS#11 source exists.
 */
import fs from 'node:fs';
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { split as shamirSplit } from 'shamir-secret-sharing';
import type { MasterKeyConfig } from '../../config/config.js';
import { readOrCreateSecretFile } from '../../config/dev-secret-file.js';
import type {
  KeyIdRename,
  LoadedMasterKey,
  MasterKeyLocation,
  MasterKeyReadiness,
  MasterKeySource,
} from '../master-key-types.js';

const IV_BYTES = 12;
const TAG_BYTES = 16;
const FORMAT_V1 = 1;

/**
 * The conventional key check value: the first three bytes of the key's encryption of a zero block
 * (AES-ECB), in hex. Identifies a key to a person (a custodian compares it with the ceremony record)
 * without revealing anything usable about it; the PKCS#11 source computes the same value inside the
 * token, so a key moved between sources keeps its KCV.
 */
export function keyCheckValue(zeroBlockCiphertext: Buffer): string {
  return zeroBlockCiphertext.subarray(0, 3).toString('hex').toUpperCase();
}

export class LocalMasterKey implements MasterKeySource {
  readonly keyId: string;
  readonly keyIdRenames: readonly KeyIdRename[];
  readonly location: MasterKeyLocation;

  private readonly key: Buffer;

  constructor(
    key: Buffer,
    readonly description: string,
    location: Omit<MasterKeyLocation, 'keyCheckValue'> = { source: 'env', where: description },
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
    const ecb = createCipheriv('aes-256-ecb', key, null).setAutoPadding(false);
    this.location = { ...location, keyCheckValue: keyCheckValue(ecb.update(Buffer.alloc(16))) };
  }

  /** The key is in memory: it is always ready. */
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

type LocalConfig = Extract<MasterKeyConfig, { source: 'env' | 'file' | 'generated-dev' }>;

export async function loadLocalMasterKey(config: LocalConfig): Promise<LoadedMasterKey> {
  switch (config.source) {
    case 'env':
      return {
        source: new LocalMasterKey(decodeKey(config.keyBase64, 'MASTER_KEY'), 'MASTER_KEY environment variable', {
          source: 'env',
          where: 'environment variable MASTER_KEY',
        }),
        generatedDevKeyFile: undefined,
        isDevelopmentKey: false,
      };
    case 'file':
      return {
        source: new LocalMasterKey(readKeyFile(config.file, 'MASTER_KEY_FILE'), `file ${config.file}`, {
          source: 'file',
          where: `file ${config.file}`,
        }),
        generatedDevKeyFile: undefined,
        isDevelopmentKey: false,
      };
    case 'generated-dev': {
      const { content, created } = await readOrCreateSecretFile(config.file, () =>
        Promise.resolve(randomBytes(32).toString('base64') + '\n'),
      );
      return {
        source: new LocalMasterKey(decodeKey(content.trim(), config.file), `DEVELOPMENT key file ${config.file}`, {
          source: 'generated-dev',
          where: `DEVELOPMENT key file ${config.file}`,
        }),
        generatedDevKeyFile: created ? config.file : undefined,
        isDevelopmentKey: true,
      };
    }
  }
}

/** A previous master key in MASTER_KEY_PREVIOUS (base64), for unwrapping only. */
export function previousEnvMasterKey(base64: string, index: number): LocalMasterKey {
  const name = `MASTER_KEY_PREVIOUS #${index + 1}`;
  return new LocalMasterKey(decodeKey(base64, 'MASTER_KEY_PREVIOUS'), name, { source: 'env', where: name });
}

export function readKeyFile(file: string, name: string): Buffer {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`${name} cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`, {
      cause: error,
    });
  }
  return decodeKey(text.trim(), name);
}

function decodeKey(base64: string, name: string): Buffer {
  const key = Buffer.from(base64, 'base64');
  if (key.length !== 32 || key.toString('base64') !== base64) {
    throw new Error(`${name} must hold 32 bytes (256 bits) encoded as base64`);
  }
  return key;
}
