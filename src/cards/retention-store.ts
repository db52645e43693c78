/**
 * SQL of card-data retention (retention-service.ts): the cards still holding a PAN, their purge, the
 * runs' serialisation and their append-only evidence rows (`card_retention_runs`).
 */
import type { Knex } from 'knex';

type Db = Knex | Knex.Transaction;

export interface PanCardRow {
  token: string;
  updated_at: Date;
}

/** The next `limit` cards holding a PAN ciphertext after `after` (token order): their own last change. */
export async function cardsWithPan(db: Db, after: string, limit: number): Promise<PanCardRow[]> {
  return (await db('cards')
    .whereNotNull('pan_ciphertext')
    .andWhere('token', '>', after)
    .orderBy('token')
    .limit(limit)
    .select('token', 'updated_at')) as PanCardRow[];
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

/** Cards whose PAN was purged, ever. */
export async function countPurged(db: Db): Promise<number> {
  const row = (await db('cards').whereNotNull('pan_purged_at').count<{ n: string | number }[]>('* as n').first()) as
    { n: string | number } | undefined;
  return Number(row?.n ?? 0);
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
