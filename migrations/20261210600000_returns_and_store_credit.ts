/**
 * Buy online, return in store (issue 22).
 *
 * - `till_returns`: one row per return recorded at a till, against the original payment. A refund
 *   names the gateway's refund id (`fact_key`), which is also the key of the `refunded` fact it adds,
 *   so the gateway's own refund webhook for it is the same fact and counts once whichever comes
 *   first; a store-credit return's fact key is `store-credit:<return id>`. Append-only.
 * - `payment_facts.return_id`: a fact added by a till return rather than by a webhook delivery
 *   (exactly one of `inbox_id`, `return_id`).
 * - `store_credit_balances`: a second, currency-denominated balance per shopper, written only under
 *   the shopper's `loyalty_accounts` lock (the lock every ledger writer takes), never below zero.
 * - `store_credit_entries`: its ledger, append-only, one unique business key per movement.
 */
import type { Knex } from 'knex';

const APPEND_ONLY = ['till_returns', 'store_credit_entries'];

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('till_returns', (t) => {
    t.text('id').primary();
    t.text('payment_id').notNullable().references('payments.id');
    t.text('shopper_ref').notNullable().references('shoppers.shopper_ref');
    t.text('mode').notNullable();
    t.bigInteger('amount').notNullable();
    t.text('currency').notNullable();
    // The refund's matching key: the gateway's refund id, or `store-credit:<id>`.
    t.text('fact_key').notNullable();
    t.text('reference').notNullable();
    t.text('store_id');
    t.text('created_by').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.unique(['payment_id', 'fact_key']);
  });
  await knex.raw(`
    alter table till_returns
      add constraint till_returns_mode_check check (mode in ('refund', 'store_credit')),
      add constraint till_returns_amount_check check (amount > 0)`);
  await knex.raw(`create index till_returns_shopper on till_returns (shopper_ref, created_at desc)`);

  await knex.raw(`
    alter table payment_facts
      alter column inbox_id drop not null,
      add column return_id text references till_returns (id),
      add constraint payment_facts_source_check check ((inbox_id is null) <> (return_id is null))`);

  await knex.schema.createTable('store_credit_balances', (t) => {
    t.text('shopper_ref').notNullable().references('shoppers.shopper_ref');
    t.text('currency').notNullable();
    t.bigInteger('balance').notNullable().defaultTo(0);
    t.bigInteger('issued').notNullable().defaultTo(0);
    t.bigInteger('spent').notNullable().defaultTo(0);
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('updated_at', { useTz: true }).notNullable();
    t.primary(['shopper_ref', 'currency']);
  });
  await knex.raw(`
    alter table store_credit_balances
      add constraint store_credit_balances_nonnegative check (balance >= 0 and issued >= 0 and spent >= 0),
      add constraint store_credit_balances_currency_check check (currency ~ '^[A-Z]{3}$')`);

  await knex.schema.createTable('store_credit_entries', (t) => {
    t.text('id').primary();
    t.text('shopper_ref').notNullable().references('shoppers.shopper_ref');
    t.text('currency').notNullable();
    t.text('kind').notNullable();
    // Signed, minor units: what the entry did to the balance.
    t.bigInteger('amount').notNullable();
    t.text('return_id').references('till_returns.id');
    t.text('reference');
    t.text('description');
    t.text('created_by').notNullable();
    t.text('business_key').notNullable().unique();
    t.timestamp('created_at', { useTz: true }).notNullable();
  });
  await knex.raw(`
    alter table store_credit_entries
      add constraint store_credit_entries_kind_check check (kind in ('issued', 'spent', 'merge_in', 'merge_out')),
      add constraint store_credit_entries_amount_check check (amount <> 0)`);
  await knex.raw(
    `create index store_credit_entries_history on store_credit_entries (shopper_ref, created_at desc, id desc)`,
  );

  for (const table of APPEND_ONLY) {
    await knex.raw(`
      create function ${table}_append_only() returns trigger language plpgsql as $$
      begin
        raise exception using
          errcode = 'check_violation',
          constraint = '${table}_append_only',
          message = format('${table} is append-only: %s refused', TG_OP);
      end $$`);
    await knex.raw(
      `create trigger ${table}_append_only before update or delete on ${table}
       for each row execute function ${table}_append_only()`,
    );
  }
  for (const table of ['till_returns', 'payment_facts', 'store_credit_balances', 'store_credit_entries']) {
    await knex.raw('select card_data_guard_attach(?)', [table]);
  }
}

export async function down(knex: Knex): Promise<void> {
  for (const table of APPEND_ONLY) {
    await knex.raw(`drop trigger ${table}_append_only on ${table}`);
    await knex.raw(`drop function ${table}_append_only()`);
  }
  await knex.schema.dropTable('store_credit_entries');
  await knex.schema.dropTable('store_credit_balances');
  await knex.raw(`delete from payment_facts where return_id is not null`);
  await knex.raw(`
    alter table payment_facts
      drop constraint payment_facts_source_check,
      drop column return_id,
      alter column inbox_id set not null`);
  await knex.schema.dropTable('till_returns');
}
