/**
 * The outbox dispatcher: delivers committed events to their subscribers, signed per Standard
 * Webhooks, at least once, in order per (subscription, shopper).
 *
 * - Claiming: a short transaction takes due deliveries with `FOR UPDATE SKIP LOCKED` and leases
 *   them (`leased_until`), so any number of instances share the work and none holds a database
 *   connection while a receiver answers. A dispatcher that dies mid-delivery leaves a lease that
 *   runs out; the delivery is then taken again with the same `webhook-id` (at least once).
 * - Leases are on the database's clock (`now()`), never an instance's: an instance whose clock runs
 *   fast cannot take a live lease, one whose clock runs slow cannot keep a dead one. The lease
 *   (2 × timeout + 30 s) covers the work before the send (DNS, secrets: bounded by the timeout), the
 *   send (bounded by the timeout) and the recording. Just before sending, the dispatcher checks in the
 *   database that it still holds the lease with at least a send's worth of time left; if not it
 *   sends nothing (another instance has it or will), so a slow instance cannot send an event again
 *   after a later one of its shopper was delivered.
 * - Order: only the head of a (subscription, shopper) queue is ever due: a delivery whose shopper
 *   has an earlier pending event for the same subscription waits, until that one is delivered or
 *   dead-lettered. Different shoppers and subscriptions proceed in parallel.
 * - Failures: timeouts, network errors, non-2xx answers and failures of our own before the send
 *   (a secret that cannot be decrypted, none at all, DNS past the deadline) are retried with exponential backoff and
 *   full jitter, never sooner than a `Retry-After` (seconds or an HTTP date, capped); after
 *   `maxAttempts` the delivery is dead-lettered (replayable by an admin). `410 Gone` disables the
 *   subscription. Every attempt is recorded: outcome, status, latency, and an error written by us.
 * - Before every attempt the target is checked again (DNS can change) and the connection is pinned
 *   to the checked address.
 * - Isolation (issue 24): a subscriber that accepts connections and never answers must not slow the
 *   others. An instance has `batchSize` delivery slots; a slot that frees is refilled at once (a
 *   claim for the free slots), never waiting for the rest of a batch. A subscription has at most
 *   `maxInFlightPerSubscription` deliveries leased at once, counted over every instance's live
 *   leases in the database, so a stalled one holds no more slots than that. Its circuit breaker,
 *   in the database and so shared by every instance, opens after `breakerThreshold` consecutive
 *   timeouts: nothing of it is claimed for `breakerCooldownMs` (no attempt is used up, nothing is
 *   dead-lettered for it); then it is half-open, one delivery at a time (the probe): an answer of any
 *   status closes it, another timeout opens it again.
 */
import type { Knex } from 'knex';
import type { DispatcherOptions } from '../config/dispatcher-options.js';
import type { KeyRing } from '../keys/key-ring.js';
import {
  claimDue,
  type BreakerChange,
  dbTime,
  holdsLease,
  recordAttempt,
  type ClaimedDelivery,
  type DeliveryOutcome,
} from './delivery-store.js';

export type { ClaimedDelivery, DeliveryOutcome } from './delivery-store.js';
import { postWebhook, type DeliveryRequest, type DeliveryResult, type WebhookSender } from './http-sender.js';
import { signedHeaders } from './signing.js';
import { DeadlineExceeded, withinDeadline } from './deadline.js';
import { liveSecrets } from './subscription-secrets.js';
import { parseTargetUrl, resolveTarget, TargetRefused, type TargetPolicy } from './target-policy.js';

// The dispatcher's settings are a section of the configuration: config owns the type.
export type { DispatcherOptions } from '../config/dispatcher-options.js';

