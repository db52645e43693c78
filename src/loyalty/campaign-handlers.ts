/** HTTP adapters of the campaigns (admin, and the shopper's opt-in). Validated input in, one service call out. */
import { actorOf } from '../http/callers.js';
import { contractHandlers, type Schemas } from '../http/contract.js';
import type { HandlerMap } from '../http/types.js';
import { instantOf } from './campaign-definition.js';
import type { CampaignVersion } from './campaign-rules.js';
import type { CampaignService, CampaignStatus } from './campaign-service.js';
import type { StoredDefinition } from './campaign-store.js';
import { reachableShopper } from './loyalty-handlers.js';
import type { ShopperService } from './shopper-service.js';

export function campaignHandlers(campaigns: CampaignService, shoppers: ShopperService): HandlerMap {
  return contractHandlers({
    async publishCampaign(req, res) {
      const { body, headers } = req.valid;
      const result = await campaigns.publish(
        {
          ...(body.campaignId === undefined ? {} : { campaignId: body.campaignId }),
          ...(body.effectiveFrom === undefined ? {} : { effectiveFrom: body.effectiveFrom }),
          definition: storedDefinition(body.definition),
        },
        headers['idempotency-key'],
        actorOf(req),
      );
      if (result.replayed) res.setHeader('Idempotent-Replayed', 'true');
      res.status(201).json(versionJson(result.body));
    },

    async listCampaigns(_req, res) {
      const byCampaign = await campaigns.list();
      res.json({
        items: [...byCampaign].map(([campaignId, c]) => ({
          campaignId,
          versions: c.versions.map(versionJson),
          status: statusJson(c.status),
        })),
      });
    },

    async getCampaign(req, res) {
      const { campaignId } = req.valid.path;
      const c = await campaigns.versions(campaignId);
      res.json({ campaignId, versions: c.versions.map(versionJson), status: statusJson(c.status) });
    },

    async listShopperCampaigns(req, res) {
      const ref = await reachableShopper(shoppers, req);
      const items = (await campaigns.ofShopper(ref)).map(({ version: v, activatedAt }) => ({
        campaignId: v.campaignId,
        version: v.version,
        name: v.definition.name,
        startsAt: v.definition.startsAt.toISOString(),
        ...(v.definition.endsAt === undefined ? {} : { endsAt: v.definition.endsAt.toISOString() }),
        optInRequired: v.definition.conditions.optInRequired === true,
        ...(activatedAt === undefined ? {} : { activatedAt: activatedAt.toISOString() }),
      }));
      res.json({ items });
    },

    async activateShopperCampaign(req, res) {
      const ref = await reachableShopper(shoppers, req);
      const { campaignId } = req.valid.path;
      const result = await campaigns.activate(ref, campaignId, actorOf(req));
      res.json({
        campaignId,
        shopperReference: ref,
        activatedAt: result.activatedAt.toISOString(),
        activated: result.activated,
      });
    },
  });
}

function statusJson(s: CampaignStatus): Schemas['CampaignStatus'] {
  const { startsAt, endsAt, budget } = s.version.definition;
  return {
    version: s.version.version,
    state: s.state,
    startsAt: startsAt.toISOString(),
    ...(endsAt === undefined ? {} : { endsAt: endsAt.toISOString() }),
    ...(budget === undefined ? {} : { budget, budgetLeft: Math.max(0, budget - s.budgetSpent) }),
    budgetSpent: s.budgetSpent,
    activations: s.activations,
  };
}

/** The contract's defaults written out: a stored definition says everything it means. */
function storedDefinition(d: Schemas['CampaignDefinition']): StoredDefinition {
  return {
    name: d.name,
    startsAt: instantOf(d.startsAt),
    ...(d.endsAt === undefined ? {} : { endsAt: instantOf(d.endsAt) }),
    conditions: d.conditions ?? {},
    effect: d.effect,
    ...(d.maxBonusPerPayment === undefined ? {} : { maxBonusPerPayment: d.maxBonusPerPayment }),
    ...(d.maxBonusPerShopper === undefined ? {} : { maxBonusPerShopper: d.maxBonusPerShopper }),
    ...(d.budget === undefined ? {} : { budget: d.budget }),
    priority: d.priority ?? 0,
    stacking: d.stacking ?? 'combinable',
  };
}

export function versionJson(v: CampaignVersion): Schemas['CampaignVersion'] {
  const { startsAt, endsAt, ...rest } = v.definition;
  return {
    campaignId: v.campaignId,
    version: v.version,
    effectiveFrom: v.effectiveFrom.toISOString(),
    createdAt: v.createdAt.toISOString(),
    // Stored definitions were validated against this contract when published.
    definition: {
      ...rest,
      startsAt: startsAt.toISOString(),
      ...(endsAt === undefined ? {} : { endsAt: endsAt.toISOString() }),
    } as Schemas['CampaignDefinition'],
  };
}
