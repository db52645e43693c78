/**
 * Rotating the master key INTO the shares source (`keys rotate --purpose master --to shares`), from
 * any source the key CLI holds now (env, file, PKCS#11, or shares of an older key): Vault's rekey.
 *
 * One transaction, authorised by one `rotate` request two custodians approved, whose parameters name
 * the destination, the threshold and the exact holders ({purpose: master, to: shares, threshold,
 * holders}): a plain `rotate --purpose master` request, or a `split-master-key` one, does not match
 * (KEY_REQUEST_MISMATCH), and without a request it is DUAL_CONTROL_REQUIRED (single-operator mode,
 * development only, as every rotation). In it:
 *
 * 1. a fresh 256-bit master key is drawn from the operating system CSPRNG into this process's memory;
 * 2. every data key, mTLS seal, audit-chain key, custodian seal and the dual-control ledger head is
 *    unwrapped by the current key and wrapped again by the fresh one (master-rewrap.ts);
 * 3. the fresh key is split M-of-N among the named custodians, each share encrypted to its holder and
 *    written to a 0600 file, the split record sealed by the fresh key, the previous split superseded
 *    (key-shares.ts `splitWithin`, the same code as `keys shares split`);
 * 4. both are audited (`master-key.rotated` with `to: shares` and the split id, `master-key.split`),
 *    with the custodians' approvals.
 *
 * The fresh key is never written anywhere in clear, never printed and never leaves the process other
 * than as the encrypted shares; its bytes are overwritten when the command ends, whatever happens. A
 * failure midway (the old token away, a refused approval, a full disk) rolls everything back: the old
 * key still opens everything, no split record names the files written so far (the service refuses
 * them), the request is still pending; the command is run again and draws another key. Once it has
 * committed the old source is no longer needed: instances start with MASTER_KEY_SOURCE=shares and the
 * new MASTER_KEY_SHARES_KEY_ID and are unsealed by the custodians.
 */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { chainKeysFor } from '../audit/audit-chain-keys.js';
import { appendAuditEvent, auditedWrite } from '../audit/audit-log.js';
import { databaseNow } from '../db/database-clock.js';
import { AppError } from '../errors/app-error.js';
import type { ClientCaHooks } from './client-ca.js';
import { authorisationDetails, authorise } from './dual-control.js';
import { splitParams, splitWithin, type SplitResult } from './key-shares.js';
import { lockKeyStates, type KeyActor } from './key-ring.js';
import { wrappedKeys } from './key-version-store.js';
import { MasterKeySet } from './master-key-source.js';
import { LocalMasterKey } from './master-key-sources/local.js';
import type { MasterKeySource } from './master-key-types.js';
import { rewrapUnder, type RewrapResult } from './master-rewrap.js';
import type { RequestParams } from './request-payload.js';

export const SHARES_DESCRIPTION = 'M-of-N key shares held by the custodians (MASTER_KEY_SOURCE=shares)';

export interface ToSharesDeps {
  readonly knex: Knex;
  /** The master key the CLI holds now (the rotation's source). */
  readonly masterKey: MasterKeySource;
  readonly clientCa: ClientCaHooks;
  readonly actor: KeyActor;
  readonly singleOperator: boolean;
  readonly production: boolean;
}

export interface ToSharesInput {
  readonly threshold: number;
  /** The holders' key thumbprints (verified register). */
  readonly thumbprints: readonly string[];
  readonly requestId: string | undefined;
  readonly outDir: string;
}

/** What the request names and the command must be run with: no key id (the key does not exist yet). */
export function toSharesParams(input: { threshold: number; thumbprints: readonly string[] }): RequestParams {
  const { threshold, holders } = splitParams({ ...input, kekId: '' });
  return { purpose: 'master', to: 'shares', threshold: threshold!, holders: holders! };
}

export async function planToShares(
  db: Knex,
  from: MasterKeySource,
  split: { threshold: number; names: readonly string[] },
  singleOperator: boolean,
): Promise<string[]> {
  const keys = await wrappedKeys(db);
  return [
    'draw a fresh 256-bit master key from the operating system CSPRNG, in this process only (never written in clear)',
    `unwrap ${keys.length} data key(s) with the current master key ${from.keyId} and wrap them with the fresh one, ` +
      'with the mTLS seals, the audit-chain keys, the custodian register and the dual-control ledger, in one transaction',
    `split the fresh key ${split.threshold}-of-${split.names.length} among ${split.names.join(', ')}: one share ` +
      'file per custodian, encrypted to their key (mode 0600); the split supersedes any earlier one',
    'record the fresh key as the current master key (the old one retired) and forget it: it exists only as the shares',
    'then: restart every instance with MASTER_KEY_SOURCE=shares and the MASTER_KEY_SHARES_KEY_ID this prints; ' +
      'M custodians unseal each (keys unseal); the old source is no longer needed (destroy it per its procedure)',
    singleOperator
      ? 'authorisation: single-operator mode (development only)'
      : 'authorisation: a request approved by two distinct custodians (keys request rotate --purpose master --to shares …)',
  ];
}

export async function rotateToShares(
  deps: ToSharesDeps,
  input: ToSharesInput,
): Promise<{ kekId: string; split: SplitResult; rewrap: RewrapResult }> {
  const material = randomBytes(32);
  const fresh = new LocalMasterKey(material, SHARES_DESCRIPTION, { source: 'shares', where: SHARES_DESCRIPTION });
  material.fill(0); // the key object owns its own copy, wiped below
  try {
    return await auditedWrite(
      deps.knex,
      deps.actor,
      { action: 'key.rotate', resource: 'master-key' },
      async (trx) => {
        await lockKeyStates(trx);
        const params = toSharesParams(input);
        // Authorised under the key in force: the request names this deployment (its master key id).
        const auth = await authorise(trx, {
          operation: 'rotate',
          params,
          requestId: input.requestId,
          singleOperator: deps.singleOperator,
          production: deps.production,
          masterKey: deps.masterKey,
          actor: deps.actor,
        });
        // The audit-chain key is unwrapped (and cached) by the key in force before it is rewrapped:
        // this transaction's own entries below are MAC'd under it.
        await chainKeysFor(trx).active(trx);
        const keys = new MasterKeySet(fresh, [deps.masterKey]);
        const planned = (await wrappedKeys(trx)).map((r) => ({
          purpose: r.purpose,
          version: r.version,
          kekId: r.kek_id,
        }));
        if (planned.length === 0) throw new AppError('KEY_OPERATION_INVALID', { detail: 'There are no data keys.' });
        const rewrap = await rewrapUnder(trx, keys, planned, deps.clientCa, {
          kekId: fresh.keyId,
          description: SHARES_DESCRIPTION,
        });
        const split = await splitWithin(
          trx,
          fresh,
          { threshold: input.threshold, holders: params, requestId: input.requestId, outDir: input.outDir },
          auth,
          deps.actor,
        );
        await appendAuditEvent(
          trx,
          {
            ...deps.actor,
            action: 'master-key.rotated',
            outcome: 'success',
            resource: `master-key:${fresh.keyId}`,
            details: {
              to: 'shares',
              from: deps.masterKey.keyId,
              splitId: split.split.id,
              threshold: split.split.threshold,
              total: split.split.total,
              rewrapped: rewrap.rewrapped,
              auditChainKeys: rewrap.auditChainKeys,
              referenceKeys: rewrap.referenceKeys,
              ...authorisationDetails(auth),
            },
          },
          await databaseNow(trx),
        );
        return { kekId: fresh.keyId, split, rewrap };
      },
      databaseNow,
    );
  } finally {
    fresh.wipe();
  }
}
