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

async function runWebhooks(load: LoadOptions): Promise<ScenarioResult> {
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
            label: 'POST /v1/webhooks/platform',
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
    const id = `msg_${process.pid}_${++n}`;
    const body = JSON.stringify({
      type: 'payment.authorised',
      occurredAt: new Date().toISOString(),
      payment: {
        id: `bench-${n}-${randomBytes(4).toString('hex')}`,
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

/** The outbox's share (src/events/outbox.ts): the event, and a delivery row per subscriber wanting it. */
const outbox = (
  id: string,
  type: string,
  shopper: string,
): string => `outbox_values (id, type, shopper_ref, body, created_at) AS (
    VALUES (${id}, '${type}', (${shopper})::text, '${EVENT_BODY}', now())),
  outbox_events AS (INSERT INTO outbound_events (id, type, shopper_ref, body, created_at)
    SELECT id, type, shopper_ref, body, created_at FROM outbox_values ON CONFLICT (id) DO NOTHING
    RETURNING id, type, shopper_ref, seq, created_at),
  outbox_deliveries AS (INSERT INTO outbound_deliveries
    (subscription_id, event_id, shopper_ref, event_seq, state, attempts, next_attempt_at, created_at, updated_at)
    SELECT s.id, e.id, e.shopper_ref, e.seq, 'pending', 0, least(e.created_at, now()), e.created_at, e.created_at
    FROM outbox_events e JOIN event_subscriptions s ON s.state = 'active' AND jsonb_exists(s.event_types, e.type))`;

/** About the size of a real `points.pending` event body (no quotes to escape). */
const EVENT_BODY = JSON.stringify({
  id: 'evt_points_pending_0000000000000000000000000000',
  type: 'points.pending',
  timestamp: '2026-11-30T00:00:00.000Z',
  data: {
    shopperReference: 'shp_aaaaaaaaaaaaaaaaaaaaaaaaaa',
    points: 123,
    paymentId: 'pay_aaaaaaaaaaaaaaaaaaaaaaaaaa',
    ruleVersion: 1,
    balance: { available: 0, pending: 123, lifetimeEarned: 0 },
  },
});

/** The delivery's own transaction, exactly as PaymentService.ingest runs it for a new payment. */
const delivery = (token: string, shopper: string): string => `BEGIN;
INSERT INTO payments (id, provider, external_id, state, created_at, updated_at)
  VALUES ('pay_' || :client_id || '_' || :r, 'platform', 'bench-' || :client_id || '-' || :r, 'awaiting_authorisation', now(), now())
  ON CONFLICT (provider, external_id) DO UPDATE SET updated_at = payments.updated_at
  RETURNING *, (xmax = 0) AS inserted;
INSERT INTO webhook_inbox (id, provider, event_key, event_type, secret_index, payload, received_at, state, applied_at, payment_id)
  VALUES ('evt_' || :client_id || '_' || :r, 'platform', 'msg_' || :client_id || '_' || :r, 'payment.authorised', 0,
    '${PAYLOAD}', now(), 'applied', now(), 'pay_' || :client_id || '_' || :r)
  ON CONFLICT (provider, event_key) DO NOTHING RETURNING id;
INSERT INTO payment_facts (payment_id, kind, fact_key, amount, currency, occurred_at, inbox_id)
  VALUES ('pay_' || :client_id || '_' || :r, 'authorised', 'auth', 12345, 'GBP', now(), 'evt_' || :client_id || '_' || :r)
  ON CONFLICT (payment_id, kind, fact_key) DO NOTHING;
UPDATE payments SET state = 'authorised', currency = 'GBP', authorised_amount = 12345, captured_amount = 0,
  refunded_amount = 0, charged_back_amount = 0, authorised_at = now(), card_token = ${token}, shopper_ref = ${shopper},
  card_last4 = '1111', channel = 'online', store_id = NULL, terminal_id = NULL, merchant_reference = 'order-1',
  updated_at = now()
  WHERE id = 'pay_' || :client_id || '_' || :r;
${ledger(shopper)}
COMMIT;
`;

/**
 * The loyalty ledger's share of that transaction for an online authorisation (a pending lot), as
 * LoyaltyService.onPaymentTransitions runs it: lots and merges read, the account locked by upsert,
 * the programme read, then the lot and its entry inserted and the account updated from VALUES.
 */
const ledger = (
  shopper: string,
): string => `SELECT payment_id, shopper_ref FROM loyalty_lots WHERE payment_id IN ('pay_' || :client_id || '_' || :r);
SELECT merged_ref, survivor_ref FROM shopper_merges WHERE merged_ref IN (${shopper});
INSERT INTO loyalty_accounts (shopper_ref, created_at, updated_at) VALUES (${shopper}, now(), now())
  ON CONFLICT (shopper_ref) DO UPDATE SET updated_at = loyalty_accounts.updated_at RETURNING *;
SELECT * FROM loyalty_programme_versions ORDER BY version;
INSERT INTO loyalty_lots (id, shopper_ref, payment_id, rule_version, pending, earn_target, reversal_target, credited,
    recovered, written_off, remaining, expired, effects, available_at, expires_at, created_at, updated_at)
  VALUES ('lot_' || :client_id || '_' || :r, ${shopper}, 'pay_' || :client_id || '_' || :r, 1, 123, 0, 0, 0, 0, 0, 0, 0, 1,
    NULL, NULL, now(), now());
INSERT INTO loyalty_entries (id, shopper_ref, kind, points, available_delta, pending_delta, lot_delta, debt_delta, lot_id,
    payment_id, redemption_id, rule_version, business_key, created_at)
  VALUES ('led_' || :client_id || '_' || :r, ${shopper}, 'earn_pending', 123, 0, 123, 0, 0, 'lot_' || :client_id || '_' || :r,
    'pay_' || :client_id || '_' || :r, NULL, 1, concat_ws(chr(58), 'payment', 'pay_' || :client_id || '_' || :r, '1'), now());
UPDATE loyalty_accounts t SET available = v.available::bigint, pending = v.pending::bigint, debt = v.debt::bigint,
    lifetime_earned = v.lifetime_earned::bigint, updated_at = v.updated_at::timestamptz
  FROM (VALUES ((${shopper})::text, 0, 123, 0, 0, now())) AS v (shopper_ref, available, pending, debt, lifetime_earned, updated_at)
  WHERE t.shopper_ref = v.shopper_ref;
WITH ${outbox(`'oev_' || :client_id || '_' || :r`, 'points.pending', shopper)} SELECT 1;`;

function knownCardScript(known: number): string {
  return `\\set k random(1, ${known})
\\set r random(1, 1000000000000000)
${LOOKUP} WHERE (f.mac_key_version, f.fingerprint) IN ((1, (SELECT fingerprint FROM bench_fp WHERE n = :k))) LIMIT 1
\\gset
${delivery(':tok', ':shp')}`;
}

function newCardScript(): string {
  // The vault's first sighting: one statement with its shopper.created event, as VaultService.createCard
  // runs it (insertNewCard).
  return `\\set r random(1, 1000000000000000)
${LOOKUP} WHERE (f.mac_key_version, f.fingerprint) IN ((1, sha256(('miss' || :client_id || :r)::bytea))) LIMIT 1;
WITH s AS (INSERT INTO shoppers (shopper_ref, created_at) VALUES ('shp_' || :client_id || '_' || :r, now()) RETURNING shopper_ref),
  c AS (INSERT INTO cards (token, shopper_ref, brand, last4, expiry_month, expiry_year, pan_ciphertext, pan_key_version, created_at, updated_at)
    SELECT 'tok_' || :client_id || '_' || :r, s.shopper_ref, 'visa', '1111', 12, 2030,
      sha256(('pan' || :r)::bytea) || sha256(('tag' || :r)::bytea), 1, now(), now() FROM s RETURNING token),
  i AS (INSERT INTO card_identifiers (id, token, kind, namespace, value_ciphertext, value_key_version, created_at)
    SELECT 'cid_' || :client_id || '_' || :r, c.token, 'pan', NULL, NULL, NULL, now() FROM c RETURNING id, token),
  fp AS (INSERT INTO identifier_fingerprints (mac_key_version, fingerprint, identifier_id, token, created_at)
    SELECT f.version, f.fingerprint, i.id, i.token, now()
    FROM i, (VALUES (1, sha256(('fp' || :client_id || '_' || :r)::bytea))) AS f (version, fingerprint)),
  ${outbox(`'oev_new_' || :client_id || '_' || :r`, 'shopper.created', `'shp_' || :client_id || '_' || :r`)}
SELECT 1;
${delivery(`'tok_' || :client_id || '_' || :r`, `'shp_' || :client_id || '_' || :r`)}`;
}

export const webhooks: Scenario = {
  name: 'webhooks',
  description: 'signed payment.authorised deliveries, 10,000 cards (PostgreSQL) vs pgbench of the same SQL',
  run: runWebhooks,
};
