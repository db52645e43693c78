/**
 * SQL of the re-encryption backfill's bookkeeping: its progress per field set (`reencrypt_progress`,
 * the resumable cursor) and the rows it could not move (`reencrypt_failures`, by row id and code,
 * never a value). A batch's progress is written in the batch's own transaction (passed in).
 */
import type { Knex } from 'knex';
import type { KeyPurpose } from '../crypto/key-specs.js';
import type { RowFailure } from './field-sets.js';

/** One backfill of one field set towards one target version. */
export interface ProgressKey {
  readonly purpose: KeyPurpose;
  readonly target_version: number;
  readonly field_set: string;
}

export interface ProgressRow {
  state: 'running' | 'completed';
  cursor: string;
  rows_done: number;
  passes: number;
}

/** Marks the backfill running (created on first run) and reads where it stands. */
export async function startProgress(knex: Knex, where: ProgressKey, now: Date): Promise<ProgressRow> {
  await knex('reencrypt_progress')
    .insert({ ...where, state: 'running', cursor: '', rows_done: 0, passes: 0, started_at: now, updated_at: now })
    .onConflict(['purpose', 'target_version', 'field_set'])
    .merge({ state: 'running', updated_at: now });
  return (await knex('reencrypt_progress').where(where).first()) as ProgressRow;
}

/** Starts the next pass from the first row key. */
export async function rewindProgress(knex: Knex, where: ProgressKey): Promise<void> {
  await knex('reencrypt_progress').where(where).update({ cursor: '', updated_at: new Date() });
}

/** Records a batch in its transaction: the cursor no committed batch is behind, and the rows moved. */
export async function advanceProgress(
  trx: Knex.Transaction,
  where: ProgressKey,
  cursor: string,
  moved: number,
): Promise<void> {
  await trx('reencrypt_progress')
    .where(where)
    .update({ cursor, rows_done: trx.raw('rows_done + ?', [moved]), updated_at: new Date() });
}

/** Ends a run: completed when no row is left under an older version, and the passes it took. */
export async function finishProgress(
  knex: Knex,
  where: ProgressKey,
  outcome: { completed: boolean; passes: number },
): Promise<void> {
  await knex('reencrypt_progress')
    .where(where)
    .update({
      state: outcome.completed ? 'completed' : 'running',
      cursor: '',
      passes: knex.raw('passes + ?', [outcome.passes]),
      updated_at: new Date(),
      completed_at: outcome.completed ? new Date() : null,
    });
}

/** Records the rows a batch could not move (a row failing again gets its latest code), in its transaction. */
export async function recordFailures(
  trx: Knex.Transaction,
  where: ProgressKey,
  failures: readonly RowFailure[],
): Promise<void> {
  if (failures.length === 0) return;
  await trx('reencrypt_failures')
    .insert(
      failures.map((f) => ({
        ...where,
        row_id: f.rowId,
        from_version: f.fromVersion,
        error: f.error,
        failed_at: new Date(),
      })),
    )
    .onConflict(['purpose', 'target_version', 'field_set', 'row_id'])
    .merge(['error', 'from_version', 'failed_at']);
}

export async function countFailures(knex: Knex, where: ProgressKey): Promise<number> {
  return Number(((await knex('reencrypt_failures').where(where).count('* as n').first()) as { n: number | string }).n);
}

/** The rows that could not be moved, by row id. */
export async function listFailures(knex: Knex, where: ProgressKey): Promise<RowFailure[]> {
  return (
    (await knex('reencrypt_failures').where(where).orderBy('row_id')) as {
      row_id: string;
      from_version: number;
      error: RowFailure['error'];
    }[]
  ).map((r) => ({ rowId: r.row_id, fromVersion: r.from_version, error: r.error }));
}
