/* eslint max-lines: ["error", 680] -- one device session: login, key checks, serialised calls with timeouts, reconnection; split with the next token feature */
/**
 * The PKCS#11 master key source: the KEK is a non-extractable AES-256 key inside a token (an HSM;
 * SoftHSM2 in development and CI), and every wrap and unwrap is done BY THE TOKEN. The KEK's bytes
 * never enter this process: the code never asks for CKA_VALUE (a test records every call), and the
 * token would refuse (CKA_SENSITIVE true, CKA_EXTRACTABLE false, checked at every login).
 *
 * Mechanism: CKM_AES_GCM through C_Encrypt / C_Decrypt, with a random 96-bit IV and the value's
 * identity as the AAD, exactly as the in-process sources do. Why not CKM_AES_KEY_WRAP_PAD (RFC 5649)
 * through C_WrapKey: it has no associated data, so a wrapped key could be moved onto another key's
 * row by an insider with write access to the database and still unwrap (the binding would need a
 * second MAC); and C_WrapKey wraps token objects only, so every data key would first have to be
 * imported into the token as a session object. GCM also serves the seals (mTLS, dual control, the
 * audit chain keys), which wrap digests rather than keys. Output format: 0x02 ‖ IV ‖ ciphertext ‖ tag.
 *
 * Threat model:
 * - Someone who reads the environment, the files, the logs or the process arguments gets the module
 *   path, the labels and the path of the PIN file, never the PIN (read from a 0600 file at each
 *   login, passed straight to C_Login, never logged) and never the KEK (it is not in the process).
 *   With the PIN file too they can USE the key through the token while they have access to it, but
 *   cannot take it away: revoking that access (or changing the PIN) ends it, unlike a copied key.
 * - An insider with write access to the database can alter wrapped keys and seals but not forge
 *   them: GCM authentication fails inside the token. `kek_id` beside a wrapped key is informational.
 * - Someone who can administer the token and replaces the key behind the label: the key check value
 *   is computed at start and re-checked by every readiness probe; a different key makes the source
 *   unavailable (nothing is wrapped under it) instead of silently wrapping under a stranger's key.
 *
 * Availability: token operations run one at a time on one session (a session is not safe for
 * concurrent operations), the encryptions on libuv's thread pool (C_Encrypt/C_Decrypt with a
 * callback) and bounded by PKCS11_TIMEOUT_MS. A session, device or login error or a timeout marks
 * the source unavailable (/readyz 503 MASTER_KEY_UNAVAILABLE) and throws MASTER_KEY_UNAVAILABLE: a
 * rotation or key creation then rolls back its transaction, nothing half-written. The next
 * operation or readiness probe re-opens a session and logs in again (re-initialising the library
 * when the token has vanished from the slot list): it recovers without a restart. The data keys
 * already unwrapped stay in the key ring, so card traffic does not need the token at all.
 */
import fs from 'node:fs';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Knex } from 'knex';
import pkcs11js from 'pkcs11js';
import type { MasterKeyConfig, Pkcs11Settings } from '../../config/config.js';
import { AppError } from '../../errors/app-error.js';
import type {
  KeyIdRename,
  LoadedMasterKey,
  MasterKeyLocation,
  MasterKeyReadiness,
  MasterKeySource,
} from '../master-key-types.js';
import { keyCheckValue } from './local.js';

type Pkcs11Config = Extract<MasterKeyConfig, { source: 'pkcs11' }>;
type Handle = Buffer;

const FORMAT_PKCS11_GCM = 2;
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** /readyz probes the token at most this often; concurrent probes share one round trip. */
const PROBE_INTERVAL_MS = 1_000;

/**
 * PKCS#11 return values that mean "the token, the session or the login is gone", not "wrong key".
 * CKR_GENERAL_ERROR is deliberately absent: it is what SoftHSM2 answers for a GCM tag that does not
 * verify (a value wrapped by another key, or altered), which MasterKeySet must read as "not this key".
 */
