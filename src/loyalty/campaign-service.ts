/**
 * Campaigns' use cases: publish a campaign or a new version of one (audited, idempotent by the
 * client's key), list them with their budget spent and activations, and the shopper's activations
 * (opt-in from the app: idempotent, audited). A payment's lot keeps the judgement of the versions
 * pinned on it, so earning never reads a version again.
 */
import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import { appendAuditEvent, canonicalJson } from '../audit/audit-log.js';
import { refuseCardData } from '../card-data/card-data-guard.js';
import { withRetry } from '../db/retry.js';
import { AppError } from '../errors/app-error.js';
import { newId } from '../ids/prefixed-id.js';
import { checkDefinition, instantOf } from './campaign-definition.js';
import { campaignsInForce, type CampaignVersion } from './campaign-rules.js';
import {
  allCampaignVersions,
  insertCampaignVersion,
  lockLatestCampaignVersion,
  toCampaignVersion,
  versionsOfCampaign,
  type StoredDefinition,
} from './campaign-store.js';
import { activate, activationsOf, campaignTotals } from './campaign-usage-store.js';
import { claimIdempotencyKey, type StoredResponse } from './idempotency.js';
import { lockAccounts } from './ledger-store.js';

/** A campaign now: the version that speaks for it, where it stands, its budget and activations. */
export interface CampaignStatus {
  readonly version: CampaignVersion;
  readonly state: 'scheduled' | 'running' | 'ended';
  readonly budgetSpent: number;
  readonly activations: number;
}

/** A campaign as a shopper sees it in the app. */
export interface ShopperCampaign {
  readonly version: CampaignVersion;
  readonly activatedAt: Date | undefined;
}

/**
 * The version that speaks for a campaign at `now`: the one in force, else the first scheduled; and
 * whether the campaign is scheduled, running or ended by that version's start and end. Pure.
 */
export function campaignState(
  versions: readonly CampaignVersion[],
  now: Date,
): { version: CampaignVersion; state: CampaignStatus['state'] } {
  const version = campaignsInForce(versions, now)[0] ?? (versions[0] as CampaignVersion);
  const { startsAt, endsAt } = version.definition;
  const state =
    version.effectiveFrom > now || startsAt > now
      ? 'scheduled'
      : endsAt !== undefined && endsAt <= now
        ? 'ended'
        : 'running';
  return { version, state };
}

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

export class CampaignService {
  constructor(
    private readonly knex: Knex,
    private readonly now: () => Date,
    private readonly idempotencyRetentionDays = 30,
  ) {}

  /** Every campaign's versions, oldest first, by campaign, with its status now. */
  async list(): Promise<Map<string, { versions: CampaignVersion[]; status: CampaignStatus }>> {
    const byCampaign = new Map<string, CampaignVersion[]>();
    for (const v of await allCampaignVersions(this.knex)) {
      byCampaign.set(v.campaignId, [...(byCampaign.get(v.campaignId) ?? []), v]);
    }
    const totals = await campaignTotals(this.knex);
    const now = this.now();
    return new Map(
      [...byCampaign].map(([id, versions]) => [id, { versions, status: this.statusOf(versions, totals.get(id), now) }]),
    );
  }

  async versions(campaignId: string): Promise<{ versions: CampaignVersion[]; status: CampaignStatus }> {
    const versions = await versionsOfCampaign(this.knex, campaignId);
    if (versions.length === 0) throw new AppError('NOT_FOUND', { detail: 'No such campaign.' });
    const totals = await campaignTotals(this.knex);
    return { versions, status: this.statusOf(versions, totals.get(campaignId), this.now()) };
  }

  /** The campaigns that have not ended (by the version in force now), with the shopper's activations. */
  async ofShopper(shopperRef: string): Promise<ShopperCampaign[]> {
    const now = this.now();
    const activations = await activationsOf(this.knex, shopperRef);
    return campaignsInForce(await allCampaignVersions(this.knex), now)
      .filter((v) => v.definition.endsAt === undefined || v.definition.endsAt > now)
      .map((version) => ({ version, activatedAt: activations.get(version.campaignId) }));
  }

  /**
   * The shopper opts in to a campaign that has not ended (`404` otherwise). Idempotent: a second
   * activation answers the first. Taken under the shopper's account lock, so a payment judged at
   * the same time sees the activation either committed or not yet made (never half). Audited once.
   */
  async activate(
    shopperRef: string,
    campaignId: string,
    actor: CampaignActor,
  ): Promise<{ activatedAt: Date; activated: boolean }> {
    return withRetry(() =>
      this.knex.transaction(async (trx) => {
        const now = this.now();
        const versions = await versionsOfCampaign(trx, campaignId);
        if (versions.length === 0 || campaignState(versions, now).state === 'ended') {
          throw new AppError('NOT_FOUND', { detail: 'No such campaign running.' });
        }
        await lockAccounts(trx, [shopperRef], now);
        const row = {
          shopper_ref: shopperRef,
          campaign_id: campaignId,
          activated_at: now,
          activated_by: actor.subject,
        };
        const result = await activate(trx, row);
        if (result.created) {
          await appendAuditEvent(
            trx,
            {
              actor: actor.subject,
              actorType: 'client',
              action: 'loyalty.campaign.activated',
              outcome: 'success',
              origin: actor.origin,
              resource: `campaign:${campaignId}:shopper:${shopperRef}`,
            },
            now,
          );
        }
        return { activatedAt: result.activatedAt, activated: result.created };
      }),
    );
  }

  private statusOf(
    versions: readonly CampaignVersion[],
    totals: { spent: number; activations: number } | undefined,
    now: Date,
  ): CampaignStatus {
    const { version, state } = campaignState(versions, now);
    return { version, state, budgetSpent: totals?.spent ?? 0, activations: totals?.activations ?? 0 };
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
