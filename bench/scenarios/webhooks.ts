/**
 * Signed `payment.authorised` deliveries to POST /v1/webhooks/platform on PostgreSQL, for 10,000
 * distinct cards (half of them known before the run, so the mix of new and known shifts as the run
 * goes), each delivery a new payment. Every 200 means the event and its effect are committed.
 *
 * Baseline: pgbench, in the same run and on the same database, executing the statements one
 * delivery executes (the card lookup; for a new card, the vault's transaction; then the delivery's
 * transaction, with the loyalty ledger's pending lot and the outbox's event), weighted by the share of
 * new cards the service actually saw.
 */
import { randomBytes, randomInt } from 'node:crypto';
import knexFactory from 'knex';
import { Webhook } from 'standardwebhooks';
import { issueDevToken } from '../../src/cli/token.js';
import { loadConfig } from '../../src/config/config.js';
import { luhnValid } from '../../src/cards/luhn.js';
import { measure } from '../lib/load.js';
import { outboxSql } from '../lib/outbox-sql.js';
import { pgbench } from '../lib/pgbench.js';
import { withTempPostgres } from '../lib/postgres.js';
import type { LoadOptions, Scenario, ScenarioResult } from '../lib/scenario.js';
import { startService, withTempDir } from '../lib/servers.js';

const CARDS = 10_000;

export function randomPan(): string {
  let body = '411111';
  while (body.length < 15) body += String(randomInt(10));
  for (let d = 0; ; d++) if (luhnValid(body + d)) return body + d;
}

async function runWebhooks(load: LoadOptions, label = 'POST /v1/webhooks/platform'): Promise<ScenarioResult> {
  return withTempDir((dir) =>
    withTempPostgres(async (databaseUrl) => {
      const secret = `whsec_${randomBytes(32).toString('base64')}`;
      const service = await startService(dir, {
        DATABASE_URL: databaseUrl,
        MASTER_KEY: randomBytes(32).toString('base64'),
        WEBHOOK_PLATFORM_SECRETS: secret,
        DB_POOL_MAX: '10',
      });
      const knex = knexFactory({ client: 'pg', connection: databaseUrl, pool: { min: 0, max: 2 } });
      try {
        // The cards live only in this process's memory for the run; never written anywhere.
        const pans = Array.from({ length: CARDS }, randomPan);
        await seedKnownCards(service.url, service.dataDir, pans.slice(0, CARDS / 2));
        const cardsBefore = await count(knex, 'cards');
        const inboxBefore = await count(knex, 'webhook_inbox');

        const nextRequest = signedAuthorisations(secret, pans);
        const target = await measure(
          {
            label,
            url: `${service.url}/v1/webhooks/platform`,
            method: 'POST',
            nextRequest,
            server: service,
          },
          load,
        );
        const deliveries = (await count(knex, 'webhook_inbox')) - inboxBefore;
        const newCards = (await count(knex, 'cards')) - cardsBefore;
        const newShare = newCards / Math.max(1, deliveries);
        await service.stop();

        await knex.raw(`create table bench_fp as
          select row_number() over () as n, f.fingerprint from identifier_fingerprints f`);
        await knex.raw('alter table bench_fp add primary key (n)');
        const known = await count(knex, 'bench_fp');
        const weightNew = Math.round(newShare * 100);
        const baseline = await pgbench(
          'pgbench, same statements',
          databaseUrl,
          [
            { name: 'delivery-known-card', sql: knownCardScript(known), weight: 100 - weightNew },
            { name: 'delivery-new-card', sql: newCardScript(), weight: weightNew },
          ],
          load,
          dir,
        );
        return {
          target,
          baseline,
          notes: [
            `service: node dist/src/main.js on PostgreSQL (fresh database), pool 10, LOG_LEVEL=${service.logLevel}`,
            `${deliveries} deliveries, each a new payment; ${newCards} of them brought a new card (${(newShare * 100).toFixed(0)} %)`,
            'each 200 = verified (Standard Webhooks HMAC), tokenised, inbox + payment + fact + pending points committed',
            `baseline: pgbench -M extended, ${load.connections} clients, scripts weighted ${100 - weightNew}:${weightNew} known:new card`,
          ],
        };
      } finally {
        await knex.destroy();
        await service.stop();
      }
    }),
  );
}

