/* eslint max-lines: ["error", 660] -- the key lifecycle use cases (inventory, rotation, master-key rotation, retirement, destruction) in one class; their SQL is in key-version-store.ts and master-key-store.ts, a split by use case is left for later (issue 20) */
/**
 * Key lifecycle operations for custodians: inventory and cryptoperiod status, two-phase rotation,
 * retirement with proof of zero coverage, destruction. Used by the key CLI and (status) the service.
 *
 * Lifecycle of a data key version:
 *   published → active → decrypt-only → retired → destroyed
 * - published: loaded by every instance, decrypts and matches lookups; MAC versions also index new
 *   rows; not yet used to encrypt.
 * - active: encrypts / MACs new values (one per purpose).
 * - decrypt-only: superseded; still decrypts and matches while the backfill empties it.
 * - retired: no instance loads it; refused unless a query proves that no row still uses it.
 * - destroyed: its wrapped material is wiped (irreversible).
 *
 * Instances: activation waits until every live instance has loaded the published version; retirement
 * and destruction wait until every live instance has loaded the generation in which the version
 * stopped being writable (its `state_generation`), then count rows again inside their transaction
 * (instance-heartbeat.ts). Whatever an instance has cached, the database refuses a row written under
 * a version that is no longer writable (migration 20261206000700), and every state change takes the
 * key-state lock first (lockKeyStates) so that such writes and the state change serialise.
 *
 * Every write is one transaction with its audit entry; every refusal is audited too (outcome
 * `denied`). Rotation, retirement and destruction need dual control (see dual-control.ts).
 */
import { databaseNow } from '../db/database-clock.js';
import type { Knex } from 'knex';
import { appendAuditEvent, auditedWrite } from '../audit/audit-log.js';
import { AppError, isAppError, isMasterKeyUnavailable } from '../errors/app-error.js';
import { authorisationDetails, authorise, type Authorisation, type KeyOperation } from './dual-control.js';
import { fieldSetsFor, type EncryptedFieldSet } from './field-sets.js';
import { assertResumable } from './key-publication.js';
import {
  currentGeneration,
  HEARTBEAT_GRACE_MS,
  liveInstances,
  waitForInstances,
  type LiveInstance,
} from './instance-heartbeat.js';
import {
  bumpGeneration,
  insertNewKey,
  lockKeyStates,
  KEY_PURPOSES,
  KEY_SPECS,
  type KeyActor,
  type KeyPurpose,
  type KeyRing,
  type KeyState,
  wrappingAad,
} from './key-ring.js';
import type { ClientCaHooks } from './client-ca.js';
import type { MasterKeySource } from './master-key-types.js';
import { currentMasterKey } from './master-key-source.js';
import { rewrapUnder } from './master-rewrap.js';
import { daysLeft, isOverdue, periodOf } from './cryptoperiods.js';
import {
  activateVersion,
  allKeyVersions,
  destroyVersion,
  keyStateOf,
  keyVersion,
  keyVersionsOf,
  latestVersion,
  lockKeyVersion,
  retireVersion,
  stateGenerationOf,
  wrappedKeys,
  type DataKeyRecord,
} from './key-version-store.js';

export interface KeyPolicy {
  readonly singleOperator: boolean;
  readonly production: boolean;
  readonly cryptoperiodDays: Readonly<Record<KeyPurpose, number>>;
  /** How long until every running instance has reloaded its key ring (KEY_RING_REFRESH_MS + margin). */
  readonly propagationMs: number;
  /**
   * How long rotate, retire and destroy wait for live instances to load the generation they need
   * before refusing with KEY_INSTANCES_BEHIND. Default {@link DEFAULT_INSTANCE_WAIT_MS}.
   */
  readonly instanceWaitMs?: number;
}

/**
 * Twice the longest allowed KEY_RING_REFRESH_MS plus the heartbeat grace: by then every instance has
 * either loaded the generation or expired, so only an instance that beats but cannot reload (its
 * master key cannot unwrap the ring, say) makes the wait time out.
 */
