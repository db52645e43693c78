/**
 * SQL of the shared rate-limit windows (`rate_limit_windows`): the statements rate-limiter.ts decides
 * on. Each is one autocommitted statement on the database's clock (the contract is in rate-limiter.ts).
 */
import type { Knex } from 'knex';

export interface WindowCounts {
  readonly current: number;
  readonly previous: number;
  /** Milliseconds since the current window began, on the database's clock. */
  readonly elapsedMs: number;
}

interface WindowRow {
  current: number | string;
  previous: number | string;
  elapsed_ms: number | string;
}

/**
 * One autocommitted statement on the database's clock: prunes `bucket`'s windows older than the
 * previous one, counts one event in the current window (the upsert's row lock makes the count exact
 * across instances) and reads the previous window's count.
 */
export async function bumpWindow(db: Knex, bucket: string, windowSeconds: number): Promise<WindowCounts> {
  const result = (await db.raw(
    `with clock as (
       select clock_timestamp() as now,
              to_timestamp(floor(extract(epoch from clock_timestamp()) / :w) * :w) as start
     ),
     pruned as (
       delete from rate_limit_windows
        where bucket = :bucket and window_start < (select start from clock) - make_interval(secs => :w)
     ),
     bumped as (
       insert into rate_limit_windows (bucket, window_start, count)
       select :bucket, start, 1 from clock
       on conflict (bucket, window_start) do update set count = rate_limit_windows.count + 1
       returning count
     )
     select (select count from bumped) as current,
            coalesce((select p.count from rate_limit_windows p, clock c
                       where p.bucket = :bucket and p.window_start = c.start - make_interval(secs => :w)), 0) as previous,
            (select extract(epoch from (now - start)) * 1000 from clock) as elapsed_ms`,
    { w: windowSeconds, bucket },
  )) as { rows: WindowRow[] };
  return countsOf(result.rows);
}

/**
 * Reads `bucket`'s current and previous window counts without counting anything, in one statement on
 * the database's clock.
 */
export async function readWindow(db: Knex, bucket: string, windowSeconds: number): Promise<WindowCounts> {
  const result = (await db.raw(
    `with clock as (
       select clock_timestamp() as now,
              to_timestamp(floor(extract(epoch from clock_timestamp()) / :w) * :w) as start
     )
     select coalesce((select w.count from rate_limit_windows w, clock c
                       where w.bucket = :bucket and w.window_start = c.start), 0) as current,
            coalesce((select p.count from rate_limit_windows p, clock c
                       where p.bucket = :bucket and p.window_start = c.start - make_interval(secs => :w)), 0) as previous,
            (select extract(epoch from (now - start)) * 1000 from clock) as elapsed_ms`,
    { w: windowSeconds, bucket },
  )) as { rows: WindowRow[] };
  return countsOf(result.rows);
}

function countsOf(rows: readonly WindowRow[]): WindowCounts {
  const row = rows[0];
  if (row === undefined) throw new Error('the rate limit statement returned no row');
  return { current: Number(row.current), previous: Number(row.previous), elapsedMs: Number(row.elapsed_ms) };
}
