/** What `keys list` and `keys inventory` say about the current master key, read from the database. */
import { activeSplit, verifySplitSeal } from '../keys/key-shares.js';
import { masterKeyCreatedAt } from '../keys/master-key-store.js';
import type { KeysContext } from './keys-context.js';
import { masterKeyInfo, type MasterKeyInfo, type MasterKeySplitInfo } from './keys-report.js';

/** The current master key: where it lives and since when it is the active one (master_keys). */
export async function currentMasterKey(ctx: KeysContext): Promise<MasterKeyInfo> {
  return masterKeyInfo(
    ctx.masterKey,
    await masterKeyCreatedAt(ctx.knex, ctx.masterKey.keyId),
    new Date(),
    await currentSplit(ctx),
  );
}

/** The active split of the current master key into custodians' shares, if there is one. */
async function currentSplit(ctx: KeysContext): Promise<MasterKeySplitInfo | null> {
  const split = await activeSplit(ctx.knex);
  if (split?.kekId !== ctx.masterKey.keyId) return null;
  return {
    id: split.id,
    threshold: split.threshold,
    total: split.total,
    holders: split.holders.map((holder) => holder.name),
    createdAt: new Date(split.createdAt).toISOString(),
    sealVerified: await verifySplitSeal(ctx.masterKey, split).catch(() => false),
  };
}
