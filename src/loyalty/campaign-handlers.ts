/** HTTP adapters of the campaigns (admin). Validated input in, one service call out. */
import { actorOf } from '../http/callers.js';
import { contractHandlers, type Schemas } from '../http/contract.js';
import type { HandlerMap } from '../http/types.js';
import { instantOf } from './campaign-definition.js';
import type { CampaignVersion } from './campaign-rules.js';
import type { CampaignService } from './campaign-service.js';
import type { StoredDefinition } from './campaign-store.js';

export function campaignHandlers(campaigns: CampaignService): HandlerMap {
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
        items: [...byCampaign].map(([campaignId, versions]) => ({ campaignId, versions: versions.map(versionJson) })),
      });
    },

    async getCampaign(req, res) {
      const { campaignId } = req.valid.path;
      res.json({ campaignId, versions: (await campaigns.versions(campaignId)).map(versionJson) });
    },
  });
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
