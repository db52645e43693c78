/**
 * Event subscriptions: who receives which events, with which secrets, and what became of each
 * delivery. Every write is one transaction, audited. Idempotent by nature: one live subscription per
 * URL (a retried create is `409 SUBSCRIPTION_EXISTS` naming the first), deleting twice is deleting
 * once, replaying an event already queued again changes nothing.
 *
 * A secret is shown once, when it is made (creation, rotation); reads never return it.
 */
import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import { appendAuditEvent } from '../audit/audit-log.js';
import type { Page } from '../db/keyset-cursor.js';
import { AppError } from '../errors/app-error.js';
import { newId } from '../ids/prefixed-id.js';
import { retryOnStaleKey, type KeyRing } from '../keys/key-ring.js';
import { storedReference } from '../keys/reference-digests.js';
import type { Actor } from '../auth/actors.js';
import { refuseCardNumbers } from '../card-data/request-fields.js';
import type { EventType } from './event-types.js';
import { DeadlineExceeded, withinDeadline } from './deadline.js';
import { addSecret } from './subscription-secrets.js';
import {
  deleteSubscription,
  endSecretsAt,
  findDelivery,
  findLive,
  insertSubscription,
  listAttempts,
  listDeliveries,
  listLive,
  liveByUrl,
  lockDelivery,
  lockSubscription,
  requeueDelivery,
  secretOfRotation,
  type AttemptRow,
  type DeliveryRow,
  type DeliveryState,
  type SubscriptionRow,
} from './subscription-store.js';

export type {
  AttemptRow,
  DeliveryRow,
  DeliveryState,
  SubscriptionRow,
  SubscriptionState,
} from './subscription-store.js';
import { parseTargetUrl, resolveTarget, TargetRefused, type TargetPolicy } from './target-policy.js';

export interface NewSubscription {
  readonly url: string;
  readonly eventTypes: readonly EventType[];
  readonly description?: string;
}

export interface SubscriptionServiceDeps {
  readonly knex: Knex;
  readonly keyRing: KeyRing;
  readonly targets: TargetPolicy;
  /** How long the SSRF check at creation waits for DNS (the delivery timeout); default 10 s. */
  readonly resolveTimeoutMs?: number;
  readonly now?: () => Date;
}

/** How long the previous secret keeps signing after a rotation, unless the caller says otherwise. */
export const DEFAULT_SECRET_OVERLAP_SECONDS = 86_400;

export class SubscriptionService {
  private readonly knex: Knex;
  private readonly now: () => Date;

  constructor(private readonly deps: SubscriptionServiceDeps) {
    this.knex = deps.knex;
    this.now = deps.now ?? (() => new Date());
  }

  /**
   * The URL is stored normalised (`url.href`: lower-case host, percent-encoded path), so one
   * receiver written two ways is one subscription; control characters are refused in the URL and
   * the description (PostgreSQL rejects NUL in text: a 500, not a 400).
   */
  async create(input: NewSubscription, actor: Actor): Promise<{ subscription: SubscriptionRow; secret: string }> {
    refuseControlCharacters({ url: input.url, description: input.description });
    refuseCardNumbers({ url: input.url, description: input.description });
    const url = (await this.checkTarget(input.url)).href;
    const urlHash = urlSha256(url);
    // A secret sealed under a key version that stopped being active (this instance's ring is stale)
    // is refused by the database: the whole transaction runs once more on a reloaded ring.
    return retryOnStaleKey(this.deps.keyRing, () =>
      this.knex.transaction(async (trx) => {
        const now = this.now();
        const existing = await liveByUrl(trx, urlHash);
        if (existing !== undefined) throw subscriptionExists(existing.id);
        const id = newId('sub');
        const row = await insertSubscription(trx, {
          id,
          url,
          url_sha256: urlHash,
          event_types: JSON.stringify([...new Set(input.eventTypes)].sort()),
          description: input.description ?? null,
          state: 'active',
          disabled_reason: null,
          breaker_timeouts: 0,
          breaker_open_until: null,
          created_by: actor.subject,
          created_at: now,
          updated_at: now,
        });
        const { secret } = await addSecret(trx, this.deps.keyRing, id, now);
        await this.audit(trx, actor, 'events.subscription.created', id, now, { eventTypes: input.eventTypes });
        return { subscription: row, secret };
      }),
    ).catch(async (error: unknown) => {
      // Two creates racing for one URL: the partial unique index decides, the loser is told which.
      const e = error as { code?: unknown } | null;
      if (e?.code === '23505') {
        const winner = await liveByUrl(this.knex, urlHash);
        if (winner !== undefined) throw subscriptionExists(winner.id);
      }
      throw error;
    });
  }

