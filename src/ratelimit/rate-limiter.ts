/**
 * Fixed-window rate limiting kept in the database, so the limit holds across every instance (a
 * per-process counter would multiply the limit by the number of instances). One upsert per check.
 */
import type { Knex } from 'knex';

export interface RateLimitDecision {
  readonly allowed: boolean;
  readonly retryAfterSeconds: number;
}

export async function consumeRateLimit(
  db: Knex | Knex.Transaction,
  bucket: string,
  limit: number,
  windowSeconds: number,
  now = new Date(),
): Promise<RateLimitDecision> {
  const windowMs = windowSeconds * 1000;
  const windowStart = new Date(Math.floor(now.getTime() / windowMs) * windowMs);
  const rows = (await db.raw(
    `insert into rate_limit_windows (bucket, window_start, count) values (?, ?, 1)
     on conflict (bucket, window_start) do update set count = rate_limit_windows.count + 1
     returning count`,
    [bucket, windowStart],
  )) as { rows: { count: number }[] };
  const count = rows.rows[0]?.count ?? Number.MAX_SAFE_INTEGER;
  const retryAfterSeconds = Math.max(1, Math.ceil((windowStart.getTime() + windowMs - now.getTime()) / 1000));
  return { allowed: count <= limit, retryAfterSeconds };
}

/** Old windows are useless after they close; callers may prune opportunistically. */
export async function pruneRateLimitWindows(db: Knex, olderThan: Date): Promise<number> {
  return db('rate_limit_windows').where('window_start', '<', olderThan).delete();
}
