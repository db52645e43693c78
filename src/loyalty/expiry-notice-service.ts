/**
 * Expiry notices: a `points.expiring` event for every lot with points left that expires within a
 * notice window (`LOYALTY_EXPIRY_NOTICE_DAYS`, e.g. `30,7`: a notice 30 days and another 7 days
 * before), exactly once per lot, window and expiry date. Run by the expiry schedule (and
 * `npm run loyalty -- notify`), on any number of instances at once.
 *
 * Exactly once: the notice row and its event are written by one transaction; the row's primary key
 * refuses a second notice (a concurrent run waits for the first's rows and skips them), and the
 * event's id derives from the same key, so the outbox could not hold it twice either.
 *
 * The windows are service configuration, not programme rules: a notice is a message to the shopper
 * about lots already earned, whatever version earned them, and changing the windows must not need a
 * programme version.
 */
import type { Knex } from 'knex';
import { eventBody, type OutboundEvent } from '../events/event-types.js';
import { writeEvents } from '../events/outbox-store.js';
import { claimDueNotices, type NoticeRow } from './expiry-notice-store.js';

export interface NoticeRun {
  readonly notices: number;
  readonly points: number;
}

export class ExpiryNoticeService {
  constructor(
    private readonly knex: Knex,
    private readonly options: { readonly now: () => Date; readonly noticeDays: readonly number[] },
  ) {}

  /** Sends every notice due now, in batches of `batchSize` (one transaction each). */
  async sendDue(batchSize = 500): Promise<NoticeRun> {
    const now = this.options.now();
    let notices = 0;
    let points = 0;
    for (const days of this.options.noticeDays) {
      for (;;) {
        const claimed = await this.knex.transaction(async (trx) => {
          const rows = await claimDueNotices(trx, days, now, batchSize);
          await writeEvents(
            trx,
            rows.map((r) => noticeEvent(r, now)),
          );
          return rows;
        });
        notices += claimed.length;
        points += claimed.reduce((sum, r) => sum + r.points, 0);
        if (claimed.length < batchSize) break;
      }
    }
    return { notices, points };
  }
}

/** The notice's unique key: lot, window and the expiry date noticed. */
export function noticeKey(row: Pick<NoticeRow, 'lot_id' | 'notice_days' | 'expires_at'>): string {
  return `lot:${row.lot_id}:expiring:${row.notice_days}d:${row.expires_at.toISOString()}`;
}

function noticeEvent(row: NoticeRow, now: Date): OutboundEvent {
  return eventBody(
    'points.expiring',
    noticeKey(row),
    row.shopper_ref,
    {
      lotId: row.lot_id,
      points: row.points,
      expiresAt: row.expires_at.toISOString(),
      noticeDays: row.notice_days,
      ...(row.payment_id === null ? {} : { paymentId: row.payment_id }),
      ...(row.adjustment_id === null ? {} : { adjustmentId: row.adjustment_id }),
    },
    now,
  );
}