export interface DispatcherDeps {
  readonly knex: Knex;
  readonly keyRing: KeyRing;
  readonly targets: TargetPolicy;
  readonly options: DispatcherOptions;
  readonly send?: WebhookSender;
  /** The application clock: signature timestamps and secret expiry. Leases use the database's. */
  readonly now?: () => Date;
  /** Tests only: time skipped by the test, added to the database clock. */
  readonly clockOffsetMs?: () => number;
  /** In [0, 1): the jitter. */
  readonly random?: () => number;
  readonly onAttempt?: (outcome: DeliveryOutcome, dead: boolean, latencyMs: number) => void;
  /** A subscription's breaker opened (or opened again) or closed after an attempt of this instance. */
  readonly onBreaker?: (change: Exclude<BreakerChange, undefined>, subscriptionId: string) => void;
  readonly onError?: (error: unknown) => void;
}

export interface DeliveryRecord {
  readonly subscriptionId: string;
  readonly eventId: string;
  readonly outcome: DeliveryOutcome;
  readonly status: number | undefined;
  readonly dead: boolean;
}

export class EventDispatcher {
  private readonly knex: Knex;
  private readonly send: WebhookSender;
  private readonly now: () => Date;
  private readonly random: () => number;
  private readonly clockOffsetMs: () => number;
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;
  /** The claim in progress, if any (one at a time). */
  private claiming: Promise<void> | undefined;
  /** A slot freed while a claim was in progress: claim again when it ends. */
  private claimAgain = false;
  /** The deliveries in flight, one per busy slot. */
  private readonly inFlight = new Set<Promise<void>>();

  constructor(private readonly deps: DispatcherDeps) {
    this.knex = deps.knex;
    this.send = deps.send ?? postWebhook;
    this.now = deps.now ?? (() => new Date());
    this.random = deps.random ?? Math.random;
    this.clockOffsetMs = deps.clockOffsetMs ?? (() => 0);
  }

  /** Deliveries this instance has in flight now. */
  get busySlots(): number {
    return this.inFlight.size;
  }