const UNAVAILABLE_CODES = new Set<number>([
  pkcs11js.CKR_HOST_MEMORY,
  pkcs11js.CKR_SLOT_ID_INVALID,
  pkcs11js.CKR_DEVICE_ERROR,
  pkcs11js.CKR_DEVICE_MEMORY,
  pkcs11js.CKR_DEVICE_REMOVED,
  pkcs11js.CKR_KEY_HANDLE_INVALID,
  pkcs11js.CKR_OBJECT_HANDLE_INVALID,
  pkcs11js.CKR_OPERATION_ACTIVE,
  pkcs11js.CKR_SESSION_CLOSED,
  pkcs11js.CKR_SESSION_HANDLE_INVALID,
  pkcs11js.CKR_TOKEN_NOT_PRESENT,
  pkcs11js.CKR_TOKEN_NOT_RECOGNIZED,
  pkcs11js.CKR_USER_NOT_LOGGED_IN,
  pkcs11js.CKR_PIN_EXPIRED,
  pkcs11js.CKR_PIN_LOCKED,
  pkcs11js.CKR_CRYPTOKI_NOT_INITIALIZED,
]);

/** The attributes of the master key, all set at creation; the only ones the code ever reads. */
const MASTER_KEY_CHECKED_ATTRIBUTES = [
  pkcs11js.CKA_CLASS,
  pkcs11js.CKA_KEY_TYPE,
  pkcs11js.CKA_VALUE_LEN,
  pkcs11js.CKA_SENSITIVE,
  pkcs11js.CKA_EXTRACTABLE,
  pkcs11js.CKA_ALWAYS_SENSITIVE,
  pkcs11js.CKA_NEVER_EXTRACTABLE,
] as const;

/**
 * One loaded library per module path: PKCS#11 state (initialisation, logins) is per process per
 * library, shared by every source that uses it (a current and a previous key in one token).
 */
const modules = new Map<string, pkcs11js.PKCS11>();

function moduleFor(path: string): pkcs11js.PKCS11 {
  let api = modules.get(path);
  if (api === undefined) {
    api = new pkcs11js.PKCS11();
    try {
      api.load(path);
    } catch (error) {
      throw new Error(`PKCS11_MODULE ${path} cannot be loaded`, { cause: error });
    }
    modules.set(path, api);
  }
  initialise(api);
  return api;
}

function initialise(api: pkcs11js.PKCS11): void {
  try {
    api.C_Initialize();
  } catch (error) {
    if (pkcs11Code(error) !== pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED) throw error;
  }
}

function pkcs11Code(error: unknown): number | undefined {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'number' ? code : undefined;
}

function isUnavailableError(error: unknown): boolean {
  if (error instanceof AppError) return error.code === 'MASTER_KEY_UNAVAILABLE';
  const code = pkcs11Code(error);
  return code !== undefined && UNAVAILABLE_CODES.has(code);
}

function unavailable(detail: string, cause?: unknown): AppError {
  return new AppError('MASTER_KEY_UNAVAILABLE', {
    detail,
    headers: { 'Retry-After': '2' },
    ...(cause === undefined ? {} : { cause }),
  });
}

/** The slot holding the token labelled `label`, re-reading the slot list once if it is not there. */
function findSlot(api: pkcs11js.PKCS11, label: string): Handle | undefined {
  // Two tokens under one label (a second HSM partition, a token restored beside the original) are
  // refused rather than one picked at random: the key check value would catch a different key, but
  // `keys hsm init` and its undo could act on the wrong token.
  const scan = () => {
    const slots = api.C_GetSlotList(true).filter((slot) => api.C_GetTokenInfo(slot).label.trim() === label);
    if (slots.length > 1) throw unavailable(`${slots.length} tokens are labelled "${label}": the label must be unique`);
    return slots[0];
  };
  let slot: Handle | undefined;
  try {
    slot = scan();
  } catch {
    // Not initialised, or a slot list gone stale under us (a token removed since C_Initialize answers
    // CKR_GENERAL_ERROR for its slot): re-read it once below; the second scan's error stands.
  }
  if (slot !== undefined) return slot;
  // Many modules read their slot list at C_Initialize only: a token that came back (or a library
  // finalised under us) is seen again after a fresh initialisation.
  try {
    api.C_Finalize();
  } catch {
    // not initialised: fine
  }
  initialise(api);
  return scan();
}

