/**
 * POST /v1/shoppers/{ref}/redemptions on PostgreSQL: 10,000 shoppers with plenty of points (one lot
 * of 1,000,000 each), each request a redemption of 1 point for a random shopper, with that shopper's
 * token (`loyalty:redeem`) and a new Idempotency-Key. Every 201 means the key, the redemption, its
 * ledger entry and the lot and account it moved are committed.
 *
 * Afterwards, before anything else writes to the database, the run is checked: each 201 names a
 * redemption that exists once, with its key's stored response; redemptions without a 201 are only
 * those cut off when a measurement stopped; the balances dropped by exactly one point per redemption;
 * and `checkLedger` (the invariants of `npm run loyalty -- check`) reports no violation.
 *
 * Baseline: pgbench, in the same run and on the same database, executing the statements one
 * redemption executes (LoyaltyService.redeem, LedgerBook, balanceOf, claimIdempotencyKey, and the
 * access check before the transaction), values carried from one statement to the next with \gset as
 * the service carries them in memory.
 */
import { randomBytes, randomInt } from 'node:crypto';
import knexFactory from 'knex';
import { checkLedger } from '../../src/loyalty/ledger-check.js';
import { measure } from '../lib/load.js';
import { seedLoyalty, shopperRef, shopperRefSql, shopperTokens } from '../lib/loyalty.js';
import { outboxSql } from '../lib/outbox-sql.js';
import { pgbench } from '../lib/pgbench.js';
import { withTempPostgres } from '../lib/postgres.js';
import type { LoadOptions, Scenario, ScenarioResult } from '../lib/scenario.js';
import { startService, withTempDir } from '../lib/servers.js';

const SHOPPERS = 10_000;
const POINTS = 1_000_000;

interface Answers {
  readonly byStatus: Map<number, number>;
  /** Idempotency-Key (sent as the reference too) → redemptionId, for every 201. */
  readonly created: Map<string, string>;
  malformed: number;
}

