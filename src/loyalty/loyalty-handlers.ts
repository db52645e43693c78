/** HTTP adapters of the loyalty app API and the programme. Validated input in, one service call out. */
import type { Request } from 'express';
import { pageBody } from '../db/keyset-cursor.js';
import { AppError } from '../errors/app-error.js';
import { maskPans } from '../logging/pan-redactor.js';
import { actorOf } from '../http/callers.js';
import { contractHandlers, filled, type Schemas } from '../http/contract.js';
import type { HandlerMap } from '../http/types.js';
import type { CardInput } from '../cards/vault-service.js';
import { principalOf, validInput } from '../http/types.js';
import { ShopperMergedMeanwhile } from './ledger-book.js';
import type { LedgerEntry, PaymentLot } from './ledger-queries.js';
import type { LoyaltyService } from './loyalty-service.js';
import type { MemberService, Membership } from './member-service.js';
import { DEFAULT_RULES, type ProgrammeVersion } from './programme.js';
import type { ShopperService } from './shopper-service.js';
import type { ShopperTier } from './tier-service.js';
import type { StoredResponse } from './idempotency.js';
import type { RedemptionResult } from './redemption-service.js';
import type { StoreCreditService, StoreCreditSpendResult } from './store-credit.js';
import { ADMIN_SCOPE } from '../shoppers/shopper-access.js';

export interface LoyaltyHandlerDeps {
  readonly loyalty: LoyaltyService;
  readonly members: MemberService;
  readonly shoppers: ShopperService;
  readonly storeCredit: StoreCreditService;
}

/** The loyalty app API. A redemption with `kind: store_credit` spends store credit (store-credit.ts). */
export function loyaltyHandlers({ loyalty, members, shoppers, storeCredit }: LoyaltyHandlerDeps): HandlerMap {
  const shopper = (req: Request): Promise<string> => reachableShopper(shoppers, req);
  /** Runs a write for the path's shopper; one merged away meanwhile answers 308 like any merged one. */
  const forShopper = async <T>(req: Request, write: (ref: string) => Promise<T>): Promise<T> => {
    const ref = await shopper(req);
    try {
      return await write(ref);
    } catch (error) {
      if (error instanceof ShopperMergedMeanwhile) await shopper(req);
      throw error;
    }
  };
  return contractHandlers({
    async getProgramme(_req, res) {
      res.json(programmeJson(await loyalty.programme.current()));
    },

    async putProgramme(req, res) {
      const rules = { ...DEFAULT_RULES, ...req.valid.body };
      res.status(201).json(programmeJson(await loyalty.programme.publish(rules, actorOf(req))));
    },

    async getShopperBalance(req, res) {
      const ref = await shopper(req);
      res.json(await loyalty.balance(ref));
    },

    async getShopperTier(req, res) {
      const ref = await shopper(req);
      res.json(tierJson(await loyalty.tiers.progress(ref)));
    },

    async listShopperLedger(req, res) {
      const ref = await shopper(req);
      const { query } = req.valid;
      const page = await loyalty.ledger(ref, {
        limit: filled(query.limit, 'limit'),
        ...(query.cursor === undefined ? {} : { cursor: query.cursor }),
      });
      res.json(pageBody(page, entryJson));
    },

    async redeemPoints(req, res) {
      const {
        body,
        headers: { 'idempotency-key': key },
      } = req.valid;
      const result = await forShopper<StoredResponse<RedemptionResult | StoreCreditSpendResult>>(req, (ref) =>
        'kind' in body ? storeCredit.spend(ref, body, key, actorOf(req)) : loyalty.redeem(ref, body, key, actorOf(req)),
      );
      if (result.replayed) res.setHeader('Idempotent-Replayed', 'true');
      res.status(result.status).json(result.body);
    },

    async reverseRedemption(req, res) {
      const id = req.valid.path.redemptionId;
      res.json(await forShopper(req, (ref) => loyalty.reverseRedemption(ref, id, actorOf(req))));
    },

    async enrolShopper(req, res) {
      res.json(membershipJson(await forShopper(req, (ref) => members.enrol(ref, req.valid.body, actorOf(req)))));
    },

    async linkShopperCard(req, res) {
      const { body } = req.valid;
      const card: string | CardInput =
        'token' in body
          ? body.token
          : 'par' in body
            ? { kind: 'par', par: body.par }
            : { kind: 'alias', namespace: body.alias.namespace, value: body.alias.value };
      const admin = principalOf(req).scopes.has(ADMIN_SCOPE);
      const link = await forShopper(req, (ref) => members.linkCard(ref, card, { ...actorOf(req), admin }));
      res.json({
        shopperReference: link.shopperReference,
        cardToken: link.cardToken,
        alreadyLinked: link.alreadyLinked,
        ...(link.mergedShopperReference === undefined ? {} : { mergedShopperReference: link.mergedShopperReference }),
      });
    },
  });
}

/**
 * The shopper of the path, if the caller may reach it (`404` otherwise, as for an unknown one). A
 * merged reference answers `308` to the same URL under the survivor's reference.
 */