/**
 * Reads the PIN from its file (never from the environment or an argument), refusing a file that
 * group or others can read. The PIN goes straight to C_Login and is never kept or logged.
 */
function readPin(pinFile: string): string {
  // One open file: the mode checked is that of the file read (no swap between a stat and a read).
  let fd: number;
  try {
    fd = fs.openSync(pinFile, 'r');
  } catch (error) {
    throw new Error(`PKCS11_PIN_FILE cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`, {
      cause: error,
    });
  }
  try {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile()) throw new Error('PKCS11_PIN_FILE must be a regular file');
    if (process.platform !== 'win32' && (stat.mode & 0o077) !== 0) {
      throw new Error('PKCS11_PIN_FILE must be readable by its owner only (chmod 600)');
    }
    return fs.readFileSync(fd, 'utf8').replace(/\r?\n$/, '');
  } finally {
    fs.closeSync(fd);
  }
}

/** Answers to C_Login that mean "this PIN will not do": trying it again only counts down to a lock. */
const PIN_REFUSED_CODES = new Set<number>([
  pkcs11js.CKR_PIN_INCORRECT,
  pkcs11js.CKR_PIN_INVALID,
  pkcs11js.CKR_PIN_LEN_RANGE,
  pkcs11js.CKR_PIN_EXPIRED,
  pkcs11js.CKR_PIN_LOCKED,
]);

/** A per-process key so that what is remembered of a refused PIN is not a plain hash of it. */
const PIN_MEMO_KEY = randomBytes(32);

/**
 * The PINs the token refused, per token and PIN file (a keyed digest, never the PIN): a PIN that was
 * refused is not sent again until the file holds another one. Real HSMs lock the user PIN after a
 * few wrong tries (for every instance, until a security officer resets it); without this, each
 * readiness probe (once a second) and each operation retried a wrong PIN after an outage.
 */
const refusedPins = new Map<string, Buffer>();

function login(api: pkcs11js.PKCS11, session: Handle, settings: Pkcs11Settings): void {
  const pin = readPin(settings.pinFile);
  const memo = `${settings.module}\0${settings.tokenLabel}\0${settings.pinFile}`;
  const digest = createHmac('sha256', PIN_MEMO_KEY).update(pin, 'utf8').digest();
  const refused = refusedPins.get(memo);
  if (refused !== undefined && timingSafeEqual(refused, digest)) {
    throw unavailable(
      `the token "${settings.tokenLabel}" refused the PIN in PKCS11_PIN_FILE: it is not tried again until the ` +
        'file holds another PIN (a token locks its PIN after a few wrong tries)',
    );
  }
  try {
    api.C_Login(session, pkcs11js.CKU_USER, pin);
    refusedPins.delete(memo);
  } catch (error) {
    // Logins are per application and token: another session of this process already holds one.
    const code = pkcs11Code(error);
    if (code === pkcs11js.CKR_USER_ALREADY_LOGGED_IN) return;
    if (code !== undefined && PIN_REFUSED_CODES.has(code)) {
      refusedPins.set(memo, digest);
      throw unavailable(
        `the token "${settings.tokenLabel}" refused the PIN in PKCS11_PIN_FILE (${describeCode(error)}): ` +
          'it is not tried again until the file holds another PIN',
        error,
      );
    }
    throw error;
  }
}

function findKeys(api: pkcs11js.PKCS11, session: Handle, label: string): Handle[] {
  api.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_LABEL, value: label }]);
  try {
    return api.C_FindObjects(session, 16);
  } finally {
    api.C_FindObjectsFinal(session);
  }
}

function readBool(value: unknown): boolean {
  return Buffer.isBuffer(value) ? value.some((b) => b !== 0) : value === true;
}

function readUlong(value: unknown): number {
  if (typeof value === 'number') return value;
  if (!Buffer.isBuffer(value) || value.length === 0) return -1;
  return value.readUIntLE(0, Math.min(value.length, 6));
}