export const DEFAULT_INSTANCE_WAIT_MS = 2 * 300_000 + HEARTBEAT_GRACE_MS;

export interface KeyManagerDeps {
  readonly knex: Knex;
  readonly ring: KeyRing;
  readonly masterKey: MasterKeySource;
  readonly registry: readonly EncryptedFieldSet[];
  /** The mTLS client CA's generation and seals (src/mtls/client-ca-hooks.ts). */
  readonly clientCa: ClientCaHooks;
  readonly policy: KeyPolicy;
  readonly actor: KeyActor;
  /**
   * The operator's clock: what inventory and cryptoperiod reports are computed against. Key-state
   * stamps (`activated_at`, `retired_at`, `destroyed_at`, the master key's `at`) and this manager's
   * audit entries take the database's clock instead, as dual control does: an operator's clock (or
   * `faketime`) must not post-date an activation to hide an overdue key or shorten a settle wait.
   */
  readonly now?: () => Date;
  readonly sleep?: (ms: number) => Promise<void>;
  /** Told which instances an operation waits for, and for how long. */
  readonly onWait?: (message: string) => void;
}

export interface KeyVersionInfo {
  readonly purpose: KeyPurpose;
  readonly version: number;
  readonly state: KeyState;
  readonly algorithm: string;
  readonly strengthBits: number;
  readonly kekId: string;
  readonly createdAt: Date;
  readonly publishedAt: Date | null;
  readonly activatedAt: Date | null;
  readonly retiredAt: Date | null;
  readonly destroyedAt: Date | null;
  readonly cryptoperiodDays: number;
  /** End of the cryptoperiod (published / active versions only: others no longer protect new data). */
  readonly expiresAt: Date | null;
  readonly daysLeft: number | null;
  readonly overdue: boolean;
  /** Rows protected, per field set. */
  readonly rows: Readonly<Record<string, number>>;
  readonly rowsTotal: number;
  readonly publicKeyPem: string | null;
}

export interface RotationPlan {
  readonly purpose: KeyPurpose;
  readonly fromVersion: number | undefined;
  readonly toVersion: number;
  /** A version already published by an interrupted rotation: --apply only activates it. */
  readonly resumes: boolean;
  readonly rowsToReencrypt: Readonly<Record<string, number>>;
  readonly steps: readonly string[];
}

export interface MasterRotationPlan {
  readonly currentKekId: string;
  /** Data keys wrapped by another master key: what --apply rewraps. */
  readonly keys: readonly { readonly purpose: KeyPurpose; readonly version: number; readonly kekId: string }[];
  readonly steps: readonly string[];
}

export interface RetirePlan {
  readonly purpose: KeyPurpose;
  readonly version: number;
  readonly state: KeyState;
  /** The generation every live instance must have loaded first (the version stopped being writable). */
  readonly generation: number;
  /** Live instances that have not loaded it yet: --apply waits for them. */
  readonly instancesBehind: readonly LiveInstance[];
  readonly rowsUnder: Readonly<Record<string, number>>;
  readonly refusal: string | undefined;
  readonly steps: readonly string[];
}

export class KeyManager {
  private readonly now: () => Date;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(private readonly deps: KeyManagerDeps) {
    this.now = deps.now ?? (() => new Date());
    this.sleep = deps.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
  }

