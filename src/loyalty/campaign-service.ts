/**
 * Campaigns' use cases: publish a campaign or a new version of one (audited, idempotent by the
 * client's key), list them, and the versions pinned on payments' lots (immutable, so cached forever
 * once read; the webhook path loads what a batch misses in one statement).
 */
import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import { appendAuditEvent, canonicalJson } from '../audit/audit-log.js';
import { refuseCardData } from '../card-data/card-data-guard.js';
import { withRetry } from '../db/retry.js';
import { AppError } from '../errors/app-error.js';
import { newId } from '../ids/prefixed-id.js';
import { checkDefinition, instantOf } from './campaign-definition.js';
import type { CampaignVersion } from './campaign-rules.js';
import {
  allCampaignVersions,
  campaignVersionsByKey,
  insertCampaignVersion,
  lockLatestCampaignVersion,
  toCampaignVersion,
  versionsOfCampaign,
  type StoredDefinition,
} from './campaign-store.js';
import { claimIdempotencyKey, type StoredResponse } from './idempotency.js';

export interface CampaignRequest {
  /** Absent: a new campaign. Present: a new version of this one. */
  readonly campaignId?: string;
  /** When the version takes effect (default: now; never earlier than now or the previous version). */
  readonly effectiveFrom?: string;
  readonly definition: StoredDefinition;
}

interface CampaignActor {
  readonly subject: string;
  readonly origin: string;
}

const keyOf = (id: string, version: number): string => `${id} v${version}`;

export class CampaignService {
  private readonly cache = new Map<string, CampaignVersion>();

  constructor(
    private readonly knex: Knex,
    private readonly now: () => Date,
    private readonly idempotencyRetentionDays = 30,
  ) {}

  /** Reads into the cache, in one statement, the versions among these it does not hold yet. */
  async load(db: Knex | Knex.Transaction, keys: readonly { campaignId: string; version: number }[]): Promise<void> {
    const missing = new Map<string, [string, number]>();
    for (const k of keys) {
      const key = keyOf(k.campaignId, k.version);
      if (!this.cache.has(key)) missing.set(key, [k.campaignId, k.version]);
    }
    for (const v of await campaignVersionsByKey(db, [...missing.values()])) this.remember(v);
  }

  /** A version {@link load}ed before (or seen in a whole read); versions never change. */
  cached(campaignId: string, version: number): CampaignVersion {
    const found = this.cache.get(keyOf(campaignId, version));
    if (found === undefined) throw new Error(`campaign ${campaignId} version ${version} was not loaded`);
    return found;
  }

  remember(version: CampaignVersion): void {
    this.cache.set(keyOf(version.campaignId, version.version), version);
  }

  /** Every campaign's versions, oldest first, by campaign. */
  async list(): Promise<Map<string, CampaignVersion[]>> {
    const byCampaign = new Map<string, CampaignVersion[]>();
    for (const v of await allCampaignVersions(this.knex)) {
      byCampaign.set(v.campaignId, [...(byCampaign.get(v.campaignId) ?? []), v]);
    }
    return byCampaign;
  }

  async versions(campaignId: string): Promise<CampaignVersion[]> {
    const versions = await versionsOfCampaign(this.knex, campaignId);
    if (versions.length === 0) throw new AppError('NOT_FOUND', { detail: 'No such campaign.' });
    return versions;
  }

  /**
   * Adds a campaign, or a version of one, checked first (422 `CAMPAIGN_DEFINITION_INVALID`, or
   * `CAMPAIGN_EFFECTIVE_IN_PAST`). The client's `Idempotency-Key` is claimed in the same transaction:
   * a retry answers the stored version and creates nothing.
   */
  async publish(
    request: CampaignRequest,
    idempotencyKey: string,
    actor: CampaignActor,
  ): Promise<StoredResponse<CampaignVersion>> {
    refuseCardData({ name: request.definition.name }, '/body/definition');
    const { campaignId } = request;
    const effectiveFrom = request.effectiveFrom === undefined ? undefined : instantOf(request.effectiveFrom);
    const { definition } = request;
    checkDefinition(definition);
    const requestHash = createHash('sha256').update(canonicalJson(request)).digest('hex');
    const stored = await withRetry(() =>
      this.knex.transaction(async (trx) => {
        const now = this.now();
        const claim = await claimIdempotencyKey<unknown>(
          trx,
          // Scoped to the caller: two administrators' keys never collide.
          { scope: `campaign:${actor.subject}`, key: idempotencyKey, requestHash },
          now,
          Math.max(30, this.idempotencyRetentionDays),
        );
        if (claim.replay !== undefined) return claim.replay;
        const version = await this.insert(trx, { campaignId, effectiveFrom, definition }, actor, now);
        return claim.store(201, version);
      }),
    );
    // A replay is the stored JSON: read it back into a version.
    return { ...stored, body: toCampaignVersion(stored.body as never) };
  }

  private async insert(
    trx: Knex.Transaction,
    request: { campaignId: string | undefined; effectiveFrom: string | undefined; definition: StoredDefinition },
    actor: CampaignActor,
    now: Date,
  ): Promise<unknown> {
    const latest =
      request.campaignId === undefined ? undefined : await lockLatestCampaignVersion(trx, request.campaignId);
    if (request.campaignId !== undefined && latest === undefined) {
      throw new AppError('NOT_FOUND', { detail: 'No such campaign.' });
    }
    const asked = request.effectiveFrom === undefined ? now : new Date(request.effectiveFrom);
    // Never in force before it existed: a payment already judged cannot be judged again differently.
    if (asked < now) throw new AppError('CAMPAIGN_EFFECTIVE_IN_PAST');
    const effectiveFrom = latest !== undefined && asked < latest.effectiveFrom ? latest.effectiveFrom : asked;
    const row = {
      campaign_id: request.campaignId ?? newId('cmp'),
      version: (latest?.version ?? 0) + 1,
      definition: request.definition,
      effective_from: effectiveFrom.toISOString(),
      created_by: actor.subject,
      created_at: now.toISOString(),
    };
    await insertCampaignVersion(trx, row);
    await appendAuditEvent(
      trx,
      {
        actor: actor.subject,
        actorType: 'client',
        action: 'loyalty.campaign.published',
        outcome: 'success',
        origin: actor.origin,
        resource: `campaign:${row.campaign_id}:v${row.version}`,
        details: {
          version: row.version,
          definitionSha256: createHash('sha256').update(canonicalJson(request.definition)).digest('base64url'),
        },
      },
      now,
    );
    return row;
  }
}