/** A fresh signed `payment.authorised` delivery per call: a new payment on one of `pans`. */
export function signedAuthorisations(
  secret: string,
  pans: readonly string[],
): () => { body: string; headers: Record<string, string> } {
  const signer = new Webhook(secret);
  let n = 0;
  return () => {
    // Letters between the numbers: since the card-data guard reads any separator between digit
    // groups, `bench-1234-56789012` is a 12-digit run, Luhn-valid one time in ten, and the platform
    // refuses a payment id that reads as a card number (422 CARD_NUMBER_NOT_ALLOWED).
    const id = `msg_${process.pid}x${++n}`;
    const body = JSON.stringify({
      type: 'payment.authorised',
      occurredAt: new Date().toISOString(),
      payment: {
        id: `bench-${n}-h${randomBytes(4).toString('hex')}`,
        merchantReference: `order-${n}`,
        amount: { value: 1 + randomInt(100_000), currency: 'GBP' },
        channel: 'online',
      },
      card: { pan: pans[randomInt(pans.length)], expiryMonth: 12, expiryYear: 2030 },
    });
    const now = new Date();
    return {
      body,
      headers: {
        'content-type': 'application/json',
        'webhook-id': id,
        'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
        'webhook-signature': signer.sign(id, now, body),
      },
    };
  };
}

export async function seedKnownCards(url: string, dataDir: string, pans: readonly string[]): Promise<void> {
  const token = await issueDevToken(loadConfig({ NODE_ENV: 'development', DATA_DIR: dataDir }), {
    scopes: ['tokens:write'],
    subject: 'bench',
    ttlSeconds: 3600,
  });
  const queue = [...pans];
  await Promise.all(
    Array.from({ length: 20 }, async () => {
      for (let pan = queue.pop(); pan !== undefined; pan = queue.pop()) {
        const res = await fetch(`${url}/v1/tokens`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ pan, expiryMonth: 12, expiryYear: 2030 }),
        });
        if (res.status !== 201 && res.status !== 200) throw new Error(`seeding a card failed with ${res.status}`);
      }
    }),
  );
}

async function count(knex: knexFactory.Knex, table: string): Promise<number> {
  const [row] = (await knex(table).count({ n: '*' })) as { n: string | number }[];
  return Number(row?.n ?? 0);
}

const LOOKUP = `SELECT c.token AS tok, c.shopper_ref AS shp, c.brand, c.last4, c.expiry_month, c.expiry_year,
  c.pan_ciphertext, c.pan_key_version, c.created_at
  FROM identifier_fingerprints f JOIN cards c ON c.token = f.token`;

const PAYLOAD = JSON.stringify({
  type: 'payment.authorised',
  occurredAt: '2026-11-22T12:00:00.000Z',
  payment: {
    id: 'bench-1-00000000',
    merchantReference: 'order-1',
    amount: { value: 12345, currency: 'GBP' },
    channel: 'online',
  },
  card: { token: 'tok_aaaaaaaaaaaaaaaaaaaaaaaaaa' },
});

// Ids spell :r in letters: digits joined by '_' or '-' read as a card number to the database's
// card-data guard (a 16-digit :r is Luhn-valid one time in ten), which refuses the row.
const PAY = `'pay_' || :client_id || '_' || translate((:r)::text, '0123456789', 'abcdefghij')`;
const EVT = `'evt_' || :client_id || '_' || translate((:r)::text, '0123456789', 'abcdefghij')`;

/**
 * The delivery's own transaction for a new payment, statement for statement as PaymentService and
 * LoyaltyService send it for a batch of one: lock-or-create the payment; the inbox row with the fact
 * and the payment update gated on it; merges and programme; the account locked; the ledger's lot,
 * entry, account and outbox event in one statement.
 */
