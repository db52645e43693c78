/**
 * The campaign state a webhook batch judges its new payments on, read once under the batch's locks
 * and written back with its bookings: each shopper's activations, purchase counts and grants per cap
 * period (under the shopper's account lock), and each budgeted campaign's total spent (under its
 * budget row's lock, taken after the accounts: payments, accounts, budgets is the lock order).
 *
 * **Decided once, at booking.** A payment is judged on this state when its lot is created (the first
 * transition after its authorisation is known), and the judgement is stored on the lot: its grant
 * (after the per-payment cap, the per-shopper cap and the budget), its purchase number, each
 * condition. Every later effect (capture, refund, chargeback, redelivery, in any order) scales that
 * stored grant and never judges again, so nothing a payment's own events do, nor anything granted to
 * other payments since, changes its result.
 *
 * **What "order-independent" means with shared state.** Permutations and duplicates of one payment's
 * events give the same ledger. Across payments, the budget, the per-shopper caps and the purchase
 * numbers are first come, first served in the order the lots are created (the commit order of their
 * bookings), so which of two racing payments gets the last budget points is decided by that order,
 * and nothing else; the budget is never overspent, by one point, whatever the order or the instances.
 * A grant is not returned to the budget or the cap when the payment is cancelled or refunded.
 */
import type { Knex } from 'knex';
import {
  capPeriodOf,
  countsPurchases,
  isStateful,
  type CampaignLedgerState,
  type CampaignOutcome,
  type CampaignVersion,
} from './campaign-rules.js';
import { lockBudgets, usageAndActivations, writeBudgets, writeUsage, type UsageRow } from './campaign-usage-store.js';

/** The `period` of a shopper's purchase counter (and lifetime grants) for a campaign. */
const LIFETIME = 'campaign';

export class CampaignUsage {
  private readonly usage = new Map<string, UsageRow>();
  private readonly changed = new Set<string>();
  private readonly spentChanged = new Set<string>();

  private constructor(
    private readonly activations: ReadonlyMap<string, Date>,
    private readonly spent: Map<string, number>,
    usage: readonly UsageRow[],
  ) {
    for (const row of usage) this.usage.set(usageKey(row.shopper_ref, row.campaign_id, row.period), row);
  }

  /** Nothing to read: no payment of the batch is judged by a campaign that needs state. */
  static none(): CampaignUsage {
    return new CampaignUsage(new Map(), new Map(), []);
  }

  /**
   * Reads the state of these shoppers' new payments (two statements at most; none when no campaign
   * pinned needs state). The accounts of the shoppers are locked by the caller.
   */
  static async open(
    trx: Knex.Transaction,
    judged: readonly { readonly shopperRef: string; readonly versions: readonly CampaignVersion[] }[],
    now: Date,
  ): Promise<CampaignUsage> {
    const stateful = judged.map((j) => ({ ...j, versions: j.versions.filter((v) => isStateful(v.definition)) }));
    const needed = stateful.filter((j) => j.versions.length > 0);
    if (needed.length === 0) return CampaignUsage.none();
    const budgeted = needed.flatMap((j) => j.versions.filter((v) => v.definition.budget !== undefined));
    const { usage, activations } = await usageAndActivations(
      trx,
      needed.map((j) => j.shopperRef),
      needed.flatMap((j) => j.versions.map((v) => v.campaignId)),
    );
    const spent = await lockBudgets(
      trx,
      budgeted.map((v) => v.campaignId),
      now,
    );
    return new CampaignUsage(
      new Map(activations.map((a) => [usageKey(a.shopper_ref, a.campaign_id, ''), a.activated_at])),
      spent,
      usage,
    );
  }

  /** The state one shopper's next payment is judged on. */
  stateOf(shopperRef: string): CampaignLedgerState {
    return {
      activatedAt: (id) => this.activations.get(usageKey(shopperRef, id, '')),
      purchases: (id) => this.row(shopperRef, id, LIFETIME).purchases,
      grantedInPeriod: (id, period) => this.row(shopperRef, id, period).granted,
      budgetSpent: (id) => this.spent.get(id) ?? 0,
    };
  }

  /**
   * Adds a payment's judgement to the state the shopper's next payment is judged on; true when it
   * changed anything (a purchase counted, a capped or budgeted grant), and then the caller books a lot.
   */
  record(
    shopperRef: string,
    outcomes: readonly CampaignOutcome[],
    versions: readonly CampaignVersion[],
    authorisedAt: Date,
  ): boolean {
    let changed = false;
    for (const o of outcomes) {
      const v = versions.find((x) => x.campaignId === o.campaignId && x.version === o.version);
      if (v === undefined || !isStateful(v.definition)) continue;
      const d = v.definition;
      if (countsPurchases(d) && o.purchaseNumber !== undefined) {
        this.update(shopperRef, o.campaignId, LIFETIME, { purchases: o.purchaseNumber });
        changed = true;
      }
      if (o.bonus <= 0) continue;
      if (d.maxBonusPerShopper !== undefined) {
        const period = capPeriodOf(d, authorisedAt);
        const granted = this.row(shopperRef, o.campaignId, period).granted + o.bonus;
        this.update(shopperRef, o.campaignId, period, { granted });
        changed = true;
      }
      if (d.budget !== undefined) {
        this.spent.set(o.campaignId, (this.spent.get(o.campaignId) ?? 0) + o.bonus);
        this.spentChanged.add(o.campaignId);
        changed = true;
      }
    }
    return changed;
  }

  /** Writes what changed (one statement each for counters and budgets). */
  async flush(trx: Knex.Transaction, now: Date): Promise<void> {
    await writeUsage(
      trx,
      [...this.changed].map((k) => this.usage.get(k) as UsageRow),
      now,
    );
    await writeBudgets(trx, new Map([...this.spentChanged].map((id) => [id, this.spent.get(id) ?? 0])), now);
    this.changed.clear();
    this.spentChanged.clear();
  }

  private row(shopperRef: string, campaignId: string, period: string): UsageRow {
    return (
      this.usage.get(usageKey(shopperRef, campaignId, period)) ?? {
        shopper_ref: shopperRef,
        campaign_id: campaignId,
        period,
        purchases: 0,
        granted: 0,
      }
    );
  }

  private update(shopperRef: string, campaignId: string, period: string, change: Partial<UsageRow>): void {
    const key = usageKey(shopperRef, campaignId, period);
    this.usage.set(key, { ...this.row(shopperRef, campaignId, period), ...change });
    this.changed.add(key);
  }
}

function usageKey(shopperRef: string, campaignId: string, period: string): string {
  return `${shopperRef}\u0000${campaignId}\u0000${period}`;
}
