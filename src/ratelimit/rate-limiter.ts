/**
 * Sliding-window rate limiting kept in the database, shared by every instance, on the database's
 * clock (a per-process counter would multiply the limit by the number of instances; each instance's
 * own clock would let a skewed one open a new window early).
 *
 * Contract: every call counts, allowed or not, in one statement that commits on its own (autocommit):
 * callers run it BEFORE the work it guards and outside that work's transaction, so a failure of the
 * work (404, a refusal, the 429 itself) never rolls the count back.
 *
 * The window is the two-bucket approximation of a sliding log (as Cloudflare and nginx-style limiters
 * do): counts are kept per fixed window, and the count of the last `windowSeconds` is estimated as
 * the current window's count plus the previous one's, weighted by how much of it still overlaps.
 * The current window's row is upserted, so concurrent attempts from any number of instances queue on
 * its row lock and each sees the exact count including itself. Two rows per client at most: the same
 * statement deletes the client's windows older than the previous one.
 *
 * The approximation admits up to about twice the limit within one true window span in the worst case
 * (a full previous window whose weight has fallen off, then a full current one); the limit per
 * rolling window of the estimate itself is exact (README: detokenisation limit).
 *
 * `peekRateLimit` reads the same estimate without counting (for a budget that is only spent by some
 * outcomes, such as first sightings, but must refuse every attempt once spent); `countInFixedWindow`
 * counts events per fixed window, for work done once per window (the one audit entry of a client past
 * its limit, which reports how often it was refused in the window before).
 */
import type { Knex } from 'knex';
import { bumpWindow, readWindow } from './window-store.js';

export interface RateLimitDecision {
  readonly allowed: boolean;
  readonly retryAfterSeconds: number;
}

/** Counts one attempt for `bucket` and says whether it is within `limit` per `windowSeconds`. */
export async function consumeRateLimit(
  db: Knex,
  bucket: string,
  limit: number,
  windowSeconds: number,
): Promise<RateLimitDecision> {
  const row = await bumpWindow(db, bucket, windowSeconds);
  return decide(row.current, row.previous, row.elapsedMs, limit, windowSeconds * 1000);
}

/**
 * Whether one more attempt for `bucket` would be allowed now, without counting anything: the same
 * estimate as `consumeRateLimit` would take, read in one statement on the database's clock.
 */
export async function peekRateLimit(
  db: Knex,
  bucket: string,
  limit: number,
  windowSeconds: number,
): Promise<RateLimitDecision> {
  const row = await readWindow(db, bucket, windowSeconds);
  return decide(row.current + 1, row.previous, row.elapsedMs, limit, windowSeconds * 1000);
}

/**
 * Counts one event for `bucket` in the current fixed window of `windowSeconds` (shared by every
 * instance) and returns that window's count, this one included, and the previous window's. One
 * autocommitted statement; older windows are pruned. `count === 1` is the first event of a window.
 */
export async function countInFixedWindow(
  db: Knex,
  bucket: string,
  windowSeconds: number,
): Promise<{ count: number; previous: number }> {
  const row = await bumpWindow(db, bucket, windowSeconds);
  return { count: row.current, previous: row.previous };
}

/**
 * A budget kept in the shared sliding window: `peek` reads it, `take` spends one unit. Used for
 * the first-sighting budget, shared by every instance and worker (src/cards/cards-handlers.ts).
 */
export interface SharedBudget {
  peek(client: string): Promise<RateLimitDecision>;
  take(client: string): Promise<RateLimitDecision>;
}

/**
 * `limit` units per `windowSeconds` for each client, under `prefix:<client>` in `rate_limit_windows`.
 */
export function sharedBudget(db: Knex, prefix: string, limit: number, windowSeconds: number): SharedBudget {
  return {
    peek: (client) => peekRateLimit(db, `${prefix}:${client}`, limit, windowSeconds),
    take: (client) => consumeRateLimit(db, `${prefix}:${client}`, limit, windowSeconds),
  };
}

/**
 * A shared budget sized like a token bucket: at most `burst` units in any window of
 * `burst / perMinute` minutes (the rate of `perMinute` on average, `burst` at once after being idle).
 * Undefined for `perMinute` 0 (no limit).
 */
export function sharedBudgetAtRate(
  db: Knex,
  prefix: string,
  perMinute: number,
  burst: number,
): SharedBudget | undefined {
  if (perMinute === 0) return undefined;
  return sharedBudget(db, prefix, burst, (burst * 60) / perMinute);
}

/**
 * The estimate over the last window (this attempt included) against the limit; when refused, the
 * seconds until one more attempt would be allowed if none were made meanwhile.
 */
export function decide(
  current: number,
  previous: number,
  elapsedMs: number,
  limit: number,
  windowMs: number,
): RateLimitDecision {
  const estimate = (t: number): number =>
    t < windowMs - elapsedMs
      ? previous * (1 - (elapsedMs + t) / windowMs) + current
      : current * Math.max(0, 1 - (elapsedMs + t - windowMs) / windowMs);
  if (estimate(0) <= limit) return { allowed: true, retryAfterSeconds: 0 };
  // Both pieces fall linearly: solve estimate(t) + 1 <= limit in the first piece, else in the second.
  const target = limit - 1;
  const untilRollover = windowMs - elapsedMs;
  let waitMs: number;
  if (previous > 0 && current <= target) {
    waitMs = windowMs * (1 - (target - current) / previous) - elapsedMs;
  } else if (current === 0) {
    waitMs = untilRollover;
  } else {
    waitMs = untilRollover + Math.max(0, windowMs * (1 - target / current));
  }
  return {
    allowed: false,
    retryAfterSeconds: Math.max(1, Math.ceil(Math.min(waitMs, untilRollover + windowMs) / 1000)),
  };
}