  /** Every key version with its cryptoperiod and the rows it protects (PCI DSS 3.6.1.1). */
  async inventory(db: Knex | Knex.Transaction = this.deps.knex): Promise<KeyVersionInfo[]> {
    const rows = await allKeyVersions(db);
    const counts = new Map<string, Map<number, number>>();
    for (const set of this.deps.registry) counts.set(set.name, await set.countByVersion(db));
    const now = this.now();
    return rows.map((row) => {
      const rowsBySet: Record<string, number> = {};
      for (const set of fieldSetsFor(row.purpose, this.deps.registry)) {
        rowsBySet[set.name] = counts.get(set.name)?.get(row.version) ?? 0;
      }
      const period = periodOf(row, this.deps.policy.cryptoperiodDays);
      const left = daysLeft(period, now);
      return {
        purpose: row.purpose,
        version: row.version,
        state: row.state,
        algorithm: row.algorithm,
        strengthBits: row.strength_bits,
        kekId: row.kek_id,
        createdAt: row.created_at,
        publishedAt: row.published_at,
        activatedAt: row.activated_at,
        retiredAt: row.retired_at,
        destroyedAt: row.destroyed_at,
        cryptoperiodDays: period.cryptoperiodDays,
        expiresAt: period.expiresAt,
        daysLeft: left,
        overdue: isOverdue(period, now),
        rows: rowsBySet,
        rowsTotal: Object.values(rowsBySet).reduce((a, b) => a + b, 0),
        publicKeyPem: row.public_key_pem,
      };
    });
  }

  async planRotation(purpose: KeyPurpose): Promise<RotationPlan> {
    const rows = await keyVersionsOf(this.deps.knex, purpose);
    const active = rows.find((r) => r.state === 'active');
    const published = rows.find((r) => r.state === 'published');
    const toVersion = published?.version ?? (rows.at(-1)?.version ?? 0) + 1;
    const rowsToReencrypt: Record<string, number> = {};
    for (const set of fieldSetsFor(purpose, this.deps.registry)) {
      let n = 0;
      for (const [version, count] of await set.countByVersion(this.deps.knex)) if (version < toVersion) n += count;
      rowsToReencrypt[set.name] = n;
    }
    const spec = KEY_SPECS[purpose];
    const from = active?.version;
    const waitSeconds = Math.ceil((this.deps.policy.instanceWaitMs ?? DEFAULT_INSTANCE_WAIT_MS) / 1000);
    const total = Object.values(rowsToReencrypt).reduce((a, b) => a + b, 0);
    const ca = purpose === 'mtls-client-ca';
    const steps = [
      published !== undefined
        ? `resume: ${purpose} v${toVersion} is already published by an interrupted rotation`
        : ca
          ? `create ${purpose} v${toVersion}: ${spec.algorithm} key from the operating system CSPRNG and its ` +
            `self-signed CA certificate, the key wrapped (AES-256-GCM) by master key ${this.deps.masterKey.keyId}, ` +
            'state published: every instance trusts certificates it signs, nothing is signed with it yet'
          : `create ${purpose} v${toVersion}: ${spec.algorithm}, ${spec.strengthBits}-bit, 32 bytes from the ` +
            `operating system CSPRNG, wrapped (AES-256-GCM) by master key ${this.deps.masterKey.keyId}, state ` +
            `published: every instance loads it and can ${purpose === 'audit-signing' ? 'verify with it' : 'decrypt and look up under it'}, nothing is written under it yet`,
      `wait until every live instance has loaded it (its heartbeat reports the key-ring generation; ` +
        `stopped instances expire and are not waited for; refused after ${waitSeconds} s)`,
      `activate v${toVersion} for new ${purpose === 'identifier-mac' ? 'fingerprints' : purpose === 'audit-signing' ? 'signatures' : ca ? 'client certificates' : 'encryptions'}` +
        (from === undefined
          ? ''
          : `; v${from} becomes decrypt-only (still ${purpose === 'audit-signing' ? 'verifies' : ca ? 'trusted: its client certificates keep working' : 'decrypts and matches lookups'})`),
      ...(purpose === 'audit-signing'
        ? []
        : ca
          ? [
              `then: reissue each client certificate under v${toVersion} (keys mtls issue) and revoke the old one ` +
                `(keys mtls revoke); ${total} live certificate(s) were issued under older versions`,
            ]
          : [
              `then: keys reencrypt --purpose ${purpose} moves ${total} row(s) to v${toVersion} (` +
                Object.entries(rowsToReencrypt)
                  .map(([k, v]) => `${k}: ${v}`)
                  .join(', ') +
                ')',
            ]),
      ...(from === undefined
        ? []
        : [
            `then: keys retire --purpose ${purpose} --version ${from} once zero ${ca ? 'live certificates' : 'rows'} remain`,
          ]),
      this.deps.policy.singleOperator
        ? 'authorisation: single-operator mode (development only)'
        : `authorisation: a request approved by two distinct custodians (keys request rotate --purpose ${purpose})`,
    ];
    return { purpose, fromVersion: from, toVersion, resumes: published !== undefined, rowsToReencrypt, steps };
  }