/**
 * Refuses a key that is not a sensitive, never-extractable AES-256 key. ALWAYS_SENSITIVE and
 * NEVER_EXTRACTABLE prove that its value never left the token in clear since it was made (a key
 * imported from outside, or once extractable, fails), which is what PCI DSS 3.6.1.2 asks of a key
 * held in a secure cryptographic device. Only these attributes are read: never CKA_VALUE.
 */
function checkKeyAttributes(api: pkcs11js.PKCS11, session: Handle, key: Handle, label: string): void {
  const values = api
    .C_GetAttributeValue(
      session,
      key,
      MASTER_KEY_CHECKED_ATTRIBUTES.map((type) => ({ type })),
    )
    .map((a) => a.value);
  const [cls, keyType, length, sensitive, extractable, alwaysSensitive, neverExtractable] = values;
  const faults: string[] = [];
  if (readUlong(cls) !== pkcs11js.CKO_SECRET_KEY || readUlong(keyType) !== pkcs11js.CKK_AES)
    faults.push('not an AES key');
  if (readUlong(length) !== 32) faults.push('not 256 bits');
  if (!readBool(sensitive) || !readBool(alwaysSensitive)) faults.push('not (always) sensitive');
  if (readBool(extractable) || !readBool(neverExtractable)) faults.push('extractable (now or once)');
  if (faults.length > 0) {
    throw new Error(
      `the token key labelled "${label}" is refused as a master key: ${faults.join(', ')}. ` +
        'Create one with `keys hsm init` (a non-extractable AES-256 key generated in the token).',
    );
  }
}

function encryptAsync(api: pkcs11js.PKCS11, session: Handle, data: Buffer, outLength: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    api.C_Encrypt(session, data, Buffer.alloc(outLength), (error, out) => (error ? reject(error) : resolve(out)));
  });
}

function decryptAsync(api: pkcs11js.PKCS11, session: Handle, data: Buffer, outLength: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    api.C_Decrypt(session, data, Buffer.alloc(outLength), (error, out) => (error ? reject(error) : resolve(out)));
  });
}

function gcm(iv: Buffer, aad: string): pkcs11js.Mechanism {
  return {
    mechanism: pkcs11js.CKM_AES_GCM,
    parameter: {
      type: pkcs11js.CK_PARAMS_AES_GCM,
      iv,
      ivBits: IV_BYTES * 8,
      aad: Buffer.from(aad, 'utf8'),
      tagBits: TAG_BYTES * 8,
    } as pkcs11js.AesGCM,
  };
}

/**
 * The block whose encryption identifies the key (keyId). Not the zero block: E_K(0¹²⁸) is GCM's hash
 * key H, which authenticates every wrapped key and seal; publishing 96 bits of it (as kek_id in every
 * row, the audit trail and the inventory) would leave an insider 2^32 guesses from forging a wrapped
 * value under another row's AAD. As a GCM counter block this one would need the IV "loyalty-vaul"
 * and a counter near 2^31: never met. Only the conventional 3-byte KCV comes from the zero block.
 */
const KEY_ID_BLOCK = Buffer.from('loyalty-vault/id', 'ascii');

async function ecbBlock(api: pkcs11js.PKCS11, session: Handle, key: Handle, block: Buffer): Promise<Buffer> {
  api.C_EncryptInit(session, { mechanism: pkcs11js.CKM_AES_ECB }, key);
  return encryptAsync(api, session, block, 16);
}

interface Fingerprint {
  readonly keyId: string;
  /** The identifier the first release derived from the zero block (stored rows are renamed). */
  readonly legacyKeyId: string;
  readonly kcv: string;
}

/** The key's check value and identifier, computed inside the token. */
async function fingerprintOf(api: pkcs11js.PKCS11, session: Handle, key: Handle): Promise<Fingerprint> {
  const zero = await ecbBlock(api, session, key, Buffer.alloc(16));
  const id = await ecbBlock(api, session, key, KEY_ID_BLOCK);
  return {
    keyId: `pkcs11:${id.subarray(0, 12).toString('base64url')}`,
    legacyKeyId: `pkcs11:${zero.subarray(0, 12).toString('base64url')}`,
    kcv: keyCheckValue(zero),
  };
}

