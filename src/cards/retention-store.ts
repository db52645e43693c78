/**
 * SQL of card-data retention (retention-service.ts): the cards still holding a PAN, their purge, the
 * runs' serialisation and their append-only evidence rows (`card_retention_runs`).
 */
import type { Knex } from 'knex';

type Db = Knex | Knex.Transaction;

export interface PanCardRow {
  token: string;
  updated_at: Date;
  /** The last successful detokenisation or tokenise hit (written at most once a day). */
  last_used_at: Date | null;
}

/** The next `limit` cards holding a PAN ciphertext after `after` (token order): their own last change. */
export async function cardsWithPan(db: Db, after: string, limit: number): Promise<PanCardRow[]> {
  return (await db('cards')
    .whereNotNull('pan_ciphertext')
    .andWhere('token', '>', after)
    .orderBy('token')
    .limit(limit)
    .select('token', 'updated_at', 'last_used_at')) as PanCardRow[];
}

/**
 * Purges the PAN ciphertext of these cards, each only while it still holds one and has not changed
 * since `cutoff` (a card presented meanwhile keeps it). Returns the tokens purged.
 */
export async function purgePans(
  trx: Knex.Transaction,
  tokens: readonly string[],
  cutoff: Date,
  now: Date,
): Promise<string[]> {
  if (tokens.length === 0) return [];
  const rows = (await trx('cards')
    .whereIn('token', tokens)
    .whereNotNull('pan_ciphertext')
    .andWhere('updated_at', '<', cutoff)
    .andWhere((q) => q.whereNull('last_used_at').orWhere('last_used_at', '<', cutoff))
    .update({
      pan_ciphertext: null,
      pan_key_version: null,
      pan_purged_at: now,
      row_version: trx.raw('row_version + 1'),
    })
    .returning('token')) as { token: string }[];
  return rows.map((r) => r.token);
}

/** Deletes the PAN fingerprints of these cards (the policy keeps none); how many went. */
export async function dropPanFingerprints(trx: Knex.Transaction, tokens: readonly string[]): Promise<number> {
  if (tokens.length === 0) return 0;
  const result = (await trx.raw(
    `delete from identifier_fingerprints f using card_identifiers i
     where i.id = f.identifier_id and i.kind = 'pan' and f.token = any(?::text[])`,
    [[...tokens]],
  )) as { rowCount?: number; affectedRows?: number };
  return result.rowCount ?? result.affectedRows ?? 0;
}

/** Cards whose PAN was purged, ever (from the append-only purge list: it never decreases). */
export async function countPurged(db: Db): Promise<number> {
  const row = (await db('card_retention_purges').countDistinct<{ n: string | number }[]>('token as n').first()) as
    { n: string | number } | undefined;
  return Number(row?.n ?? 0);
}

/** Lists the cards a run purged (append-only; its audit entry commits to the list). */
export async function recordPurges(trx: Knex.Transaction, runKey: string, tokens: readonly string[], now: Date) {
  for (let i = 0; i < tokens.length; i += 500) {
    await trx('card_retention_purges').insert(
      tokens.slice(i, i + 500).map((token) => ({ run_key: runKey, token, purged_at: now })),
    );
  }
}

/** The tokens a run listed as purged, sorted. */
export async function purgedTokensOf(db: Db, runKey: string): Promise<string[]> {
  const rows = (await db('card_retention_purges').where({ run_key: runKey }).orderBy('token').select('token')) as {
    token: string;
  }[];
  return rows.map((r) => r.token);
}

/** When this card was last listed as purged; undefined if never. */
export async function lastListedPurge(db: Db, token: string): Promise<Date | undefined> {
  const row = (await db('card_retention_purges')
    .where({ token })
    .max<{ at: Date | null }[]>('purged_at as at')
    .first()) as { at: Date | null } | undefined;
  return row?.at ?? undefined;
}

/** Listed purged cards that hold a PAN again (or lost their purge mark): each with its last listed purge. */
export async function listedPurgesHoldingPan(db: Db): Promise<{ token: string; purged_at: Date }[]> {
  return (await db('card_retention_purges as p')
    .join('cards as c', 'c.token', 'p.token')
    .where((q) => q.whereNotNull('c.pan_ciphertext').orWhereNull('c.pan_purged_at'))
    .groupBy('p.token')
    .orderBy('p.token')
    .select('p.token')
    .max('p.purged_at as purged_at')) as { token: string; purged_at: Date }[];
}

/** Every recorded run, oldest first. */
export async function allRetentionRuns(db: Db): Promise<RetentionRunRow[]> {
  return (await db('card_retention_runs').orderBy('ran_at').orderBy('run_key').select()) as RetentionRunRow[];
}

/** Run keys recorded as re-runs of `runKey` (its recorded run had no intact audit entry). */
export async function rerunKeysOf(db: Db, runKey: string): Promise<string[]> {
  const rows = (await db('card_retention_runs').where('run_key', 'like', `${runKey}:rerun:%`).select('run_key')) as {
    run_key: string;
  }[];
  return rows.map((r) => r.run_key);
}

/** Records a use of the card (a detokenisation, a tokenise hit), at most once a day: a cheap no-op otherwise. */
/** Whether a card read with this `last_used_at` needs its use marked: no write at all within a day. */
export function useMarkDue(lastUsedAt: Date | null | undefined, now: Date): boolean {
  return lastUsedAt == null || new Date(lastUsedAt).getTime() < now.getTime() - 86_400_000;
}

export async function markCardUsed(db: Db, token: string, now: Date): Promise<void> {
  await db('cards')
    .where({ token })
    .andWhere((q) => q.whereNull('last_used_at').orWhere('last_used_at', '<', new Date(now.getTime() - 86_400_000)))
    .update({ last_used_at: now });
}

/**
 * Serialises retention runs across every instance and CLI until the caller's transaction ends, and
 * says whether a run under this key is recorded already (a scheduled run per UTC day).
 */
export async function lockRetentionRun(trx: Knex.Transaction, runKey: string): Promise<boolean> {
  await trx.raw(`select pg_advisory_xact_lock(hashtext('loyalty-vault:card-retention'))`);
  const row = (await trx('card_retention_runs').where({ run_key: runKey }).first('run_key')) as unknown;
  return row !== undefined;
}

export interface RetentionRunRow {
  run_key: string;
  mode: 'scheduled' | 'manual';
  retention_days: number;
  cutoff: Date;
  keep_fingerprints: boolean;
  purged: number;
  fingerprints_dropped: number;
  remaining_with_pan: number;
  oldest_remaining_last_used_at: Date | null;
  purged_total: number;
  ran_by: string;
  ran_at: Date;
}

export async function recordRetentionRun(trx: Knex.Transaction, row: RetentionRunRow): Promise<void> {
  await trx('card_retention_runs').insert(row);
}

/** The latest runs, newest first (the auditor's quarterly evidence). */
export async function latestRetentionRuns(db: Db, limit: number): Promise<RetentionRunRow[]> {
  return (await db('card_retention_runs').orderBy('ran_at', 'desc').limit(limit).select()) as RetentionRunRow[];
}