const delivery = (token: string, shopper: string): string => `BEGIN;
INSERT INTO payments (id, provider, external_id, state, created_at, updated_at)
  VALUES (${PAY}, 'platform', 'bench-' || :client_id || '-' || translate((:r)::text, '0123456789', 'abcdefghij'), 'awaiting_authorisation', now(), now())
  ON CONFLICT (provider, external_id) DO UPDATE SET updated_at = payments.updated_at
  RETURNING *, (xmax = 0) AS inserted;
WITH inbox AS (INSERT INTO webhook_inbox (applied_at, error_code, event_key, event_type, id, payload, payment_id,
    provider, received_at, secret_index, state)
  VALUES (now(), NULL, 'msg_' || :client_id || '_' || translate((:r)::text, '0123456789', 'abcdefghij'), 'payment.authorised', ${EVT}, '${PAYLOAD}', ${PAY},
    'platform', now(), 0, 'applied')
  ON CONFLICT (provider, event_key) DO NOTHING RETURNING id, payment_id),
w1 AS (INSERT INTO payment_facts (payment_id, kind, fact_key, amount, currency, occurred_at, inbox_id)
  SELECT v.payment_id, v.kind, v.fact_key, v.amount::bigint, v.currency, v.occurred_at::timestamptz, v.inbox_id
  FROM (VALUES (${PAY}, 'authorised', 'auth', '12345', 'GBP', now()::text, ${EVT}))
    AS v (payment_id, kind, fact_key, amount, currency, occurred_at, inbox_id)
  WHERE v.inbox_id IN (SELECT id FROM inbox)
  ON CONFLICT (payment_id, kind, fact_key) DO NOTHING),
w2 AS (UPDATE payments t SET state = v.state::text, currency = v.currency::text,
    authorised_amount = v.authorised_amount::bigint, captured_amount = v.captured_amount::bigint,
    refunded_amount = v.refunded_amount::bigint, charged_back_amount = v.charged_back_amount::bigint,
    authorised_at = v.authorised_at::timestamptz, card_token = v.card_token::text, shopper_ref = v.shopper_ref::text,
    card_last4 = v.card_last4::text, channel = v.channel::text, store_id = v.store_id::text,
    terminal_id = v.terminal_id::text, merchant_reference = v.merchant_reference::text,
    updated_at = v.updated_at::timestamptz
  FROM (VALUES (${PAY}, 'authorised', 'GBP', '12345', '0', '0', '0', now()::text, (${token})::text, (${shopper})::text,
    '1111', 'online', NULL, NULL, 'order-1', now()::text))
    AS v (id, state, currency, authorised_amount, captured_amount, refunded_amount, charged_back_amount, authorised_at,
      card_token, shopper_ref, card_last4, channel, store_id, terminal_id, merchant_reference, updated_at)
  WHERE t.id = v.id AND (t.id IN (SELECT payment_id FROM inbox)))
SELECT id FROM inbox;
${ledger(shopper)}
COMMIT;
`;

/**
 * The loyalty ledger's share of that transaction for an online authorisation (a pending lot), as
 * LoyaltyService.onPaymentTransitions sends it: merges and programme in one read, the account locked
 * by upsert, then the lot, its entry, the account and the points.pending event in one statement.
 */
const ledger = (shopper: string): string => `SELECT
  (SELECT coalesce(json_agg(json_build_array(merged_ref, survivor_ref)), '[]'::json)
    FROM shopper_merges WHERE merged_ref IN (${shopper})) AS merges,
  (SELECT json_agg(p ORDER BY p.version) FROM loyalty_programme_versions p) AS programme;
INSERT INTO loyalty_accounts (shopper_ref, created_at, updated_at) VALUES (${shopper}, now(), now())
  ON CONFLICT (shopper_ref) DO UPDATE SET updated_at = loyalty_accounts.updated_at RETURNING *;
WITH w0 AS (INSERT INTO loyalty_lots (available_at, created_at, credited, earn_target, effects, expired, expires_at, id,
    payment_id, pending, recovered, remaining, reversal_target, rule_version, shopper_ref, updated_at, written_off)
  VALUES (NULL, now(), 0, 0, 1, 0, NULL, 'lot_' || :client_id || '_' || translate((:r)::text, '0123456789', 'abcdefghij'), ${PAY}, 123, 0, 0, 0, 1, ${shopper}, now(), 0)),
w1 AS (INSERT INTO loyalty_entries (available_delta, business_key, created_at, debt_delta, id, kind, lot_delta, lot_id,
    payment_id, pending_delta, points, redemption_id, rule_version, shopper_ref)
  VALUES (0, concat_ws(chr(58), 'payment', ${PAY}, '1'), now(), 0, 'led_' || :client_id || '_' || translate((:r)::text, '0123456789', 'abcdefghij'), 'earn_pending', 0,
    'lot_' || :client_id || '_' || translate((:r)::text, '0123456789', 'abcdefghij'), ${PAY}, 123, 123, NULL, 1, ${shopper})),
w2 AS (UPDATE loyalty_accounts t SET available = v.available::bigint, pending = v.pending::bigint, debt = v.debt::bigint,
    lifetime_earned = v.lifetime_earned::bigint, updated_at = v.updated_at::timestamptz
  FROM (VALUES ((${shopper})::text, '0', '123', '0', '0', now()::text))
    AS v (shopper_ref, available, pending, debt, lifetime_earned, updated_at)
  WHERE t.shopper_ref = v.shopper_ref),
${outboxSql(`'oev_' || :client_id || '_' || translate((:r)::text, '0123456789', 'abcdefghij')`, 'points.pending', shopper)}
SELECT 1;`;