interface Connection {
  readonly session: Handle;
  readonly key: Handle;
}

export class Pkcs11MasterKey implements MasterKeySource {
  readonly description: string;
  private fingerprint: Fingerprint | undefined;
  private connection: Connection | undefined;
  private state: MasterKeyReadiness = { ready: true };
  private queue: Promise<unknown> = Promise.resolve();
  private probing: Promise<void> | undefined;
  private probedAt = 0;

  private constructor(
    private readonly settings: Pkcs11Settings,
    readonly keyLabel: string,
  ) {
    this.description = `PKCS#11 token "${settings.tokenLabel}", key "${keyLabel}" (${settings.module})`;
  }

  /** Opens a session, logs in, finds and checks the key: fails start-up clearly when it cannot. */
  static async open(settings: Pkcs11Settings, keyLabel: string): Promise<Pkcs11MasterKey> {
    const source = new Pkcs11MasterKey(settings, keyLabel);
    await source.run('open', () => Promise.resolve());
    return source;
  }

  get keyId(): string {
    if (this.fingerprint === undefined) throw new Error('the PKCS#11 master key is not open');
    return this.fingerprint.keyId;
  }

  /** Rows written by the first release name this key by its zero-block id: renamed at start. */
  get keyIdRenames(): readonly KeyIdRename[] {
    const fingerprint = this.fingerprint;
    return fingerprint === undefined ? [] : [{ from: fingerprint.legacyKeyId, to: fingerprint.keyId }];
  }

  get location(): MasterKeyLocation {
    return {
      source: 'pkcs11',
      where: this.description,
      tokenLabel: this.settings.tokenLabel,
      keyLabel: this.keyLabel,
      keyCheckValue: this.fingerprint?.kcv ?? 'unknown',
    };
  }

  readiness(): MasterKeyReadiness {
    // A source marked unavailable tries to come back on its own, not only when something needs it.
    if (!this.state.ready) void this.refreshReadiness().catch(() => undefined);
    return this.state;
  }

  /** A token round trip (the KCV again, compared), at most once per second. */
  refreshReadiness(): Promise<void> {
    if (this.probing !== undefined) return this.probing;
    if (Date.now() - this.probedAt < PROBE_INTERVAL_MS) return Promise.resolve();
    this.probing = this.run('probe', () => Promise.resolve())
      .then(
        () => undefined,
        () => undefined,
      )
      .finally(() => {
        this.probedAt = Date.now();
        this.probing = undefined;
      });
    return this.probing;
  }

  wrap(plaintextKey: Buffer, aad: string): Promise<Buffer> {
    return this.run('wrap', async (api, { session, key }) => {
      const iv = randomBytes(IV_BYTES);
      api.C_EncryptInit(session, gcm(iv, aad), key);
      const body = await encryptAsync(api, session, plaintextKey, plaintextKey.length + TAG_BYTES);
      return Buffer.concat([Buffer.of(FORMAT_PKCS11_GCM), iv, body]);
    });
  }

  unwrap(wrapped: Buffer, aad: string): Promise<Buffer> {
    // Another source's format (e.g. a data key still under MASTER_KEY_PREVIOUS): refused without a
    // token round trip.
    if (wrapped.length < 1 + IV_BYTES + TAG_BYTES || wrapped[0] !== FORMAT_PKCS11_GCM) {
      return Promise.reject(new Error('wrapped key has an unknown format'));
    }
    return this.run('unwrap', async (api, { session, key }) => {
      api.C_DecryptInit(session, gcm(wrapped.subarray(1, 1 + IV_BYTES), aad), key);
      const body = wrapped.subarray(1 + IV_BYTES);
      return decryptAsync(api, session, body, body.length);
    });
  }

  async close(): Promise<void> {
    await this.queue.catch(() => undefined);
    const connection = this.connection;
    this.connection = undefined;
    if (connection !== undefined) this.closeSession(connection.session);
  }