  async list(): Promise<SubscriptionRow[]> {
    return listLive(this.knex);
  }

  async get(id: string): Promise<SubscriptionRow> {
    const row = await findLive(this.knex, id);
    if (row === undefined) throw new AppError('NOT_FOUND', { detail: 'No such subscription.' });
    return row;
  }

  /** Stops deliveries at once; events already queued for it stay on record. Deleting again is a no-op. */
  async delete(id: string, actor: Actor): Promise<void> {
    await this.knex.transaction(async (trx) => {
      const now = this.now();
      const row = await lockSubscription(trx, id);
      if (row === undefined) throw new AppError('NOT_FOUND', { detail: 'No such subscription.' });
      if (row.state === 'deleted') return;
      await deleteSubscription(trx, id, now);
      await this.audit(trx, actor, 'events.subscription.deleted', id, now);
    });
  }

  /**
   * A new secret, returned once. The secrets live until now keep signing for `overlapSeconds` (both
   * signatures in every delivery meanwhile), so the subscriber can switch without losing one.
   * Secrets whose overlap has ended are erased.
   *
   * With an `idempotencyKey`, a retry of a rotation whose secret is still live is
   * `409 SECRET_ROTATION_REPEATED` naming that secret: it mints no third secret and does not start
   * the overlap countdown on the secret the admin received. The secret is never shown again (it is
   * shown once): an admin who lost the answer rotates again with a new key.
   */
  async rotateSecret(
    id: string,
    overlapSeconds: number,
    actor: Actor,
    idempotencyKey?: string,
  ): Promise<{ secretId: string; secret: string; previousSecretsExpireAt: Date }> {
    return retryOnStaleKey(this.deps.keyRing, () => this.rotateSecretOnce(id, overlapSeconds, actor, idempotencyKey));
  }

  private async rotateSecretOnce(
    id: string,
    overlapSeconds: number,
    actor: Actor,
    idempotencyKey: string | undefined,
  ): Promise<{ secretId: string; secret: string; previousSecretsExpireAt: Date }> {
    return this.knex.transaction(async (trx) => {
      const now = this.now();
      const row = await findLive(trx, id, true);
      if (row === undefined) throw new AppError('NOT_FOUND', { detail: 'No such subscription.' });
      // A UUID key that reads as a card number is kept as its keyed digest (keys/reference-digests.ts).
      const rotationKey = idempotencyKey === undefined ? undefined : await storedReference(trx, idempotencyKey);
      if (rotationKey !== undefined) {
        // The subscription row is locked: a concurrent retry waits here and then sees this one's secret.
        // An earlier release kept a card-shaped UUID key as sent: a retry of it finds that secret too.
        const made =
          (await secretOfRotation(trx, id, rotationKey, now)) ??
          (rotationKey === idempotencyKey ? undefined : await secretOfRotation(trx, id, idempotencyKey as string, now));
        if (made !== undefined) {
          throw new AppError('SECRET_ROTATION_REPEATED', {
            detail: 'A rotation with this Idempotency-Key already made a secret; it is not shown again.',
            extensions: { secretId: made },
          });
        }
      }
      const until = new Date(now.getTime() + overlapSeconds * 1000);
      await endSecretsAt(trx, id, now, until);
      const made = await addSecret(trx, this.deps.keyRing, id, now, rotationKey);
      await this.audit(trx, actor, 'events.subscription.secret-rotated', id, now, {
        overlapSeconds,
        secretId: made.id,
      });
      return { secretId: made.id, secret: made.secret, previousSecretsExpireAt: until };
    });
  }