function knownCardScript(known: number): string {
  return `\\set k random(1, ${known})
\\set r random(1, 1000000000000000)
${LOOKUP} WHERE (f.mac_key_version, f.fingerprint) IN ((1, (SELECT fingerprint FROM bench_fp WHERE n = :k))) LIMIT 1
\\gset
${delivery(':tok', ':shp')}`;
}

function newCardScript(): string {
  // The vault's first sighting of one card, as insertNewCards sends it (one statement, no transaction).
  const SHP = `'shp_' || :client_id || '_' || translate((:r)::text, '0123456789', 'abcdefghij')`;
  const TOK = `'tok_' || :client_id || '_' || translate((:r)::text, '0123456789', 'abcdefghij')`;
  const CID = `'cid_' || :client_id || '_' || translate((:r)::text, '0123456789', 'abcdefghij')`;
  return `\\set r random(1, 1000000000000000)
${LOOKUP} WHERE (f.mac_key_version, f.fingerprint) IN ((1, sha256(('miss' || :client_id || :r)::bytea))) LIMIT 1;
WITH ${outboxSql(`'oev_new_' || :client_id || '_' || translate((:r)::text, '0123456789', 'abcdefghij')`, 'shopper.created', SHP)},
  w1 AS (INSERT INTO shoppers (shopper_ref, created_at) VALUES (${SHP}, now())),
  w2 AS (INSERT INTO cards (brand, created_at, expiry_month, expiry_year, last4, pan_ciphertext, pan_key_version,
      shopper_ref, token, updated_at)
    VALUES ('visa', now(), 12, 2030, '1111', sha256(('pan' || :r)::bytea) || sha256(('tag' || :r)::bytea), 1, ${SHP},
      ${TOK}, now())),
  w3 AS (INSERT INTO card_identifiers (created_at, id, kind, namespace, token, value_ciphertext, value_key_version)
    VALUES (now(), ${CID}, 'pan', NULL, ${TOK}, NULL, NULL)),
  w4 AS (INSERT INTO identifier_fingerprints (created_at, fingerprint, identifier_id, mac_key_version, token)
    VALUES (now(), sha256(('fp' || :client_id || '_' || translate((:r)::text, '0123456789', 'abcdefghij'))::bytea), ${CID}, 1, ${TOK}))
SELECT 1;
${delivery(TOK, SHP)}`;
}

export const webhooks: Scenario = {
  name: 'webhooks',
  description: 'signed payment.authorised deliveries, 10,000 cards (PostgreSQL) vs pgbench of the same SQL',
  run: (load) => runWebhooks(load),
};

/** Concurrent deliveries for the burst scenario: what a gateway sends catching up after an outage. */
const BURST_CONNECTIONS = 64;

/**
 * The same deliveries 64 at a time, both sides: where group commit earns its keep (one transaction
 * per delivery, as pgbench runs them, loses throughput to contention as clients grow; batches grow).
 */
export const webhooksBurst: Scenario = {
  name: 'webhooks-64',
  description: `the same, ${BURST_CONNECTIONS} concurrent deliveries on both sides (a gateway catching up)`,
  run: (load) =>
    runWebhooks({ ...load, connections: BURST_CONNECTIONS }, `POST /v1/webhooks/platform ×${BURST_CONNECTIONS}`),
};