  /** Two-phase rotation: publish, wait for every instance, activate. */
  async rotate(
    purpose: KeyPurpose,
    requestId: string | undefined,
    onPhase: (message: string) => void = () => undefined,
  ): Promise<{ version: number; previous: number | undefined; authorisation: Authorisation | undefined }> {
    const plan = await this.planRotation(purpose);
    const resource = `key:${purpose}:v${plan.toVersion}`;
    let authorisation: Authorisation | undefined;
    if (!plan.resumes) {
      authorisation = await this.guarded('key.rotate', resource, async (trx) => {
        await lockKeyStates(trx);
        if ((await latestVersion(trx, purpose)) + 1 !== plan.toVersion) {
          throw new AppError('KEY_OPERATION_INVALID', { detail: 'Another rotation ran meanwhile: plan again.' });
        }
        const auth = await this.authorise(trx, 'rotate', { purpose, toVersion: plan.toVersion }, requestId);
        await insertNewKey(
          trx,
          this.deps.masterKey,
          purpose,
          plan.toVersion,
          'published',
          this.deps.actor,
          this.deps.policy.cryptoperiodDays[purpose],
          this.deps.clientCa,
        );
        await this.audit(trx, 'key.published', resource, {
          previousVersion: plan.fromVersion ?? null,
          ...authorisationDetails(auth),
        });
        return auth;
      });
      onPhase(`published ${purpose} v${plan.toVersion}`);
    } else {
      // Only a publication that was authorised, of a version never in use (key-publication.ts).
      await this.guarded('key.rotate', resource, (trx) =>
        assertResumable(trx, {
          purpose,
          version: plan.toVersion,
          production: this.deps.policy.production,
          masterKey: this.deps.masterKey,
        }),
      );
      onPhase(`resuming: ${purpose} v${plan.toVersion} was already published`);
    }
    const published = await this.stateGeneration(purpose, plan.toVersion);
    onPhase(
      `waiting for every live instance to load generation ${published} (${purpose} v${plan.toVersion} published)`,
    );
    await this.awaitInstances('key.rotate', resource, published, onPhase);
    await this.deps.knex.transaction(async (trx) => {
      await lockKeyStates(trx);
      if ((await keyStateOf(trx, purpose, plan.toVersion)) !== 'published')
        throw new AppError('KEY_OPERATION_INVALID', { detail: 'The new version is no longer published.' });
      await activateVersion(trx, purpose, plan.toVersion, await databaseNow(trx));
      await bumpGeneration(trx, [
        ...(plan.fromVersion === undefined ? [] : [{ purpose, version: plan.fromVersion }]),
        { purpose, version: plan.toVersion },
      ]);
      await this.audit(trx, 'key.activated', resource, {
        previousVersion: plan.fromVersion ?? null,
        previousState: plan.fromVersion === undefined ? null : 'decrypt-only',
        resumed: plan.resumes,
      });
    });
    onPhase(`activated ${purpose} v${plan.toVersion}`);
    await this.deps.ring.reload();
    return { version: plan.toVersion, previous: plan.fromVersion, authorisation };
  }

