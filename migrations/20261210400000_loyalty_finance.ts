/**
 * Loyalty for finance (issue 21): expiry notices, goodwill adjustments and missing-points claims.
 *
 * - `loyalty_expiry_notices`: one row per lot, notice window (days before expiry) and expiry date,
 *   claimed by the insert that writes its `points.expiring` event: the primary key makes a notice
 *   exactly once across instances and concurrent runs. Append-only.
 * - `loyalty_adjustments`: an operator's goodwill grant or debit, or a granted missing-points claim,
 *   with its reason and the operator's day on the database clock. Append-only.
 * - `loyalty_operator_daily_grants`: the points each operator granted per UTC day (database clock),
 *   raised by one conditional upsert that cannot pass the cap; `loyalty check` reconciles it with
 *   the adjustments, so lowering it by hand is found.
 * - `loyalty_earning_keys`: who earned for a gateway payment (provider + the gateway's payment id):
 *   the payment's own lot or a missing-points claim, whichever inserted the key first. Append-only.
 * - `loyalty_lots` may belong to an adjustment instead of a payment (a granted claim or goodwill
 *   points are a lot, spent and expired like any other).
 * - `loyalty_entries.kind` also takes `goodwill_credit`, `goodwill_debit`, `missing_points_credit`;
 *   the constraint is rebuilt from the kinds it allows now plus these, so kinds added by another
 *   migration are kept.
 */
import type { Knex } from 'knex';

const KINDS = ['goodwill_credit', 'goodwill_debit', 'missing_points_credit'];
const APPEND_ONLY = ['loyalty_expiry_notices', 'loyalty_adjustments', 'loyalty_earning_keys'];

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('loyalty_expiry_notices', (t) => {
    t.text('lot_id').notNullable().references('loyalty_lots.id');
    t.integer('notice_days').notNullable();
    t.timestamp('expires_at', { useTz: true }).notNullable();
    t.text('shopper_ref').notNullable().references('shoppers.shopper_ref');
    // The points left in the lot when noticed; the event's id derives from the key (noticeKey).
    t.bigInteger('points').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.primary(['lot_id', 'notice_days', 'expires_at']);
  });

  await knex.schema.createTable('loyalty_adjustments', (t) => {
    t.text('id').primary();
    t.text('shopper_ref').notNullable().references('shoppers.shopper_ref');
    t.text('kind').notNullable();
    t.bigInteger('points').notNullable();
    t.text('reason').notNullable();
    t.text('operator').notNullable();
    t.text('provider');
    t.text('payment_ref');
    // The operator's day on the database clock (the daily cap's day), UTC.
    t.date('operator_day').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.index(['operator', 'operator_day']);
  });
  await knex.raw(`
    alter table loyalty_adjustments
      add constraint loyalty_adjustments_kind_check check (kind in ('goodwill', 'missing_points')),
      add constraint loyalty_adjustments_points_check check (points <> 0),
      add constraint loyalty_adjustments_claim_check check (
        (kind = 'missing_points') = (provider is not null and payment_ref is not null)
        and (kind <> 'missing_points' or points > 0))`);

  await knex.schema.createTable('loyalty_operator_daily_grants', (t) => {
    t.text('operator').notNullable();
    t.date('day').notNullable();
    t.bigInteger('points').notNullable();
    t.primary(['operator', 'day']);
  });
  await knex.raw(
    `alter table loyalty_operator_daily_grants add constraint loyalty_operator_daily_grants_points_check check (points >= 0)`,
  );

  await knex.schema.createTable('loyalty_earning_keys', (t) => {
    t.text('provider').notNullable();
    t.text('payment_ref').notNullable();
    t.text('won_by').notNullable();
    t.text('payment_id').references('payments.id');
    t.text('adjustment_id').references('loyalty_adjustments.id');
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.primary(['provider', 'payment_ref']);
  });
  await knex.raw(`
    alter table loyalty_earning_keys add constraint loyalty_earning_keys_winner_check check (
      (won_by = 'payment' and payment_id is not null and adjustment_id is null)
      or (won_by = 'claim' and adjustment_id is not null and payment_id is null))`);
  // Payments that earned before this migration hold their key already.
  await knex.raw(`
    insert into loyalty_earning_keys (provider, payment_ref, won_by, payment_id, created_at)
    select p.provider, p.external_id, 'payment', p.id, l.created_at
      from loyalty_lots l join payments p on p.id = l.payment_id
    on conflict do nothing`);

  await knex.raw('alter table loyalty_lots alter column payment_id drop not null');
  await knex.schema.alterTable('loyalty_lots', (t) => {
    t.text('adjustment_id').unique().references('loyalty_adjustments.id');
  });
  await knex.raw(
    `alter table loyalty_lots add constraint loyalty_lots_owner_check check ((payment_id is null) <> (adjustment_id is null))`,
  );

  await replaceKindCheck(knex, (kinds) => [...new Set([...kinds, ...KINDS])]);

  await knex.raw(`
    create function loyalty_finance_append_only() returns trigger language plpgsql as $$
    begin
      raise exception using
        errcode = 'check_violation',
        constraint = TG_TABLE_NAME || '_append_only',
        message = format('%s is append-only: %s refused', TG_TABLE_NAME, TG_OP);
    end $$`);
  for (const table of APPEND_ONLY) {
    await knex.raw(
      `create trigger ${table}_append_only before update or delete on ${table}
       for each row execute function loyalty_finance_append_only()`,
    );
  }
  for (const table of [...APPEND_ONLY, 'loyalty_operator_daily_grants', 'loyalty_lots']) {
    await knex.raw('select card_data_guard_attach(?)', [table]);
  }
}

/** Rebuilds the entry kinds' check from the kinds it allows now (other migrations' kinds stay). */
async function replaceKindCheck(knex: Knex, next: (kinds: string[]) => string[]): Promise<void> {
  const result = (await knex.raw(
    `select pg_get_constraintdef(oid) as def from pg_constraint where conname = 'loyalty_entries_kind_check'`,
  )) as { rows: { def: string }[] };
  const def = result.rows[0]?.def ?? '';
  const kinds = [...def.matchAll(/'([a-z_]+)'/g)].map((m) => m[1] as string);
  const list = next(kinds)
    .map((k) => `'${k}'`)
    .join(', ');
  await knex.raw('alter table loyalty_entries drop constraint loyalty_entries_kind_check');
  await knex.raw(`alter table loyalty_entries add constraint loyalty_entries_kind_check check (kind in (${list}))`);
}

export async function down(knex: Knex): Promise<void> {
  await replaceKindCheck(knex, (kinds) => kinds.filter((k) => !KINDS.includes(k)));
  await knex.raw('alter table loyalty_lots drop constraint loyalty_lots_owner_check');
  await knex.schema.alterTable('loyalty_lots', (t) => {
    t.dropColumn('adjustment_id');
  });
  await knex.raw('alter table loyalty_lots alter column payment_id set not null');
  await knex.raw('select card_data_guard_attach(?)', ['loyalty_lots']);
  for (const table of [
    'loyalty_earning_keys',
    'loyalty_operator_daily_grants',
    'loyalty_adjustments',
    'loyalty_expiry_notices',
  ]) {
    await knex.schema.dropTableIfExists(table);
  }
  await knex.raw('drop function loyalty_finance_append_only()');
}
