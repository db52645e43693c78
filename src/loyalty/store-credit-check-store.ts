/**
 * SQL of the store-credit part of `npm run loyalty -- check` (issue 22): one aggregate query per
 * invariant, returning the rows that break it (ledger-check-store.ts runs them with the points'):
 * - every store-credit balance (and its issued and spent totals) equals the sums of its entries, and
 *   no entry lacks its balance;
 * - every store-credit return issued exactly its amount once, and nothing was issued without one;
 * - every till return's refund is a fact of its payment (its own, or the gateway's under the same key);
 * - a merged-away shopper holds no store credit.
 */
export const STORE_CREDIT_CHECKS: readonly { readonly name: string; readonly subject: string; readonly sql: string }[] =
  [
    {
      name: 'store-credit balances equal the sums of their entries',
      subject: 'shopper_currency',
      sql: `select coalesce(b.shopper_ref, e.shopper_ref) || ' ' || coalesce(b.currency, e.currency) as shopper_currency,
                   b.balance, b.issued, b.spent, coalesce(e.total, 0) as entries_total,
                   coalesce(e.issued, 0) as entries_issued, coalesce(e.spent, 0) as entries_spent
            from store_credit_balances b
            full join (select shopper_ref, currency, sum(amount) as total,
                              sum(case when kind = 'issued' then amount else 0 end) as issued,
                              -sum(case when kind = 'spent' then amount else 0 end) as spent
                       from store_credit_entries group by shopper_ref, currency) e
              on e.shopper_ref = b.shopper_ref and e.currency = b.currency
            where b.shopper_ref is null or b.balance <> coalesce(e.total, 0)
               or b.issued <> coalesce(e.issued, 0) or b.spent <> coalesce(e.spent, 0) or b.balance < 0`,
    },
    {
      name: 'every store-credit return issued exactly its amount, and nothing was issued without one',
      subject: 'return_id',
      sql: `select coalesce(r.id, e.return_id) as return_id, r.amount, r.currency, e.issued, e.currency as issued_currency
            from (select * from till_returns where mode = 'store_credit') r
            full join (select return_id, max(currency) as currency, sum(amount) as issued, count(*) as n
                       from store_credit_entries where kind = 'issued' group by return_id) e
              on e.return_id = r.id
            where r.id is null or e.return_id is null or e.issued <> r.amount or e.currency <> r.currency or e.n <> 1`,
    },
    {
      name: 'every till return is a refund fact of its payment',
      subject: 'id',
      sql: `select r.id, r.payment_id, r.amount from till_returns r
            where not exists (select 1 from payment_facts f
                              where f.payment_id = r.payment_id and f.fact_key = r.fact_key
                                and f.kind in ('refunded', 'cancel_or_refund') and f.amount = r.amount)`,
    },
    {
      name: 'a merged-away shopper holds no store credit',
      subject: 'shopper_ref',
      sql: `select b.shopper_ref, b.currency, b.balance from store_credit_balances b
            join shopper_merges m on m.merged_ref = b.shopper_ref
            where b.balance <> 0`,
    },
  ];
