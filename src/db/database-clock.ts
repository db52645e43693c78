/**
 * The database's clock, for every time that decides something in dual control (a request's creation
 * and expiry, an approval's time, whether a request has expired when it runs).
 *
 * The key CLI runs on the operator's machine, whose clock the operator sets: judged by that clock, an
 * expired request could be made to run again (`faketime`, a changed system time). The database server
 * is shared by every instance and the CLI and is not the operator's process, so its
 * `clock_timestamp()` is the reference. (An insider who also administers the database server can still
 * move its clock; that is outside what the CLI can defend.)
 */
import type { Knex } from 'knex';

export async function databaseNow(db: Knex | Knex.Transaction): Promise<Date> {
  const result = (await db.raw('select clock_timestamp() as now')) as { rows: { now: Date | string }[] };
  const value = result.rows[0]?.now;
  if (value === undefined) throw new Error('the database returned no time');
  const at = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(at.getTime())) throw new Error('the database returned an unreadable time');
  return at;
}