  /** The subscription's deliveries, newest event first; optionally only those in one state. */
  async deliveries(
    id: string,
    filter: { readonly state?: DeliveryState; readonly limit: number; readonly cursor?: string },
  ): Promise<Page<DeliveryRow>> {
    await this.get(id);
    return listDeliveries(this.knex, id, filter);
  }

  /** Every delivery attempt to the subscription, newest first: status, latency, error. */
  async attempts(id: string, filter: { readonly limit: number; readonly cursor?: string }): Promise<Page<AttemptRow>> {
    await this.get(id);
    return listAttempts(this.knex, id, filter);
  }

  /**
   * Queues a dead-lettered delivery again, with a fresh attempt budget (after the receiver is
   * fixed). Replaying one already queued again is a no-op; a delivered one is not replayable. A
   * replayed event may reach the receiver after later events of its shopper: it was dead-lettered,
   * which released them. Audited.
   */
  async replay(id: string, eventId: string, actor: Actor): Promise<DeliveryRow> {
    await this.knex.transaction(async (trx) => {
      const now = this.now();
      const subscription = await findLive(trx, id);
      if (subscription === undefined) throw new AppError('NOT_FOUND', { detail: 'No such subscription.' });
      const delivery = await lockDelivery(trx, id, eventId);
      if (delivery === undefined) throw new AppError('NOT_FOUND', { detail: 'No such delivery.' });
      if (delivery.state === 'pending') return;
      if (delivery.state === 'delivered' || subscription.state !== 'active') {
        throw new AppError('EVENT_NOT_REPLAYABLE', {
          detail:
            delivery.state === 'delivered'
              ? 'The event was delivered; only dead-lettered events are replayed.'
              : 'The subscription is disabled.',
        });
      }
      await requeueDelivery(trx, id, eventId, now);
      await this.audit(trx, actor, 'events.delivery.replayed', id, now, { eventId });
    });
    return findDelivery(this.knex, id, eventId);
  }

  /** The SSRF check at creation: the URL's form, then every address its host resolves to. */
  private async checkTarget(value: string): Promise<URL> {
    try {
      const url = parseTargetUrl(value, this.deps.targets);
      await withinDeadline(resolveTarget(url, this.deps.targets), this.deps.resolveTimeoutMs ?? 10_000);
      return url;
    } catch (error) {
      if (error instanceof TargetRefused) throw error.toAppError();
      if (error instanceof DeadlineExceeded) throw new TargetRefused('unresolvable').toAppError();
      throw error;
    }
  }

  private async audit(
    trx: Knex.Transaction,
    actor: Actor,
    action: string,
    resource: string,
    now: Date,
    details?: Record<string, unknown>,
  ): Promise<void> {
    await appendAuditEvent(
      trx,
      {
        actor: actor.subject,
        actorType: 'client',
        action,
        outcome: 'success',
        origin: actor.origin,
        resource,
        ...(details === undefined ? {} : { details }),
      },
      now,
    );
  }
}

/** The uniqueness key of a subscription's (normalised) URL: a fixed-size index row whatever its length. */
function urlSha256(url: string): Buffer {
  return createHash('sha256').update(url, 'utf8').digest();
}

/** C0 and C1 control characters (NUL included); the API schema refuses them too. */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f]/u;

function refuseControlCharacters(fields: Readonly<Record<string, string | undefined>>): void {
  const errors = Object.entries(fields)
    .filter(([, value]) => value !== undefined && CONTROL_CHARACTERS.test(value))
    .map(([name]) => ({ pointer: `/body/${name}`, message: 'must not contain control characters' }));
  if (errors.length > 0) {
    throw new AppError('VALIDATION_FAILED', { detail: 'Control characters are not accepted.', extensions: { errors } });
  }
}

function subscriptionExists(id: string): AppError {
  return new AppError('SUBSCRIPTION_EXISTS', {
    detail: 'A subscription for this URL exists; rotate its secret to get a new one.',
    extensions: { subscriptionId: id },
  });
}