async function runRedeem(load: LoadOptions): Promise<ScenarioResult> {
  return withTempDir((dir) =>
    withTempPostgres(async (databaseUrl) => {
      const service = await startService(dir, {
        DATABASE_URL: databaseUrl,
        MASTER_KEY: randomBytes(32).toString('base64'),
        DB_POOL_MAX: '10',
      });
      const knex = knexFactory({ client: 'pg', connection: databaseUrl, pool: { min: 0, max: 2 } });
      try {
        const seeded = await seedLoyalty(knex, { shoppers: SHOPPERS, lotsPerShopper: 1, pointsPerLot: POINTS });
        const signed = await shopperTokens(service.dataDir, SHOPPERS, ['loyalty:redeem']);

        const answers: Answers = { byStatus: new Map(), created: new Map(), malformed: 0 };
        let n = 0;
        const nextRequest = () => {
          const shopper = 1 + randomInt(SHOPPERS);
          const key = `bench-${process.pid}-${++n}`;
          return {
            path: `/v1/shoppers/${shopperRef(shopper)}/redemptions`,
            body: JSON.stringify({ points: 1, reference: key }),
            headers: { authorization: `Bearer ${signed.tokens[shopper - 1] ?? ''}`, 'idempotency-key': key },
          };
        };
        const onResponse = (status: number, body: string): void => {
          answers.byStatus.set(status, (answers.byStatus.get(status) ?? 0) + 1);
          if (status !== 201) return;
          try {
            const { redemptionId, reference } = JSON.parse(body) as { redemptionId?: unknown; reference?: unknown };
            if (typeof redemptionId !== 'string' || typeof reference !== 'string') answers.malformed += 1;
            else if (answers.created.has(reference)) answers.malformed += 1;
            else answers.created.set(reference, redemptionId);
          } catch {
            answers.malformed += 1;
          }
        };
        const target = await measure(
          {
            label: 'POST …/redemptions',
            url: service.url,
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            nextRequest,
            onResponse,
            server: service,
          },
          load,
        );
        // Nothing in flight any more: what is in the database is all the service will ever commit.
        await service.stop();
        const verified = await verify(knex, answers, load, seeded.shoppers * POINTS);

        const baseline = await pgbench(
          'pgbench, same statements',
          databaseUrl,
          [{ name: 'redemption', sql: redemptionScript(SHOPPERS), weight: 1 }],
          load,
          dir,
        );
        // The script must do what a redemption does: its own redemptions leave the ledger consistent too.
        const afterBaseline = await checkLedger(knex);
        const scripted = Number(
          (
            (await knex('loyalty_redemptions').where('created_by', 'pgbench').count({ n: '*' }).first()) as {
              n: string;
            }
          ).n,
        );
        if (!afterBaseline.ok || scripted < baseline.requests) {
          throw new Error(
            `redeem: the pgbench script left ${scripted} redemptions for ${baseline.requests} transactions and ` +
              `${afterBaseline.violations.length} ledger violations, e.g. ${JSON.stringify(afterBaseline.violations.slice(0, 3))}`,
          );
        }
        const non2xx = [...answers.byStatus].filter(([status]) => status < 200 || status > 299);
        return {
          target,
          baseline,
          notes: [
            `service: node dist/src/main.js on PostgreSQL (fresh database), pool 10, LOG_LEVEL=${service.logLevel}`,
            `${seeded.shoppers} shoppers with ${POINTS.toLocaleString('en-US')} points in one lot each, seeded set-based in ${seeded.milliseconds} ms; ${signed.tokens.length} shopper tokens pre-signed in ${signed.milliseconds} ms`,
            'each request: 1 point for a random shopper, its own token, a new Idempotency-Key',
            `answers, warm-up included: ${[...answers.byStatus].map(([s, c]) => `${c} × ${s}`).join(', ')}; non-2xx: ${non2xx.reduce((sum, [, c]) => sum + c, 0)}`,
            ...verified,
            `baseline: pgbench -M extended, ${load.connections} clients, the access check + the redemption transaction (BEGIN, ${REDEMPTION_STATEMENTS} statements, COMMIT)`,
            `baseline checked too: its ${scripted} redemptions (warm-up included) leave checkLedger ok`,
          ],
        };
      } finally {
        await knex.destroy();
        await service.stop();
      }
    }),
  );
}

