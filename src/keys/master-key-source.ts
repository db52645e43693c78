/**
 * Where the master key (KEK) comes from. Behind an interface so that the KEK can live in process
 * memory (env, file, the development key), in a PKCS#11 token, or elsewhere: the rest of the service
 * only ever asks the source to wrap or unwrap data keys, never for the KEK. With the `shares` source the
 * KEK is rebuilt in memory from custodians' Shamir shares (master-key-sources/shares.ts).
 *
 * Adding a source is one file under ./master-key-sources/ and one case in {@link loadMasterKey}
 * (plus its MASTER_KEY_SOURCE value in config.ts).
 *
 * Every source binds each wrapped value to its identity through the AAD (the purpose and version of
 * a data key, the row of a seal): a wrapped key copied onto another key's row fails to unwrap. An
 * insider with write access to the database can swap, copy or alter wrapped keys and seals, but
 * cannot make one unwrap under another identity, nor forge one, without the source.
 */
import type { MasterKeyConfig } from '../config/config.js';
import { isMasterKeyUnavailable } from '../errors/app-error.js';
import type {
  KeyIdRename,
  LoadedMasterKey,
  MasterKeyLocation,
  MasterKeyReadiness,
  MasterKeySource,
} from './master-key-types.js';
import { LocalMasterKey, loadLocalMasterKey, previousEnvMasterKey } from './master-key-sources/local.js';
import { SharesMasterKey } from './master-key-sources/shares.js';

export { LocalMasterKey } from './master-key-sources/local.js';

export type {
  KeyIdRename,
  LoadedMasterKey,
  MasterKeyLocation,
  MasterKeyReadiness,
  MasterKeySource,
} from './master-key-types.js';

/**
 * The current master key plus previous ones during a master-key rotation: wraps with the current
 * key only, unwraps with whichever key wrapped the data key (AES-GCM authentication tells them
 * apart). The previous keys may live in any source (MASTER_KEY_PREVIOUS, MASTER_KEY_PREVIOUS_FILE,
 * PKCS11_PREVIOUS_KEY_LABEL) while `keys rotate --purpose master` rewraps every data key; they are
 * removed once `keys status` shows no key wrapped by a previous master key.
 */
export class MasterKeySet implements MasterKeySource {
  readonly keyId: string;
  readonly description: string;
  readonly location: MasterKeyLocation | undefined;
  readonly keyIdRenames: readonly KeyIdRename[];

  constructor(
    readonly current: MasterKeySource,
    readonly previous: readonly MasterKeySource[],
  ) {
    this.keyId = current.keyId;
    this.location = current.location;
    this.description = `${current.description} (+${previous.length} previous master key(s) for unwrapping only)`;
    this.keyIdRenames = [current, ...previous].flatMap((source) => source.keyIdRenames ?? []);
  }

  wrap(plaintextKey: Buffer, aad: string): Promise<Buffer> {
    return this.current.wrap(plaintextKey, aad);
  }

  async unwrap(wrapped: Buffer, aad: string): Promise<Buffer> {
    let failure: unknown;
    for (const source of [this.current, ...this.previous]) {
      try {
        return await source.unwrap(wrapped, aad);
      } catch (error) {
        // An unavailable source is not "the wrong key": say so rather than the last key's failure.
        if (failure === undefined || isMasterKeyUnavailable(error)) failure = error;
      }
    }
    throw failure instanceof Error ? failure : new Error('no configured master key unwraps this key');
  }

  /** Not ready when any of them is not: a reload during the rotation needs the previous ones too. */
  readiness(): MasterKeyReadiness {
    for (const source of [this.current, ...this.previous]) {
      const state = source.readiness();
      if (!state.ready) return state;
    }
    return { ready: true };
  }

  async refreshReadiness(): Promise<void> {
    await Promise.all(
      [this.current, ...this.previous].map((source) => source.refreshReadiness?.() ?? Promise.resolve()),
    );
  }

  async close(): Promise<void> {
    await Promise.all([this.current, ...this.previous].map((source) => source.close?.() ?? Promise.resolve()));
  }
}

/** The current key alone (without the previous ones of a rotation): what a wrapped key must open under. */
export function currentMasterKey(source: MasterKeySource): MasterKeySource {
  return source instanceof MasterKeySet ? currentMasterKey(source.current) : source;
}

export async function loadMasterKey(
  config: MasterKeyConfig,
  previousBase64: readonly string[] = [],
  previousSources: readonly MasterKeyConfig[] = [],
): Promise<LoadedMasterKey> {
  const loaded = await loadOne(config);
  if (previousBase64.length === 0 && previousSources.length === 0) return loaded;
  const previous: MasterKeySource[] = previousBase64.map((b64, i) => previousEnvMasterKey(b64, i));
  for (const other of previousSources) previous.push((await loadOne(other)).source);
  return { ...loaded, source: new MasterKeySet(loaded.source, previous) };
}

function loadOne(config: MasterKeyConfig): Promise<LoadedMasterKey> {
  switch (config.source) {
    case 'env':
    case 'file':
    case 'generated-dev':
      return loadLocalMasterKey(config);
    case 'shares':
      // Sealed: the service rebuilds the key from custodians' submissions (keys unseal); the key
      // CLI from the share files it is given (MASTER_KEY_SHARE_FILES), when it is given any.
      return SharesMasterKey.load(
        config,
        (key, description) => new LocalMasterKey(key, description, { source: 'shares', where: description }),
      ).then((source) => ({ source, generatedDevKeyFile: undefined, isDevelopmentKey: false }));
    case 'pkcs11':
      // Loaded only when asked for: the native binding (pkcs11js) need not be built where no token
      // is used (the embedded default, an image installed with --ignore-scripts).
      return import('./master-key-sources/pkcs11.js').then(({ loadPkcs11MasterKey }) => loadPkcs11MasterKey(config));
  }
}
