/**
 * MASTER_KEY_SOURCE=shares: the master key exists only as M-of-N Shamir shares held by the key
 * custodians (key-shares.ts splits it). A process using this source starts **sealed**: it holds no
 * key, every wrap and unwrap answers `VAULT_SEALED` (503), and /readyz says so. The key is rebuilt in
 * memory once M custodians have each submitted their share (the service: src/keys/unseal.ts; the key
 * CLI: the cleartext share files named by MASTER_KEY_SHARE_FILES), and forgotten (its bytes
 * overwritten) on `keys seal` or when the process ends.
 *
 * What stops a wrong key from being accepted: the rebuilt key's id must equal the pinned
 * MASTER_KEY_SHARES_KEY_ID (configuration, outside the database). Shamir has no integrity of its own,
 * so without the pin a database writer could replace the split record, the custodians and every
 * wrapped key with their own and have the service run under a master key of their choosing.
 *
 * What is left in memory after a seal: the Buffer this object owned is overwritten; the copies that
 * node:crypto holds inside OpenSSL contexts and the unwrapped data keys (KeyObjects, which cannot be
 * wiped from JavaScript) are dropped and left to the garbage collector. A process memory dump of an
 * unsealed or recently sealed instance is out of this design's reach, as it is for Vault.
 */
import fs from 'node:fs';
import { combine } from 'shamir-secret-sharing';
import type { SharesMasterKeyConfig } from '../../config/config.js';
import { AppError } from '../../errors/app-error.js';
import type { SplittableMasterKey } from '../key-shares.js';
import type { MasterKeyReadiness, MasterKeySource } from '../master-key-types.js';
import { SHARE_BYTES } from './share-crypto.js';

/**
 * The in-memory key once rebuilt: master-key-source.ts's LocalMasterKey, passed in as a factory so
 * that this module needs nothing from that one at run time (no import cycle).
 */
export interface RebuiltKey extends MasterKeySource {
  shamirSplit(total: number, threshold: number): Promise<Uint8Array[]>;
  wipe(): void;
}
export type RebuiltKeyFactory = (key: Buffer, description: string) => RebuiltKey;

export const CLEAR_SHARE_FILE_TYPE = 'loyalty-vault/master-key-share-clear/v1';

export class SharesMasterKey implements SplittableMasterKey {
  readonly description = 'M-of-N key shares held by the custodians (MASTER_KEY_SOURCE=shares)';
  /** Tells this source apart without `instanceof` (the service and the CLI branch on it). */
  readonly kind = 'shares' as const;
  private key: RebuiltKey | undefined;

  constructor(
    readonly keyId: string,
    private readonly rebuild: RebuiltKeyFactory,
  ) {}

  /**
   * The source as configured: sealed, or, for the key CLI given MASTER_KEY_SHARE_FILES, unsealed from
   * those files (refused unless they rebuild the pinned key).
   */
  static async load(config: SharesMasterKeyConfig, rebuild: RebuiltKeyFactory): Promise<SharesMasterKey> {
    const source = new SharesMasterKey(config.keyId, rebuild);
    if (config.shareFiles.length > 0) await source.unsealFromFiles(config.shareFiles);
    return source;
  }

  get sealed(): boolean {
    return this.key === undefined;
  }

  readiness(): MasterKeyReadiness {
    return this.key === undefined
      ? {
          ready: false,
          code: 'VAULT_SEALED',
          detail: 'The master key has not been rebuilt from its shares: run keys unseal.',
        }
      : { ready: true };
  }

  /**
   * Installs the key rebuilt from shares when it is the configured one; false (and the candidate
   * wiped) otherwise. The caller wipes `secret`.
   */
  install(secret: Uint8Array): boolean {
    if (secret.length !== 32) return false;
    const bytes = Buffer.from(secret);
    const candidate = this.rebuild(bytes, this.description);
    bytes.fill(0); // the factory keeps a copy of its own
    if (candidate.keyId !== this.keyId) {
      candidate.wipe();
      return false;
    }
    this.key?.wipe();
    this.key = candidate;
    return true;
  }