  /**
   * Runs one token operation: serialised, connected first, bounded in time. A failure that means the
   * token is unavailable drops the session and marks the source unavailable; the next call
   * reconnects. Any other failure (a wrapped key that does not authenticate) passes through.
   */
  private run<T>(what: string, op: (api: pkcs11js.PKCS11, c: Connection) => Promise<T>): Promise<T> {
    const result = this.queue.then(() => this.runNow(what, op));
    this.queue = result.catch(() => undefined);
    return result;
  }

  private async runNow<T>(what: string, op: (api: pkcs11js.PKCS11, c: Connection) => Promise<T>): Promise<T> {
    const api = moduleFor(this.settings.module);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(unavailable(`the token did not answer within ${this.settings.timeoutMs} ms (${what})`)),
        this.settings.timeoutMs,
      );
    });
    const attempt = (async () => {
      const connection = this.connection ?? (await this.connect(api));
      if (what === 'probe') await this.verifyFingerprint(api, connection);
      return op(api, connection);
    })();
    try {
      const value = await Promise.race([attempt, timeout]);
      this.state = { ready: true };
      return value;
    } catch (error) {
      if (!isUnavailableError(error)) throw error;
      // The session may still be busy with the operation that timed out: it is dropped, not reused.
      const dropped = this.connection;
      this.connection = undefined;
      if (dropped !== undefined) void attempt.finally(() => this.closeSession(dropped.session)).catch(() => undefined);
      const detail =
        error instanceof AppError
          ? (error.detail ?? error.title)
          : `the token failed: ${describeCode(error)} (${what})`;
      this.state = { ready: false, code: 'MASTER_KEY_UNAVAILABLE', detail };
      throw error instanceof AppError ? error : unavailable(detail, error);
    } finally {
      clearTimeout(timer);
    }
  }

  private async connect(api: pkcs11js.PKCS11): Promise<Connection> {
    const { tokenLabel } = this.settings;
    const slot = findSlot(api, tokenLabel);
    if (slot === undefined) throw unavailable(`the token "${tokenLabel}" is not present`);
    // A read-only session: using a key needs no more; creating one is `keys hsm init`'s job.
    const session = api.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
    try {
      login(api, session, this.settings);
      const keys = findKeys(api, session, this.keyLabel);
      const key = keys[0];
      if (key === undefined) {
        throw new Error(
          `no key labelled "${this.keyLabel}" in the token "${tokenLabel}": create it with \`keys hsm init\``,
        );
      }
      if (keys.length > 1) throw new Error(`${keys.length} objects are labelled "${this.keyLabel}" in the token`);
      checkKeyAttributes(api, session, key, this.keyLabel);
      const connection = { session, key };
      await this.verifyFingerprint(api, connection);
      this.connection = connection;
      return connection;
    } catch (error) {
      this.closeSession(session);
      throw error;
    }
  }

  /**
   * Computes the key check value in the token; the first time it sets keyId, afterwards it must
   * match: a different key under the label is never used (detail names the label, not the values).
   */
  private async verifyFingerprint(api: pkcs11js.PKCS11, { session, key }: Connection): Promise<void> {
    const fingerprint = await fingerprintOf(api, session, key);
    if (this.fingerprint === undefined) this.fingerprint = fingerprint;
    else if (this.fingerprint.keyId !== fingerprint.keyId) {
      throw unavailable(
        `the key labelled "${this.keyLabel}" is not the key this process opened (its key check value changed): ` +
          'restart after checking the token',
      );
    }
  }

  private closeSession(session: Handle): void {
    try {
      moduleFor(this.settings.module).C_CloseSession(session);
    } catch {
      // already closed with the library or the token
    }
  }
}

function describeCode(error: unknown): string {
  const message = (error as { message?: unknown } | undefined)?.message;
  return typeof message === 'string' && /^CKR_[A-Z_]+$/.test(message) ? message : 'error';
}

export async function loadPkcs11MasterKey(config: Pkcs11Config): Promise<LoadedMasterKey> {
  return {
    source: await Pkcs11MasterKey.open(config.pkcs11, config.keyLabel),
    generatedDevKeyFile: undefined,
    isDevelopmentKey: false,
  };
}

export interface TokenKeyCreated {
  readonly tokenLabel: string;
  readonly keyLabel: string;
  readonly keyCheckValue: string;
  readonly keyId: string;
}