/** Every 201 is exactly one redemption, and the ledger holds. Throws (fails the scenario) otherwise. */
async function verify(
  knex: knexFactory.Knex,
  answers: Answers,
  load: LoadOptions,
  seededPoints: number,
): Promise<string[]> {
  const problems: string[] = [];
  if (answers.malformed > 0) problems.push(`${answers.malformed} 201 answers without a new redemptionId`);
  // measure() refuses a measurement with any non-2xx; this also covers the warm-up.
  const refused = [...answers.byStatus].filter(([status]) => status !== 201);
  if (refused.length > 0) problems.push(`answers other than 201: ${JSON.stringify(Object.fromEntries(refused))}`);
  const rows = (await knex('loyalty_redemptions').select('id', 'reference', 'points', 'state')) as {
    id: string;
    reference: string;
    points: number | string;
    state: string;
  }[];
  const byId = new Map(rows.map((r) => [r.id, r]));
  let missing = 0;
  for (const [reference, id] of answers.created) {
    const row = byId.get(id);
    if (row === undefined || row.reference !== reference || Number(row.points) !== 1 || row.state !== 'completed')
      missing += 1;
  }
  if (missing > 0) problems.push(`${missing} of the 201s name no redemption (or another one)`);
  const ids = new Set(answers.created.values());
  if (ids.size !== answers.created.size) problems.push(`${answers.created.size - ids.size} redemptions answered twice`);
  // A request cut off when a measurement stopped may have committed without its answer being read:
  // at most one per connection, at the end of the warm-up and at the end of the measurement.
  const unanswered = rows.length - answers.created.size;
  if (unanswered < 0 || unanswered > 2 * load.connections) {
    problems.push(`${rows.length} redemptions for ${answers.created.size} 201s`);
  }
  const count = async (sql: string): Promise<number> =>
    Number(((await knex.raw(sql)) as { rows: { n: string }[] }).rows[0]?.n);
  const keyed = await count(`select count(*) as n from idempotency_keys where status = 201`);
  const matched = await count(`select count(*) as n from loyalty_redemptions r
    join idempotency_keys k on k.status = 201 and k.key = r.reference and k.response ->> 'redemptionId' = r.id`);
  if (matched !== rows.length || keyed !== rows.length) {
    problems.push(`${rows.length} redemptions, ${keyed} stored 201 keys, ${matched} matching`);
  }
  const available = Number(
    ((await knex('loyalty_accounts').sum({ s: 'available' }).first()) as { s: string | number }).s,
  );
  if (available !== seededPoints - rows.length) {
    problems.push(`balances hold ${available} points; ${seededPoints} seeded less ${rows.length} redeemed`);
  }
  const started = Date.now();
  const report = await checkLedger(knex);
  const checkMs = Date.now() - started;
  if (!report.ok) {
    problems.push(
      `checkLedger: ${report.violations.length} violations, e.g. ${JSON.stringify(report.violations.slice(0, 3))}`,
    );
  }
  if (problems.length > 0) throw new Error(`redeem: the run is not exactly-once:\n  ${problems.join('\n  ')}`);
  return [
    `verified: ${answers.created.size} × 201, each exactly one redemption row (${rows.length} rows; ${unanswered} cut off unanswered when a measurement stopped), each with its key's stored 201`,
    `verified: balances fell by exactly ${rows.length} points; checkLedger ok over ${report.accounts} accounts, ${report.lots} lots, ${report.entries} entries (${checkMs} ms)`,
  ];
}

/** Representative stored response (the service stores the answer's JSON, ~300 bytes). */
const RESPONSE = JSON.stringify({
  redemptionId: 'red_aaaaaaaaaaaaaaaaaaaaaaaaaa',
  points: 1,
  reference: 'bench-00000-000000',
  state: 'completed',
  balance: {
    shopperReference: 'shp_aaaaaaaaaaaaaaaaaaaaaaaaaa',
    available: 999999,
    pending: 0,
    expiringSoon: [{ points: 999999, expiresAt: '2026-12-20T06:00:00.000Z' }],
    lifetimeEarned: 1000000,
    asOf: '2026-11-30T06:00:00.000Z',
  },
});
const REQUEST_HASH = 'c'.repeat(64);
/** Statements inside the redemption transaction (between BEGIN and COMMIT) of the script below. */
const REDEMPTION_STATEMENTS = 7;

/**
 * One redemption, statement for statement as the service sends them: the access check
 * (shoppers.ts, one join) outside the transaction, then LoyaltyService.redeem's transaction: claim
 * the key, lock the account (upsert; it also shows a merge), read the programme, insert the
 * redemption, read the spendable lots (guarded by the account lock), flush (in one statement, as
 * LedgerBook.flushAll sends it: the entry, the lot and the account updated from VALUES as
 * src/db/update-rows.ts does, the points.redeemed event in the outbox), store the response (the
 * balance is computed from the book), commit. Values
 * the service keeps in memory between statements are \gset here.
 */
