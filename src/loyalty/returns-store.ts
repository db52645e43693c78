/** SQL of till returns (issue 22): the append-only `till_returns` rows. */
import type { Knex } from 'knex';

export interface TillReturnRow {
  readonly id: string;
  readonly payment_id: string;
  readonly shopper_ref: string;
  readonly mode: 'refund' | 'store_credit';
  readonly amount: number;
  readonly currency: string;
  readonly fact_key: string;
  readonly reference: string;
  readonly store_id: string | null;
  readonly created_by: string;
  readonly created_at: Date;
}

export async function insertReturn(trx: Knex.Transaction, row: TillReturnRow): Promise<void> {
  await trx('till_returns').insert(row);
}

/** The return already recorded against this payment under this refund key, if any. */
export async function returnByFactKey(
  trx: Knex.Transaction,
  paymentId: string,
  factKey: string,
): Promise<TillReturnRow | undefined> {
  return (await trx('till_returns').where({ payment_id: paymentId, fact_key: factKey }).first()) as
    TillReturnRow | undefined;
}