  /**
   * Starts delivering: claims for the free slots now, again whenever a slot frees, and every poll
   * interval while nothing more was due.
   */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.fill();
  }

  /** Stops claiming and waits for the claim and the deliveries in flight (they finish and are recorded). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.claiming;
    await Promise.allSettled([...this.inFlight]);
  }

  /** Claims for the free slots and starts each claimed delivery in its own slot. */
  private fill(): void {
    if (this.stopped) return;
    if (this.claiming !== undefined) {
      this.claimAgain = true;
      return;
    }
    const free = this.deps.options.batchSize - this.inFlight.size;
    if (free <= 0) return;
    clearTimeout(this.timer);
    this.claimAgain = false;
    this.claiming = this.claimUpTo(free)
      .then(({ claimed, candidates }) => {
        for (const c of claimed) this.occupy(c);
        // As many candidates as asked for: more may be due now; otherwise wait for a poll or a slot.
        return candidates >= free;
      })
      .catch((error: unknown) => {
        this.deps.onError?.(error);
        return false;
      })
      .then((more) => {
        this.claiming = undefined;
        if (this.stopped) return;
        if ((more || this.claimAgain) && this.inFlight.size < this.deps.options.batchSize) {
          setImmediate(() => this.fill());
          return;
        }
        this.timer = setTimeout(() => this.fill(), this.deps.options.pollIntervalMs);
        this.timer.unref();
      });
  }

  private occupy(claimed: ClaimedDelivery): void {
    const slot: Promise<void> = this.deliver(claimed)
      .then(
        () => undefined,
        (error: unknown) => this.deps.onError?.(error),
      )
      .finally(() => {
        this.inFlight.delete(slot);
        this.fill();
      });
    this.inFlight.add(slot);
  }

  /**
   * One round, for tests and tools: claim what is due (up to `batchSize`), deliver it, record the
   * outcomes. A delivery that fails unexpectedly (not the receiver: the database, a key) is reported
   * and keeps its lease, so it is taken again once the lease runs out; the others are recorded all
   * the same.
   */
  async runOnce(): Promise<DeliveryRecord[]> {
    const claimed = await this.claim();
    const settled = await Promise.allSettled(claimed.map((c) => this.deliver(c)));
    const records: DeliveryRecord[] = [];
    for (const result of settled) {
      if (result.status === 'rejected') this.deps.onError?.(result.reason);
      else if (result.value !== undefined) records.push(result.value);
    }
    return records;
  }

  /** The database's clock, moved by `offsetMs` (and by the time a test skipped). */
  private dbTime(offsetMs = 0): Knex.Raw {
    return dbTime(this.knex, this.clockOffsetMs() + offsetMs);
  }

  /** Leases the due heads of their queues (committed before any delivery starts). */
  async claim(): Promise<ClaimedDelivery[]> {
    return (await this.claimUpTo(this.deps.options.batchSize)).claimed;
  }

  private async claimUpTo(limit: number): Promise<{ claimed: ClaimedDelivery[]; candidates: number }> {
    const now = this.now();
    const leaseMs = this.deps.options.timeoutMs * 2 + 30_000;
    return claimDue(this.knex, {
      dbNow: this.dbTime(),
      leasedUntil: this.dbTime(leaseMs),
      now,
      batchSize: limit,
      maxInFlightPerSubscription: this.deps.options.maxInFlightPerSubscription,
    });
  }

  /**
   * Sends one claimed delivery and records the attempt and its consequence; undefined when the lease
   * was lost before the send (nothing sent, nothing recorded: it is another instance's now).
   */
  async deliver(claimed: ClaimedDelivery): Promise<DeliveryRecord | undefined> {
    const started = process.hrtime.bigint();
    const prepared = await this.prepare(claimed);
    let result: DeliveryResult | Failure;
    if (prepared instanceof TargetRefused || prepared instanceof OwnFailure) {
      result = prepared;
    } else {
      if (!(await this.stillLeased(claimed))) return undefined;
      result = await this.send(prepared);
    }
    const latencyMs = Number((process.hrtime.bigint() - started) / 1_000_000n);
    return this.record(claimed, result, latencyMs);
  }

  /**
   * Everything before the send, within the delivery's timeout: the target checked again, the secrets
   * unsealed, the request signed. A failure here is ours (or the target's), and is recorded as an
   * attempt like any other, so it backs off and is dead-lettered in the end instead of holding the
   * shopper's queue for ever; its error is a fixed sentence, never the exception's text.
   */
  private async prepare(claimed: ClaimedDelivery): Promise<DeliveryRequest | Failure> {
    const { timeoutMs, maxResponseBytes } = this.deps.options;
    const work = async (): Promise<DeliveryRequest | OwnFailure> => {
      const url = parseTargetUrl(claimed.url, this.deps.targets);
      const address = await resolveTarget(url, this.deps.targets);
      const now = this.now();
      let secrets: string[];
      try {
        secrets = await liveSecrets(this.knex, this.deps.keyRing, claimed.subscriptionId, now);
      } catch (error) {
        this.deps.onError?.(error);
        return new OwnFailure('failed', 'INTERNAL: the signing secrets could not be unsealed');
      }
      if (secrets.length === 0) return new OwnFailure('failed', 'INTERNAL: the subscription has no signing secret');
      const headers = signedHeaders(secrets, claimed.eventId, now, claimed.body);
      return { url, address, headers, body: claimed.body, timeoutMs, maxResponseBytes };
    };
    try {
      return await withinDeadline(work(), timeoutMs);
    } catch (error) {
      if (error instanceof TargetRefused) return error;
      if (error instanceof DeadlineExceeded) {
        return new OwnFailure('timeout', 'TIMEOUT: the target and secrets were not ready in time');
      }
      this.deps.onError?.(error);
      return new OwnFailure('failed', 'INTERNAL: the delivery could not be prepared');
    }
  }

  /**
   * True when this dispatcher still holds the lease, on the database's clock, with time left for a
   * whole send: a send that starts must end (its own timeout) before anyone else may take the event.
   */
  private async stillLeased(claimed: ClaimedDelivery): Promise<boolean> {
    return holdsLease(this.knex, claimed, this.dbTime(this.deps.options.timeoutMs));
  }

  private async record(
    claimed: ClaimedDelivery,
    result: DeliveryResult | Failure,
    latencyMs: number,
  ): Promise<DeliveryRecord> {
    const now = this.now();
    const attempt = claimed.attempts + 1;
    const { outcome, status, error } = describe(result);
    const dead = outcome !== 'delivered' && outcome !== 'gone' && attempt >= this.deps.options.maxAttempts;
    const breaker = await recordAttempt(this.knex, claimed, {
      attempt,
      outcome,
      status,
      error,
      latencyMs,
      dead,
      now,
      nextAttemptAt: () => this.dbTime(this.retryDelayMs(attempt, result, now)),
      breaker: {
        threshold: this.deps.options.breakerThreshold,
        openUntil: () => this.dbTime(this.deps.options.breakerCooldownMs),
        now: () => this.dbTime(),
      },
    });
    this.deps.onAttempt?.(outcome, dead, latencyMs);
    if (breaker !== undefined) this.deps.onBreaker?.(breaker, claimed.subscriptionId);
    return { subscriptionId: claimed.subscriptionId, eventId: claimed.eventId, outcome, status, dead };
  }

  /**
   * Exponential backoff with full jitter (a random delay up to base × 2^(attempt−1), capped), so
   * that receivers recovering from an outage are not hit by every instance at once; never sooner
   * than the receiver's `Retry-After`, itself capped.
   */
  retryDelayMs(attempt: number, result: DeliveryResult | Failure, now: Date): number {
    const { backoffBaseMs, backoffMaxMs, retryAfterMaxMs } = this.deps.options;
    const ceiling = Math.min(backoffMaxMs, backoffBaseMs * 2 ** Math.min(attempt - 1, 30));
    const jittered = Math.floor(this.random() * ceiling);
    const retryAfter =
      result instanceof TargetRefused || result instanceof OwnFailure || result.kind !== 'response'
        ? undefined
        : parseRetryAfter(result.retryAfter, now);
    return retryAfter === undefined ? jittered : Math.max(jittered, Math.min(retryAfter, retryAfterMaxMs));
  }
}