  /**
   * Master-key rotation: the data keys still wrapped by another master key than the current one.
   * Decided by trying the current key alone on each, not by `kek_id`: an insider with write access
   * could set kek_id to the current key on rows still under the old one, and a plan trusting it would
   * say "nothing left" and let the operator remove (destroy) the old key, stranding those data keys.
   */
  async planMasterRotation(db: Knex | Knex.Transaction = this.deps.knex): Promise<MasterRotationPlan> {
    const current = this.deps.masterKey.keyId;
    const currentOnly = currentMasterKey(this.deps.masterKey);
    const all = await wrappedKeys(db);
    const rows: typeof all = [];
    const mislabelled: string[] = [];
    for (const row of all) {
      if (row.kek_id !== current) {
        rows.push(row);
        continue;
      }
      try {
        (await currentOnly.unwrap(Buffer.from(row.wrapped_key), wrappingAad(row.purpose, row.version))).fill(0);
      } catch (error) {
        if (isMasterKeyUnavailable(error)) throw error;
        rows.push(row);
        mislabelled.push(`${row.purpose} v${row.version}`);
      }
    }
    const keys = rows.map((r) => ({
      purpose: r.purpose,
      version: r.version,
      kekId: mislabelled.includes(`${r.purpose} v${r.version}`) ? `mislabelled:${r.kek_id}` : r.kek_id,
    }));
    const steps =
      keys.length === 0
        ? [
            `every data key is already wrapped by the current master key ${current}`,
            'to rotate it: generate a new key, configure every instance and this CLI with MASTER_KEY=<new> and ' +
              'MASTER_KEY_PREVIOUS=<old>, restart them, then run this again',
          ]
        : [
            `unwrap ${keys.length} data key(s) wrapped by ${[...new Set(keys.map((k) => k.kekId))].join(', ')} ` +
              '(with MASTER_KEY_PREVIOUS) and wrap them again with the current master key ' +
              `${current}, in one transaction: ${keys.map((k) => `${k.purpose} v${k.version}`).join(', ')}`,
            'record the previous master key(s) as retired in master_keys; every instance reloads its key ring',
            'then remove MASTER_KEY_PREVIOUS from every instance and destroy the old master key in its store',
            this.deps.policy.singleOperator
              ? 'authorisation: single-operator mode (development only)'
              : 'authorisation: a request approved by two distinct custodians (keys request rotate --purpose master)',
          ];
    const warning =
      mislabelled.length === 0
        ? []
        : [
            `WARNING: kek_id names the current master key but it does not open them: ${mislabelled.join(', ')} ` +
              '(altered rows: investigate); they are rewrapped like the others',
          ];
    return { currentKekId: current, keys, steps: [...warning, ...steps] };
  }

  /** Rewraps every data key under the current master key (envelope encryption: data is untouched). */
  async rotateMaster(requestId: string | undefined): Promise<MasterRotationPlan> {
    return this.guarded('key.rotate', 'master-key', async (trx) => {
      await lockKeyStates(trx);
      const plan = await this.planMasterRotation(trx);
      if (plan.keys.length === 0) {
        throw new AppError('KEY_OPERATION_INVALID', { detail: plan.steps.join('; ') });
      }
      const auth = await this.authorise(trx, 'rotate', { purpose: 'master' }, requestId);
      const { rewrapped, auditChainKeys, referenceKeys } = await rewrapUnder(
        trx,
        this.deps.masterKey,
        plan.keys,
        this.deps.clientCa,
        {
          kekId: plan.currentKekId,
          description: this.deps.masterKey.description,
        },
      );
      await this.audit(trx, 'master-key.rotated', `master-key:${plan.currentKekId}`, {
        rewrapped,
        auditChainKeys,
        referenceKeys,
        ...authorisationDetails(auth),
      });
      return plan;
    });
  }

