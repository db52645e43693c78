/**
 * The re-wrap at the heart of every master-key rotation, whatever the sources (key-manager.ts's
 * `rotateMaster` to a configured key; master-rotation-shares.ts's rotation into a fresh key split
 * among the custodians): in the caller's transaction, every planned data key is unwrapped by
 * whichever key of `keys` opens it and wrapped again by `keys`' current key, then every other value
 * the master key seals (the mTLS seals, the audit-chain keys, the reference-digest key, the custodian register and the
 * dual-control ledger head), the current key recorded in master_keys and the key-ring generation
 * bumped. Data is untouched (envelope encryption). All or nothing: a failure midway (the old source
 * gone, a token away) rolls everything back and the rotation is simply run again.
 */
import type { Knex } from 'knex';
import { rewrapAuditChainKeys } from '../audit/audit-chain-keys.js';
import { databaseNow } from '../db/database-clock.js';
import type { ClientCaHooks } from './client-ca.js';
import { rewrapDualControlSeals } from './custodians.js';
import { rewrapReferenceKeys } from './reference-digests.js';
import { bumpGeneration, wrappingAad, type KeyPurpose } from './key-ring.js';
import { lockWrappedKeys, setWrapping } from './key-version-store.js';
import { makeMasterKeyCurrent } from './master-key-store.js';
import type { MasterKeySource } from './master-key-types.js';

export interface PlannedKey {
  readonly purpose: KeyPurpose;
  readonly version: number;
  /** The master key the plan found it under (`mislabelled:…` when kek_id lied). */
  readonly kekId: string;
}

export interface RewrapResult {
  readonly rewrapped: readonly { readonly key: string; readonly from: string }[];
  readonly auditChainKeys: readonly number[];
  /** The reference-digest key versions rewrapped (reference-digests.ts): [1] once the key exists. */
  readonly referenceKeys: readonly number[];
}

/**
 * `keys` wraps with its current key and unwraps with any of its keys (a MasterKeySet); `kekId` and
 * `description` name the current key in the rows and in master_keys.
 */
export async function rewrapUnder(
  trx: Knex.Transaction,
  keys: MasterKeySource,
  planned: readonly PlannedKey[],
  clientCa: ClientCaHooks,
  current: { kekId: string; description: string },
): Promise<RewrapResult> {
  const byId = new Map(planned.map((k) => [`${k.purpose}:${k.version}`, k.kekId]));
  const rows = (await lockWrappedKeys(trx)).filter((r) => byId.has(`${r.purpose}:${r.version}`));
  for (const row of rows) {
    const aad = wrappingAad(row.purpose, row.version);
    const material = await keys.unwrap(row.wrapped_key, aad);
    try {
      await setWrapping(trx, row, await keys.wrap(material, aad), current.kekId);
    } finally {
      material.fill(0);
    }
  }
  // The mTLS seals are wrapped by the master key too (src/mtls/seals.ts).
  await clientCa.rewrapSeals(trx, keys);
  const auditChainKeys = await rewrapAuditChainKeys(trx, keys);
  await rewrapDualControlSeals(trx, keys);
  const referenceKeys = await rewrapReferenceKeys(trx, keys);
  await makeMasterKeyCurrent(trx, { ...current, at: await databaseNow(trx) });
  await bumpGeneration(trx);
  return {
    rewrapped: rows.map((r) => ({ key: `${r.purpose}:v${r.version}`, from: byId.get(`${r.purpose}:${r.version}`)! })),
    auditChainKeys,
    referenceKeys,
  };
}