/** `Retry-After` in milliseconds from now: delay-seconds or an HTTP date (RFC 9110 §10.2.3). */
export function parseRetryAfter(value: string | undefined, now: Date): number | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (/^\d{1,10}$/.test(trimmed)) return Number(trimmed) * 1000;
  const at = Date.parse(trimmed);
  if (Number.isNaN(at) || !/[a-z]/i.test(trimmed)) return undefined;
  return Math.max(0, at - now.getTime());
}

/** A delivery that failed before its send, in our own code or on its deadline. */
class OwnFailure {
  constructor(
    readonly outcome: 'failed' | 'timeout',
    /** A fixed sentence: never an exception's message (it could quote a secret or a value). */
    readonly error: string,
  ) {}
}

type Failure = TargetRefused | OwnFailure;

function describe(result: DeliveryResult | Failure): {
  outcome: DeliveryOutcome;
  status: number | undefined;
  error: string | undefined;
} {
  if (result instanceof TargetRefused) {
    return { outcome: 'refused', status: undefined, error: `TARGET_REFUSED: ${result.reason}` };
  }
  if (result instanceof OwnFailure) return { outcome: result.outcome, status: undefined, error: result.error };
  switch (result.kind) {
    case 'timeout':
      return { outcome: 'timeout', status: undefined, error: 'TIMEOUT: no complete answer in time' };
    case 'network':
      return { outcome: 'failed', status: undefined, error: `NETWORK: ${result.code}` };
    case 'response':
      if (result.status >= 200 && result.status < 300) {
        return { outcome: 'delivered', status: result.status, error: undefined };
      }
      if (result.status === 410)
        return { outcome: 'gone', status: 410, error: 'GONE: the receiver disabled the endpoint' };
      return {
        outcome: 'failed',
        status: result.status,
        error:
          result.status >= 300 && result.status < 400
            ? `HTTP_${result.status}: redirects are not followed`
            : `HTTP_${result.status}`,
      };
  }
}