export async function reachableShopper(shoppers: ShopperService, req: Request): Promise<string> {
  const ref = validInput(req).path['shopperReference'] as string;
  const access = await shoppers.access(principalOf(req), ref);
  if (access.kind === 'shopper') return access.shopperRef;
  throw new AppError('SHOPPER_MERGED', {
    detail: 'This shopper was merged; repeat the request at Location.',
    extensions: { survivorReference: access.survivorRef },
    // Headers are not masked on the way out: a card number pasted into the query is masked here.
    headers: {
      Location: maskPans(req.originalUrl.replace(`/shoppers/${ref}`, `/shoppers/${access.survivorRef}`)).replace(
        /[^\x21-\x7e]/g,
        (c) => encodeURIComponent(c),
      ),
    },
  });
}

function programmeJson(p: ProgrammeVersion): Schemas['Programme'] {
  return {
    version: p.version,
    effectiveFrom: p.effectiveFrom.toISOString(),
    createdAt: p.createdAt.toISOString(),
    // Stored versions were validated against this contract when put; the domain types channels as strings.
    rules: { ...DEFAULT_RULES, ...p.rules } as Schemas['Programme']['rules'],
  };
}

function tierJson(t: ShopperTier): Schemas['ShopperTier'] {
  const base = {
    shopperReference: t.shopperReference,
    programmeVersion: t.programmeVersion,
    asOf: t.asOf.toISOString(),
  };
  const { policy, progress } = t;
  if (policy === undefined || progress === undefined) return base;
  return {
    ...base,
    tier: progress.tier,
    multiplier: progress.multiplier,
    measure: policy.measure,
    ...(policy.currency === undefined ? {} : { currency: policy.currency }),
    qualifyingFigure: progress.figure,
    window: { from: progress.window.from.toISOString(), to: progress.window.to.toISOString() },
    ...(progress.next === undefined ? {} : { nextTier: progress.next }),
    ...(progress.heldUntil === null ? {} : { heldUntil: progress.heldUntil.toISOString() }),
  };
}

function membershipJson(m: Membership): Schemas['Membership'] {
  return {
    shopperReference: m.shopperReference,
    enrolled: m.enrolled,
    ...(m.enrolledAt === undefined ? {} : { enrolledAt: m.enrolledAt }),
    ...(m.externalMemberId === undefined ? {} : { externalMemberId: m.externalMemberId }),
    hasEmail: m.hasEmail,
  };
}

/** What payments earned, as the purchase history shows it: one read per page. */
export function purchaseEarnings(
  loyalty: LoyaltyService,
): (paymentIds: readonly string[]) => Promise<Map<string, Schemas['PurchaseEarning']>> {
  return async (paymentIds) => {
    const lots = await loyalty.paymentLots(paymentIds);
    return new Map([...lots].map(([id, lot]) => [id, earningJson(lot)]));
  };
}

function earningJson(lot: PaymentLot): Schemas['PurchaseEarning'] {
  return {
    programmeVersion: lot.rule_version,
    pending: lot.pending,
    earned: lot.earn_target,
    reversed: lot.reversal_target,
    ...(lot.tier === undefined || lot.tier === null
      ? {}
      : { tier: { name: lot.tier.name, multiplier: lot.tier.multiplier } }),
    campaigns: (lot.campaigns ?? []).map((c) => ({
      campaignId: c.campaignId,
      version: c.version,
      qualified: c.qualified,
      conditions: c.conditions.map((r) => ({ condition: r.condition, passed: r.passed })),
      ...(c.limitedBy === undefined ? {} : { limitedBy: c.limitedBy }),
      bonus: c.bonus,
      ...(c.requested === undefined ? {} : { requested: c.requested }),
      ...(c.purchaseNumber === undefined ? {} : { purchaseNumber: c.purchaseNumber }),
      ...(c.capPeriod === undefined ? {} : { capPeriod: c.capPeriod }),
      pending: c.pending,
      earned: c.earn,
      reversed: c.reversal,
    })),
  };
}

/** The shopper's store credit (issued by returns at a till), by currency. */
export function storeCreditHandlers(storeCredit: StoreCreditService, shoppers: ShopperService): HandlerMap {
  return contractHandlers({
    async getShopperStoreCredit(req, res) {
      const ref = await reachableShopper(shoppers, req);
      const balances = await storeCredit.balances([ref, ...(await shoppers.mergedInto(ref))]);
      res.json({ shopperReference: ref, balances });
    },
  });
}

function entryJson(e: LedgerEntry): Schemas['LedgerEntry'] {
  return {
    id: e.id,
    kind: e.kind,
    points: e.points,
    availableDelta: e.available_delta,
    pendingDelta: e.pending_delta,
    shopperReference: e.shopper_ref,
    ...(e.payment_id === null ? {} : { paymentId: e.payment_id }),
    ...(e.redemption_id === null ? {} : { redemptionId: e.redemption_id }),
    ...(e.lot_id === null ? {} : { lotId: e.lot_id }),
    ...(e.rule_version === null ? {} : { ruleVersion: e.rule_version }),
    ...(e.campaign_id === null ? {} : { campaignId: e.campaign_id }),
    ...(e.campaign_version === null ? {} : { campaignVersion: e.campaign_version }),
    createdAt: e.created_at.toISOString(),
  };
}