function redemptionScript(shoppers: number): string {
  const ref = shopperRefSql(':k');
  // Ids spell :r in letters: digits joined by '_' or '-' read as a card number to the database's guard.
  const key = `'pgbench-' || :client_id || '-' || translate((:r)::text, '0123456789', 'abcdefghij')`;
  const red = `'red_' || :client_id || '_' || translate((:r)::text, '0123456789', 'abcdefghij')`;
  const lotColumns = [
    'shopper_ref::text',
    'pending::bigint',
    'earn_target::bigint',
    'reversal_target::bigint',
    'credited::bigint',
    'recovered::bigint',
    'written_off::bigint',
    'remaining::bigint',
    'expired::bigint',
    'effects::integer',
    'available_at::timestamptz',
    'expires_at::timestamptz',
    'updated_at::timestamptz',
  ].map((c) => c.split('::') as [string, string]);
  const lotValue = (c: string): string =>
    c === 'remaining' ? ':remaining' : c === 'updated_at' ? 'now()' : `:lot_${c}`;
  return `\\set k random(1, ${shoppers})
\\set r random(1, 1000000000000000)
select "m"."survivor_ref" from "shoppers" as "s" left join "shopper_merges" as "m" on "m"."merged_ref" = "s"."shopper_ref"
  where "s"."shopper_ref" = ${ref} limit 1;
BEGIN;
insert into "idempotency_keys" ("created_at", "expires_at", "key", "request_hash", "response", "scope", "status")
  values (now(), now() + interval '30 days', ${key}, '${REQUEST_HASH}', 'null', 'redemption:' || ${ref}, 0)
  on conflict ("scope", "key") do nothing returning "key";
insert into loyalty_accounts (shopper_ref, created_at, updated_at) values (${ref}, now(), now())
  on conflict (shopper_ref) do update set updated_at = loyalty_accounts.updated_at
  returning *
\\gset acc_
select * from "loyalty_programme_versions" order by "version" desc limit 1;
insert into "loyalty_redemptions" ("created_at", "created_by", "description", "id", "points", "reference", "shopper_ref", "state")
  values (now(), 'pgbench', null, ${red}, 1, ${key}, ${ref}, 'completed');
select * from "loyalty_lots" where "shopper_ref" = ${ref} and "remaining" > 0 order by expires_at asc nulls last, id asc
\\gset lot_
\\set available :acc_available - 1
\\set remaining :lot_remaining - 1
with w0 as (insert into "loyalty_entries" ("available_delta", "business_key", "created_at", "debt_delta", "id", "kind", "lot_delta",
    "lot_id", "payment_id", "pending_delta", "points", "redemption_id", "rule_version", "shopper_ref")
  values (-1, 'redemption:' || ${red} || ':' || 'lot' || ':' || :lot_id, now(), 0, 'led_' || :client_id || '_' || translate((:r)::text, '0123456789', 'abcdefghij'), 'redemption', -1,
    :lot_id, :lot_payment_id, 0, -1, ${red}, :lot_rule_version, ${ref})),
w1 as (update loyalty_lots t set ${lotColumns.map(([c, t]) => `${c} = v.${c}::${t}`).join(', ')}
  from (values (:lot_id, ${lotColumns.map(([c]) => lotValue(c)).join(', ')})) as v (id, ${lotColumns.map(([c]) => c).join(', ')})
  where t.id = v.id),
w2 as (update loyalty_accounts t set available = v.available::bigint, pending = v.pending::bigint, debt = v.debt::bigint,
    lifetime_earned = v.lifetime_earned::bigint, updated_at = v.updated_at::timestamptz
  from (values (${ref}, :available, :acc_pending, :acc_debt, :acc_lifetime_earned, now()))
    as v (shopper_ref, available, pending, debt, lifetime_earned, updated_at)
  where t.shopper_ref = v.shopper_ref),
${outboxSql(`'oev_' || :client_id || '_' || translate((:r)::text, '0123456789', 'abcdefghij')`, 'points.redeemed', ref)}
select 1;
update "idempotency_keys" set "status" = 201, "response" = '${RESPONSE}'
  where "scope" = 'redemption:' || ${ref} and "key" = ${key};
COMMIT;
`;
}

export const redeem: Scenario = {
  name: 'redeem',
  description: 'POST /v1/shoppers/{ref}/redemptions, 1 point, 10,000 shoppers (PostgreSQL) vs pgbench of the same SQL',
  run: runRedeem,
};
