/**
 * Per-client token buckets in this process's memory, for the card endpoints on the checkout path
 * (tokenise, read, attach), and for the first sightings (new cards) of each client.
 *
 * Why memory and not the database counter that detokenisation uses: tokenising a known card is a
 * read, and a shared counter would make every one of them a write and a round trip. The price is
 * that the limit holds per instance (N instances admit up to N × the rate), which is what it is
 * for: keeping one runaway or hostile client from starving the others. Detokenisation, where the
 * exact limit across instances matters, keeps the database counter.
 */
import type { RateLimitDecision } from './rate-limiter.js';

export interface TokenBucketOptions {
  /** Sustained requests per second per client; 0 turns the limit off. */
  readonly ratePerSecond: number;
  /** Requests a client may make at once after being idle. */
  readonly burst: number;
  /** Clients remembered at most (least recently seen forgotten first: they start full again). */
  readonly maxClients?: number;
  readonly nowMs?: () => number;
}

export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private readonly nowMs: () => number;
  private readonly maxClients: number;

  constructor(private readonly options: TokenBucketOptions) {
    this.nowMs = options.nowMs ?? (() => performance.now());
    this.maxClients = options.maxClients ?? 10_000;
  }

  /** Whether `take` would allow this client now, without taking anything. */
  peek(client: string): RateLimitDecision {
    if (this.options.ratePerSecond === 0) return { allowed: true, retryAfterSeconds: 0 };
    const tokens = this.tokensOf(client, this.nowMs());
    return tokens >= 1 ? { allowed: true, retryAfterSeconds: 0 } : this.refusal(tokens);
  }

  take(client: string): RateLimitDecision {
    if (this.options.ratePerSecond === 0) return { allowed: true, retryAfterSeconds: 0 };
    const now = this.nowMs();
    const tokens = this.tokensOf(client, now);
    // Re-inserted so that the map's order is least recently seen first.
    this.buckets.delete(client);
    if (this.buckets.size >= this.maxClients) this.buckets.delete(this.buckets.keys().next().value as string);
    if (tokens >= 1) {
      this.buckets.set(client, { tokens: tokens - 1, at: now });
      return { allowed: true, retryAfterSeconds: 0 };
    }
    this.buckets.set(client, { tokens, at: now });
    return this.refusal(tokens);
  }

  private tokensOf(client: string, now: number): number {
    const { ratePerSecond, burst } = this.options;
    const known = this.buckets.get(client);
    return Math.min(burst, (known?.tokens ?? burst) + ((now - (known?.at ?? now)) / 1000) * ratePerSecond);
  }

  private refusal(tokens: number): RateLimitDecision {
    return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil((1 - tokens) / this.options.ratePerSecond)) };
  }
}