/**
 * `keys hsm init`: generates the master key inside the token (CKM_AES_KEY_GEN: the value is made by
 * the token and never leaves it), refusing when any object already has that label (a second key
 * under one label would make the source ambiguous, and overwriting the one in use would strand every
 * data key). The attributes: a token object, private (login needed), sensitive, never extractable,
 * not modifiable, usable to encrypt and decrypt only (no C_WrapKey of other keys out of the token).
 */
export async function createMasterKeyInToken(settings: Pkcs11Settings, keyLabel: string): Promise<TokenKeyCreated> {
  const api = moduleFor(settings.module);
  const slot = findSlot(api, settings.tokenLabel);
  if (slot === undefined) throw unavailable(`the token "${settings.tokenLabel}" is not present`);
  const session = api.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  try {
    login(api, session, settings);
    if (findKeys(api, session, keyLabel).length > 0) {
      throw new AppError('KEY_OPERATION_INVALID', {
        detail: `the token "${settings.tokenLabel}" already holds an object labelled "${keyLabel}": choose another label`,
      });
    }
    const key = api.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
      { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
      { type: pkcs11js.CKA_LABEL, value: keyLabel },
      { type: pkcs11js.CKA_ID, value: Buffer.from(keyLabel, 'utf8') },
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
      { type: pkcs11js.CKA_MODIFIABLE, value: false },
      { type: pkcs11js.CKA_ENCRYPT, value: true },
      { type: pkcs11js.CKA_DECRYPT, value: true },
      { type: pkcs11js.CKA_WRAP, value: false },
      { type: pkcs11js.CKA_UNWRAP, value: false },
      { type: pkcs11js.CKA_SIGN, value: false },
      { type: pkcs11js.CKA_VERIFY, value: false },
      { type: pkcs11js.CKA_DERIVE, value: false },
    ]);
    checkKeyAttributes(api, session, key, keyLabel);
    const { keyId, kcv } = await fingerprintOf(api, session, key);
    return { tokenLabel: settings.tokenLabel, keyLabel, keyCheckValue: kcv, keyId };
  } finally {
    try {
      api.C_CloseSession(session);
    } catch {
      // gone with the token
    }
  }
}

/** The tables whose rows name the master key that wrapped them (or record it as a master key). */
const KEK_ID_TABLES = ['data_keys', 'audit_chain_keys', 'reference_digest_keys', 'master_keys'] as const;

/**
 * Undoes {@link createMasterKeyInToken} when its audit entry could not be written: only ever the key
 * that very command created a moment before, identified by label AND key id (96 bits, not the 24-bit
 * KCV). Given the database, it first makes sure nothing is wrapped under that key: on a first
 * installation whose configuration names the new label, the same CLI run (or another instance
 * starting meanwhile) has already wrapped the data keys under it, and destroying it would strand
 * them for good. Such a key is kept (an unaudited key in the token is visible and can be audited or
 * removed by an operator; destroyed data keys cannot be brought back).
 */
export async function destroyCreatedTokenKey(
  settings: Pkcs11Settings,
  created: TokenKeyCreated,
  usedIn?: Knex,
): Promise<'destroyed' | 'absent' | `kept: ${string}`> {
  if (usedIn !== undefined) {
    const using: string[] = [];
    for (const table of KEK_ID_TABLES) {
      if ((await usedIn(table).where({ kek_id: created.keyId }).first('kek_id')) !== undefined) using.push(table);
    }
    if (using.length > 0) return `kept: rows in ${using.join(', ')} are under it`;
  }
  const api = moduleFor(settings.module);
  const slot = findSlot(api, settings.tokenLabel);
  if (slot === undefined) return 'absent';
  const session = api.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  let outcome: 'destroyed' | 'absent' = 'absent';
  try {
    login(api, session, settings);
    for (const key of findKeys(api, session, created.keyLabel)) {
      if ((await fingerprintOf(api, session, key)).keyId === created.keyId) {
        api.C_DestroyObject(session, key);
        outcome = 'destroyed';
      }
    }
  } finally {
    api.C_CloseSession(session);
  }
  return outcome;
}
