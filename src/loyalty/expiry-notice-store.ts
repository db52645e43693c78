/**
 * SQL of expiry notices: one statement claims the notices due (lots with points left that expire
 * within a window, not noticed yet for that window and expiry date) by inserting their rows. The
 * primary key (lot, window, expiry date) makes each notice exactly once: a concurrent run on another
 * instance waits on the rows this one inserted and then skips them.
 */
import type { Knex } from 'knex';

export interface NoticeRow {
  readonly lot_id: string;
  readonly notice_days: number;
  readonly expires_at: Date;
  readonly shopper_ref: string;
  readonly points: number;
  readonly payment_id: string | null;
  readonly adjustment_id: string | null;
}

/** Claims up to `limit` notices of one window due at `now` (soonest expiry first); the claimed ones. */
export async function claimDueNotices(
  trx: Knex.Transaction,
  noticeDays: number,
  now: Date,
  limit: number,
): Promise<NoticeRow[]> {
  const horizon = new Date(now.getTime() + noticeDays * 86_400_000);
  const result = (await trx.raw(
    `with due as (
       select l.id, l.shopper_ref, l.remaining, l.expires_at, l.payment_id, l.adjustment_id
         from loyalty_lots l
        where l.remaining > 0 and l.expires_at > ? and l.expires_at <= ?
          and not exists (select 1 from loyalty_expiry_notices n
                           where n.lot_id = l.id and n.notice_days = ? and n.expires_at = l.expires_at)
        order by l.expires_at, l.id
        limit ?),
     claimed as (
       insert into loyalty_expiry_notices (lot_id, notice_days, expires_at, shopper_ref, points, created_at)
       select id, ?, expires_at, shopper_ref, remaining, ? from due
       on conflict do nothing
       returning lot_id, notice_days, expires_at, shopper_ref, points)
     select c.*, d.payment_id, d.adjustment_id from claimed c join due d on d.id = c.lot_id`,
    [now, horizon, noticeDays, limit, noticeDays, now],
  )) as { rows: NoticeRow[] };
  return result.rows.map((r) => ({ ...r, points: Number(r.points), expires_at: new Date(r.expires_at) }));
}