  /** Forgets the key: its bytes are overwritten and every later wrap or unwrap is VAULT_SEALED. */
  seal(): void {
    this.key?.wipe();
    this.key = undefined;
  }

  /**
   * The end of the process (the core closes its master key sources, the current and the previous ones
   * of a rotation): the rebuilt key's bytes are overwritten, as by {@link seal}. A previous key rebuilt
   * from MASTER_KEY_PREVIOUS_SHARE_FILES for a rotation out of shares is wiped when the key CLI ends.
   */
  close(): Promise<void> {
    this.seal();
    return Promise.resolve();
  }

  async wrap(plaintextKey: Buffer, aad: string): Promise<Buffer> {
    return this.unsealed().wrap(plaintextKey, aad);
  }

  async unwrap(wrappedKey: Buffer, aad: string): Promise<Buffer> {
    return this.unsealed().unwrap(wrappedKey, aad);
  }

  async shamirSplit(total: number, threshold: number): Promise<Uint8Array[]> {
    return this.unsealed().shamirSplit(total, threshold);
  }

  private unsealed(): RebuiltKey {
    if (this.key === undefined) throw new AppError('VAULT_SEALED');
    return this.key;
  }

  /**
   * The key CLI's way in: cleartext share files (written by `keys shares reveal`, mode 0600), named
   * by path in MASTER_KEY_SHARE_FILES. The shares are wiped after the combination.
   */
  private async unsealFromFiles(files: readonly string[]): Promise<void> {
    const shares: Uint8Array[] = [];
    try {
      for (const file of files) shares.push(readClearShare(file));
      if (shares.length < 2) {
        throw new Error('MASTER_KEY_SHARE_FILES names fewer than two shares: the threshold is at least two');
      }
      const secret = await combine(shares);
      const ok = this.install(secret);
      secret.fill(0);
      if (!ok) {
        throw new Error(
          'MASTER_KEY_SHARE_FILES do not rebuild the master key MASTER_KEY_SHARES_KEY_ID names (a wrong, stale or missing share)',
        );
      }
    } finally {
      for (const share of shares) share.fill(0);
    }
  }
}

function readClearShare(file: string): Uint8Array {
  let text: string;
  try {
    // lstat: a symbolic link is refused, not followed (its target is whatever the link's writer says).
    const stat = fs.lstatSync(file);
    if (stat.isSymbolicLink()) throw new Error(`share file ${file} is a symbolic link: name the file itself`);
    const uid = process.getuid?.();
    if (uid !== undefined && uid !== 0 && stat.uid !== uid) {
      throw new Error(`share file ${file} belongs to another user (uid ${stat.uid}): it must be this user's own`);
    }
    if ((stat.mode & 0o077) !== 0) {
      throw new Error(
        `share file ${file} is readable by others (mode ${(stat.mode & 0o777).toString(8)}): chmod 600 it`,
      );
    }
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if (error instanceof Error && error.message.startsWith('share file')) throw error;
    throw new Error(`share file ${file} cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`, {
      cause: error,
    });
  }
  let parsed: { type?: unknown; share?: unknown };
  try {
    parsed = JSON.parse(text) as { type?: unknown; share?: unknown };
  } catch {
    throw new Error(`share file ${file} is not a cleartext share file (keys shares reveal writes one)`);
  }
  const share = typeof parsed.share === 'string' ? Buffer.from(parsed.share, 'base64url') : undefined;
  if (parsed.type !== CLEAR_SHARE_FILE_TYPE || share?.length !== SHARE_BYTES) {
    throw new Error(`share file ${file} is not a cleartext share file (keys shares reveal writes one)`);
  }
  return Uint8Array.from(share);
}

/** Whether `source` is the shares source (duck-typed on its `kind`). */
export function isSharesSource(source: MasterKeySource): source is SharesMasterKey {
  return (source as Partial<SharesMasterKey>).kind === 'shares';
}