  async planRetire(
    purpose: KeyPurpose,
    version: number,
    db: Knex | Knex.Transaction = this.deps.knex,
  ): Promise<RetirePlan> {
    const row = await keyVersion(db, purpose, version);
    if (row === undefined) throw new AppError('KEY_NOT_FOUND');
    const rowsUnder = await this.rowsUnder(db, purpose, version);
    const inUse = Object.values(rowsUnder).some((n) => n > 0);
    const generation = row.state_generation === null ? await currentGeneration(db) : Number(row.state_generation);
    const instancesBehind = (await liveInstances(db)).filter((i) => i.generation < generation);
    let refusal: string | undefined;
    if (row.state !== 'decrypt-only')
      refusal = `v${version} is ${row.state}: only a decrypt-only version can be retired`;
    else if (inUse) refusal = `rows are still protected by v${version}: run keys reencrypt --purpose ${purpose} first`;
    return {
      purpose,
      version,
      state: row.state,
      generation,
      instancesBehind,
      rowsUnder,
      refusal,
      steps: [
        `wait until every live instance has loaded generation ${generation} (v${version} stopped being writable): ` +
          (instancesBehind.length === 0 ? 'all have' : `${instancesBehind.length} instance(s) have not yet`),
        `prove with a count per field set that no row is protected by ${purpose} v${version} (the counts go into the audit trail)`,
        `set v${version} to retired: no instance loads it again, nothing can be decrypted or matched under it`,
        'authorisation: ' +
          (this.deps.policy.singleOperator ? 'single-operator mode (development only)' : 'two custodian approvals'),
      ],
    };
  }

  async retire(
    purpose: KeyPurpose,
    version: number,
    requestId: string | undefined,
    onPhase: (message: string) => void = () => undefined,
  ): Promise<RetirePlan> {
    const resource = `key:${purpose}:v${version}`;
    const before = await this.planRetire(purpose, version);
    // Only worth waiting for when the version could be retired at all; the transaction re-checks.
    if (before.refusal === undefined) await this.awaitInstances('key.retire', resource, before.generation, onPhase);
    return this.guarded('key.retire', resource, async (trx) => {
      await lockKeyStates(trx);
      await lockKeyVersion(trx, purpose, version);
      const plan = await this.planRetire(purpose, version, trx);
      if (plan.refusal !== undefined) {
        throw new AppError(
          plan.state === 'decrypt-only' && Object.values(plan.rowsUnder).some((n) => n > 0)
            ? 'KEY_VERSION_IN_USE'
            : 'KEY_OPERATION_INVALID',
          {
            detail: plan.refusal,
            extensions: { rowsUnder: plan.rowsUnder },
          },
        );
      }
      const auth = await this.authorise(trx, 'retire', { purpose, version }, requestId);
      await retireVersion(trx, purpose, version, await databaseNow(trx));
      await bumpGeneration(trx, [{ purpose, version }]);
      await this.audit(trx, 'key.retired', `key:${purpose}:v${version}`, {
        proof: { rowsUnderVersion: plan.rowsUnder, query: proofQueryDescription(purpose, version, this.deps.registry) },
        ...authorisationDetails(auth),
      });
      return plan;
    });
  }

  /** Wipes the wrapped material of a retired version. Irreversible. */
  async destroy(
    purpose: KeyPurpose,
    version: number,
    requestId: string | undefined,
    onPhase: (message: string) => void = () => undefined,
  ): Promise<void> {
    const resource = `key:${purpose}:v${version}`;
    const current = await keyStateOf(this.deps.knex, purpose, version);
    // Every live instance has unloaded it (it was retired in that generation) before its material goes.
    if (current === 'retired') {
      await this.awaitInstances('key.destroy', resource, await this.stateGeneration(purpose, version), onPhase);
    }
    await this.guarded('key.destroy', resource, async (trx) => {
      await lockKeyStates(trx);
      const row: DataKeyRecord | undefined = await keyVersion(trx, purpose, version, 'for-update');
      if (row === undefined) throw new AppError('KEY_NOT_FOUND');
      if (row.state !== 'retired') {
        throw new AppError('KEY_OPERATION_INVALID', {
          detail: `v${version} is ${row.state}: only a retired version can be destroyed`,
        });
      }
      const rowsUnder = await this.rowsUnder(trx, purpose, version);
      if (Object.values(rowsUnder).some((n) => n > 0)) {
        throw new AppError('KEY_VERSION_IN_USE', { extensions: { rowsUnder } });
      }
      // Irreversible: dual control even in single-operator (development) mode.
      const auth = await authorise(trx, {
        operation: 'destroy',
        params: { purpose, version },
        requestId,
        singleOperator: false,
        production: this.deps.policy.production,
        masterKey: this.deps.masterKey,
        actor: this.deps.actor,
      });
      await destroyVersion(trx, purpose, version, await databaseNow(trx));
      await bumpGeneration(trx, [{ purpose, version }]);
      await this.audit(trx, 'key.destroyed', `key:${purpose}:v${version}`, {
        irreversible: true,
        proof: { rowsUnderVersion: rowsUnder },
        ...authorisationDetails(auth),
      });
    });
  }

