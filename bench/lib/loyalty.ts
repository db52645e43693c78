/**
 * Loyalty bench data: shoppers with points, written straight into the bench database with a few
 * set-based statements (no API calls), and a shopper token for each.
 *
 * Every identifier is derived from the shopper's number n (1…count) by md5, with the digits mapped
 * to letters so that each is a well-formed id (`shp_` and 26 of [a-z2-7]). So the same reference can
 * be computed in TypeScript (to sign tokens and build URLs), in the seed's SQL and inside a pgbench
 * script (from a `\set` random number, with no extra round trip to look it up).
 *
 * The seeded ledger is consistent: one captured payment per lot, each lot credited by one `earn`
 * entry (its business key `payment:<id>:1`, as the service would have booked it), each account the
 * sum of its lots. `checkLedger` finds nothing to report on it.
 */
import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import { loadDevIssuer } from '../../src/auth/dev-issuer.js';
import { loadConfig } from '../../src/config/config.js';

/** The id `<prefix>_…` of `seed`, as {@link idSql} computes it in SQL. */
export function benchId(prefix: string, seed: string): string {
  const hex = createHash('md5').update(seed).digest('hex');
  return `${prefix}_${[...hex.slice(0, 26)].map((c) => (c >= '0' && c <= '9' ? 'ghijklmnop'.charAt(Number(c)) : c)).join('')}`;
}

/** SQL for {@link benchId}: `seedSql` is a text expression (it may use pgbench variables). */
export function idSql(prefix: string, seedSql: string): string {
  return `('${prefix}_' || substr(translate(md5(${seedSql}), '0123456789', 'ghijklmnop'), 1, 26))`;
}

export const shopperRef = (n: number): string => benchId('shp', `shopper-${n}`);
/** The shopper reference of number `nSql` (an integer SQL expression, e.g. `n` or `:k`). */
export const shopperRefSql = (nSql: string): string => idSql('shp', `'shopper-' || ${nSql}`);

export interface SeedOptions {
  readonly shoppers: number;
  /** Lots (and payments) per shopper. The first expires within 30 days, later ones after 60 to 360. */
  readonly lotsPerShopper: number;
  readonly pointsPerLot: number;
}

export interface SeedReport {
  readonly shoppers: number;
  readonly lots: number;
  readonly milliseconds: number;
}

/** Seeds shoppers, payments, lots, entries and accounts in one transaction (the service migrated first). */
export async function seedLoyalty(knex: Knex, options: SeedOptions): Promise<SeedReport> {
  const started = Date.now();
  const { shoppers, lotsPerShopper, pointsPerLot } = options;
  const ref = shopperRefSql('n');
  const pay = idSql('pay', `'payment-' || n || '-' || j`);
  const lot = idSql('lot', `'lot-' || n || '-' || j`);
  const led = idSql('led', `'entry-' || n || '-' || j`);
  // Lot j = 1 expires in 1 to 28 days (listed in `expiringSoon`); later lots in 60 to 360 days.
  const expiresAt = `now() + case when j = 1 then (1 + n % 28) else (60 + (n * j) % 300) end * interval '1 day'`;
  const each = `from generate_series(1, ${shoppers}) as n, generate_series(1, ${lotsPerShopper}) as j`;
  await knex.transaction(async (trx) => {
    await trx.raw(`insert into shoppers (shopper_ref, created_at)
      select ${ref}, now() - interval '400 days' from generate_series(1, ${shoppers}) as n`);
    await trx.raw(`insert into payments (id, provider, external_id, state, shopper_ref, card_last4, channel,
        merchant_reference, currency, authorised_amount, captured_amount, authorised_at, created_at, updated_at)
      select ${pay}, 'platform', 'bench-' || n || '-' || j, 'captured', ${ref}, '1111', 'online',
        'order-' || n || '-' || j, 'GBP', ${pointsPerLot}, ${pointsPerLot}, now() - interval '30 days',
        now() - interval '30 days', now() - interval '30 days'
      ${each}`);
    await trx.raw(`insert into loyalty_lots (id, shopper_ref, payment_id, rule_version, pending, earn_target,
        reversal_target, credited, recovered, written_off, remaining, expired, effects, available_at, expires_at,
        created_at, updated_at)
      select ${lot}, ${ref}, ${pay}, 1, 0, ${pointsPerLot}, 0, ${pointsPerLot}, 0, 0, ${pointsPerLot}, 0, 1,
        now() - interval '30 days', ${expiresAt}, now() - interval '30 days', now() - interval '30 days'
      ${each}`);
    await trx.raw(`insert into loyalty_entries (id, shopper_ref, kind, points, available_delta, pending_delta,
        lot_delta, debt_delta, lot_id, payment_id, redemption_id, rule_version, business_key, created_at)
      select ${led}, ${ref}, 'earn', ${pointsPerLot}, ${pointsPerLot}, 0, ${pointsPerLot}, 0, ${lot}, ${pay},
        null, 1, 'payment:' || ${pay} || ':1', now() - interval '30 days'
      ${each}`);
    const total = pointsPerLot * lotsPerShopper;
    await trx.raw(`insert into loyalty_accounts (shopper_ref, available, pending, debt, lifetime_earned,
        created_at, updated_at)
      select ${ref}, ${total}, 0, 0, ${total}, now() - interval '400 days', now() - interval '30 days'
      from generate_series(1, ${shoppers}) as n`);
  });
  // Fresh statistics, as a long-running database would have: the planner sees 10,000 rows, not 0.
  await knex.raw('analyze shoppers, shopper_merges, payments, loyalty_lots, loyalty_entries, loyalty_accounts');
  return { shoppers, lots: shoppers * lotsPerShopper, milliseconds: Date.now() - started };
}

export interface ShopperTokens {
  /** Bearer tokens, index n − 1 for shopper n. */
  readonly tokens: readonly string[];
  readonly milliseconds: number;
}

/**
 * One development token per shopper, carrying its `shopper_ref` claim, signed with the key the
 * service created in its DATA_DIR (the signing key is loaded once, not once per token).
 */
export async function shopperTokens(dataDir: string, count: number, scopes: readonly string[]): Promise<ShopperTokens> {
  const started = Date.now();
  const config = loadConfig({ NODE_ENV: 'development', DATA_DIR: dataDir });
  if (config.auth.keys.source !== 'dev-issuer') throw new Error('the bench signs tokens with the development issuer');
  const issuer = await loadDevIssuer(config.auth.keys.file);
  const tokens: string[] = [];
  for (let n = 1; n <= count; n++) {
    tokens.push(
      await issuer.sign({
        issuer: config.auth.issuer,
        audience: config.auth.audience,
        subject: `bench-shopper-${n}`,
        scopes,
        shopperRef: shopperRef(n),
        ttlSeconds: 3600,
      }),
    );
  }
  return { tokens, milliseconds: Date.now() - started };
}
