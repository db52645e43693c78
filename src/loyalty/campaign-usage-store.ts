/**
 * SQL of the campaign state payments are judged on: budgets (`loyalty_campaign_budgets`), per-shopper
 * counters (`loyalty_campaign_usage`) and opt-ins (`loyalty_campaign_activations`). Counters only
 * grow and activations are never changed (the database refuses otherwise).
 */
import type { Knex } from 'knex';

type Db = Knex | Knex.Transaction;

export interface UsageRow {
  readonly shopper_ref: string;
  readonly campaign_id: string;
  readonly period: string;
  readonly purchases: number;
  readonly granted: number;
}

export interface ActivationRow {
  readonly shopper_ref: string;
  readonly campaign_id: string;
  readonly activated_at: Date;
}

/**
 * Locks these campaigns' budget rows (created at 0 when missing), in campaign order (one statement),
 * and answers what each has spent. Held to the commit: concurrent grants of one campaign, on any
 * instance, read and write its `spent` one after the other.
 */
export async function lockBudgets(
  trx: Knex.Transaction,
  campaignIds: readonly string[],
  now: Date,
): Promise<Map<string, number>> {
  const sorted = [...new Set(campaignIds)].sort();
  if (sorted.length === 0) return new Map();
  const result = (await trx.raw(
    `insert into loyalty_campaign_budgets (campaign_id, spent, updated_at)
     values ${sorted.map(() => '(?, 0, ?)').join(', ')}
     on conflict (campaign_id) do update set spent = loyalty_campaign_budgets.spent
     returning campaign_id, spent`,
    sorted.flatMap((id) => [id, now]),
  )) as { rows: { campaign_id: string; spent: number }[] };
  return new Map(result.rows.map((r) => [r.campaign_id, Number(r.spent)]));
}

/** Writes the budgets' new totals (rows locked by {@link lockBudgets} in this transaction). */
export async function writeBudgets(
  trx: Knex.Transaction,
  spent: ReadonlyMap<string, number>,
  now: Date,
): Promise<void> {
  if (spent.size === 0) return;
  const rows = [...spent].sort(([a], [b]) => (a < b ? -1 : 1));
  await trx.raw(
    `update loyalty_campaign_budgets b set spent = v.spent, updated_at = ?
       from (values ${rows.map(() => '(?::text, ?::bigint)').join(', ')}) as v(campaign_id, spent)
      where b.campaign_id = v.campaign_id`,
    [now, ...rows.flat()],
  );
}

/** The shoppers' counters and activations of these campaigns, in one statement. */
export async function usageAndActivations(
  trx: Knex.Transaction,
  shopperRefs: readonly string[],
  campaignIds: readonly string[],
): Promise<{ usage: UsageRow[]; activations: ActivationRow[] }> {
  const shoppers = [...new Set(shopperRefs)];
  const campaigns = [...new Set(campaignIds)];
  if (shoppers.length === 0 || campaigns.length === 0) return { usage: [], activations: [] };
  const list = (values: readonly string[]): string => values.map(() => '?').join(', ');
  const result = (await trx.raw(
    `select 'usage' as kind, shopper_ref, campaign_id, period, purchases, granted, null::timestamptz as activated_at
       from loyalty_campaign_usage where shopper_ref in (${list(shoppers)}) and campaign_id in (${list(campaigns)})
     union all
     select 'activation', shopper_ref, campaign_id, null, null, null, activated_at
       from loyalty_campaign_activations where shopper_ref in (${list(shoppers)}) and campaign_id in (${list(campaigns)})`,
    [...shoppers, ...campaigns, ...shoppers, ...campaigns],
  )) as { rows: (UsageRow & { kind: string; activated_at: Date | string | null })[] };
  const usage: UsageRow[] = [];
  const activations: ActivationRow[] = [];
  for (const r of result.rows) {
    if (r.kind === 'usage') {
      usage.push({
        shopper_ref: r.shopper_ref,
        campaign_id: r.campaign_id,
        period: r.period,
        purchases: Number(r.purchases),
        granted: Number(r.granted),
      });
    } else {
      activations.push({
        shopper_ref: r.shopper_ref,
        campaign_id: r.campaign_id,
        activated_at: new Date(r.activated_at as string),
      });
    }
  }
  return { usage, activations };
}

/** Writes counters (absolute values, read under the shoppers' account locks this transaction holds). */
export async function writeUsage(trx: Knex.Transaction, rows: readonly UsageRow[], now: Date): Promise<void> {
  if (rows.length === 0) return;
  await trx.raw(
    `insert into loyalty_campaign_usage (shopper_ref, campaign_id, period, purchases, granted, updated_at)
     values ${rows.map(() => '(?, ?, ?, ?, ?, ?)').join(', ')}
     on conflict (shopper_ref, campaign_id, period)
     do update set purchases = excluded.purchases, granted = excluded.granted, updated_at = excluded.updated_at`,
    rows.flatMap((r) => [r.shopper_ref, r.campaign_id, r.period, r.purchases, r.granted, now]),
  );
}

/** Records the shopper's activation unless there is one; answers the (first) activation. */
export async function activate(
  trx: Knex.Transaction,
  row: { shopper_ref: string; campaign_id: string; activated_at: Date; activated_by: string },
): Promise<{ activatedAt: Date; created: boolean }> {
  const inserted = (await trx('loyalty_campaign_activations')
    .insert(row)
    .onConflict(['shopper_ref', 'campaign_id'])
    .ignore()
    .returning('activated_at')) as { activated_at: Date }[];
  if (inserted.length > 0) return { activatedAt: new Date(row.activated_at), created: true };
  const found = (await trx('loyalty_campaign_activations')
    .where({ shopper_ref: row.shopper_ref, campaign_id: row.campaign_id })
    .first('activated_at')) as { activated_at: Date };
  return { activatedAt: new Date(found.activated_at), created: false };
}

/** A shopper's activations, by campaign. */
export async function activationsOf(db: Db, shopperRef: string): Promise<Map<string, Date>> {
  const rows = (await db('loyalty_campaign_activations').where({ shopper_ref: shopperRef })) as ActivationRow[];
  return new Map(rows.map((r) => [r.campaign_id, new Date(r.activated_at)]));
}

/** Per campaign: bonus points granted in all and the number of shoppers who activated it. */
export async function campaignTotals(db: Db): Promise<Map<string, { spent: number; activations: number }>> {
  const result = (await db.raw(
    `select campaign_id, sum(spent)::bigint as spent, sum(activations)::bigint as activations from (
       select campaign_id, spent, 0 as activations from loyalty_campaign_budgets
       union all
       select campaign_id, 0, count(*) from loyalty_campaign_activations group by campaign_id
     ) t group by campaign_id`,
  )) as { rows: { campaign_id: string; spent: number; activations: number }[] };
  return new Map(
    result.rows.map((r) => [r.campaign_id, { spent: Number(r.spent), activations: Number(r.activations) }]),
  );
}