  private async rowsUnder(
    db: Knex | Knex.Transaction,
    purpose: KeyPurpose,
    version: number,
  ): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const set of fieldSetsFor(purpose, this.deps.registry))
      out[set.name] = (await set.countByVersion(db)).get(version) ?? 0;
    return out;
  }

  /** The generation in which a version's state last changed (the current one for older rows). */
  private async stateGeneration(purpose: KeyPurpose, version: number): Promise<number> {
    const stateGeneration = await stateGenerationOf(this.deps.knex, purpose, version);
    return stateGeneration === null || stateGeneration === undefined
      ? currentGeneration(this.deps.knex)
      : Number(stateGeneration);
  }

  /**
   * Waits for every live instance to load `generation` (outside any transaction: on the
   * single-connection PGlite a transaction held while polling would block the poll). A timeout is
   * refused with KEY_INSTANCES_BEHIND and audited (outcome denied).
   */
  private async awaitInstances(
    action: string,
    resource: string,
    generation: number,
    onPhase: (message: string) => void,
  ): Promise<void> {
    try {
      await waitForInstances(this.deps.knex, generation, {
        timeoutMs: this.deps.policy.instanceWaitMs ?? DEFAULT_INSTANCE_WAIT_MS,
        onWait: (message) => {
          onPhase(message);
          this.deps.onWait?.(message);
        },
        sleep: this.sleep,
      });
    } catch (error) {
      if (isAppError(error)) {
        await this.deps.knex.transaction(async (trx) =>
          appendAuditEvent(
            trx,
            {
              ...this.deps.actor,
              action,
              outcome: 'denied',
              resource,
              details: { code: error.code, reason: error.detail ?? error.title, ...error.extensions },
            },
            await databaseNow(trx),
          ),
        );
      }
      throw error;
    }
  }

  private authorise(
    trx: Knex.Transaction,
    operation: KeyOperation,
    params: Record<string, string | number>,
    requestId: string | undefined,
  ): Promise<Authorisation> {
    return authorise(trx, {
      operation,
      params,
      requestId,
      singleOperator: this.deps.policy.singleOperator,
      production: this.deps.policy.production,
      masterKey: this.deps.masterKey,
      actor: this.deps.actor,
    });
  }

  private async audit(trx: Knex.Transaction, action: string, resource: string, details: Record<string, unknown>) {
    const at = await databaseNow(trx);
    return appendAuditEvent(trx, { ...this.deps.actor, action, outcome: 'success', resource, details }, at);
  }

  /** Runs a write; on a refusal, records it (outcome denied) in a transaction of its own. */
  private guarded<T>(action: string, resource: string, fn: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
    return auditedWrite(this.deps.knex, this.deps.actor, { action, resource }, fn, databaseNow);
  }
}

function proofQueryDescription(purpose: KeyPurpose, version: number, registry: readonly EncryptedFieldSet[]): string {
  const sets = fieldSetsFor(purpose, registry).map((s) => s.name);
  return sets.length === 0
    ? `${purpose} protects no stored rows`
    : `count(*) grouped by key version in ${sets.join(', ')}; version ${version} absent`;
}

export function isPurpose(value: string): value is KeyPurpose {
  return (KEY_PURPOSES as string[]).includes(value);
}
