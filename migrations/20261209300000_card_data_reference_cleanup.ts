/**
 * Card data in the exempt reference columns, stored before the guard (issue 16; docs/card-data.md,
 * "Cleaning what was stored before").
 *
 * `payments.external_id`, `webhook_inbox.event_key`, `payment_facts.fact_key` and the reference paths
 * of `webhook_inbox.payload` (`pspReference`, `originalReference`, `payment.id`, `refund.id`,
 * `chargeback.id`) are exempt from the database guard: they are keys, and masking a key could merge
 * two payments or two events. 20261206000150 therefore left them as they were. Here each one holding
 * card data is re-keyed **when no delivery can ever be matched against it again**:
 * - platform and Stripe ids holding a card number are refused at the edge today (422
 *   `CARD_NUMBER_NOT_ALLOWED`), so a redelivery of the same event never reaches the de-duplication;
 * - an Adyen reference that is not 16 alphanumerics makes today's handler store the item as
 *   `rejected`, keyed by its signature, never by its reference.
 * For those, the value becomes `<the value masked by the guard>~<HMAC>`: the HMAC is over the original
 * value under a random key made for this run and discarded at its end, so the same original maps to
 * the same replacement in every table (a payment's `external_id`, its facts and its inbox payloads
 * stay joined, two values never merge), and nothing left can confirm a guessed card number.
 *
 * Not rewritten, reported instead (found by `findLegacyReferenceData`, src/db/legacy-card-data.ts, recorded
 * in `card_data_legacy_findings` — table, column, row key, never the value — and logged as a warning at
 * every start while the table holds any; the rule is src/card-data/legacy-references.ts):
 * a 16-digit Luhn-valid Adyen reference is indistinguishable from a real one, and a redelivery of
 * its item is applied by that very value: changing it would apply the payment twice. A UUID-shaped
 * platform `webhook-id` holding card data (`webhook_inbox.event_key`, and a platform fact key equal
 * to it) is accepted by the handler, so it is not re-keyed to a value of this run: reported. (A UUID
 * shape elsewhere — platform payment, refund and chargeback ids, Stripe ids — is re-keyed, and so is a
 * Stripe `total:<card number>` fact key: a redelivery computes `total:null` from the masked
 * projection, never that key.) `audit_events` actor, action, origin and
 * resource are covered by the entry MAC: they can be neither rewritten nor redacted.
 *
 * `card_data_legacy_findings` is append-only (a trigger refuses UPDATE, DELETE and TRUNCATE): a
 * finding cannot be deleted silently; it is cleared, after remediation, only by a reviewed migration.
 *
 * `down` cannot restore card data: it drops the findings table (and its trigger function) only.
 */
import { createHmac, randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { maskCardData } from '../src/card-data/card-data-guard.js';
import { legacyReferenceVerdict, type LegacyReferenceRole } from '../src/card-data/legacy-references.js';
import { findLegacyReferenceData } from '../src/db/legacy-card-data.js';

/** The payload paths that are references (exempt in `card_data_exempt_json_paths`). */
const PAYLOAD_REFERENCES: readonly (readonly string[])[] = [
  ['pspReference'],
  ['originalReference'],
  ['payment', 'id'],
  ['refund', 'id'],
  ['chargeback', 'id'],
];

type Rekey = (value: string) => string;

const mayRekey = (provider: string, value: string, role?: LegacyReferenceRole): boolean =>
  legacyReferenceVerdict(provider, value, role) === 'rekey';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('card_data_legacy_findings', (t) => {
    t.increments('id').primary();
    t.text('table_name').notNullable();
    t.text('column_name').notNullable();
    // The row's key (`id`, `seq`, `payment_id/kind/inbox_id` for a fact), never the value.
    t.text('row_key').notNullable();
    t.timestamp('found_at', { useTz: true }).notNullable().defaultTo(knex.raw('now()'));
  });
  await knex.raw(`select card_data_guard_attach('card_data_legacy_findings')`);
  // Append-only (like loyalty_campaign_versions, 20261208110000): a finding is evidence that card
  // data is still held; nobody clears it silently (UPDATE, DELETE and TRUNCATE refused by the database).
  // A finding is cleared only by a reviewed migration (docs/card-data.md, "Cleaning what was stored before").
  await knex.raw(`
    create function card_data_legacy_findings_append_only() returns trigger language plpgsql as $$
    begin
      raise exception using
        errcode = 'check_violation',
        constraint = 'card_data_legacy_findings_append_only',
        message = format('card_data_legacy_findings is append-only: %s refused', TG_OP);
    end $$`);
  await knex.raw(
    `create trigger card_data_legacy_findings_append_only before update or delete on card_data_legacy_findings
     for each row execute function card_data_legacy_findings_append_only()`,
  );
  await knex.raw(
    `create trigger card_data_legacy_findings_no_truncate before truncate on card_data_legacy_findings
     for each statement execute function card_data_legacy_findings_append_only()`,
  );
  const runKey = randomBytes(32);
  const rekey: Rekey = (value) =>
    `${maskCardData(value)}~${createHmac('sha256', runKey).update(value, 'utf8').digest('base64url').slice(0, 22)}`;
  try {
    await rekeyInbox(knex, rekey);
    await rekeyPayments(knex, rekey);
  } finally {
    runKey.fill(0);
  }
  const findings = await findLegacyReferenceData(knex);
  for (let i = 0; i < findings.length; i += 500) {
    await knex('card_data_legacy_findings').insert(
      findings.slice(i, i + 500).map((f) => ({ table_name: f.table, column_name: f.column, row_key: f.row })),
    );
  }
}

const BATCH = 500;

async function rekeyInbox(knex: Knex, rekey: Rekey): Promise<void> {
  for (let after = ''; ;) {
    const rows = (await knex('webhook_inbox')
      .select('id', 'provider', 'event_key', 'payload')
      .where('id', '>', after)
      .orderBy('id')
      .limit(BATCH)) as { id: string; provider: string; event_key: string; payload: unknown }[];
    for (const row of rows) {
      const payload = (typeof row.payload === 'string' ? JSON.parse(row.payload) : row.payload) as unknown;
      let changed = false;
      for (const path of PAYLOAD_REFERENCES) {
        const parent = path.slice(0, -1).reduce<unknown>((o, k) => (isObject(o) ? o[k] : undefined), payload);
        const leaf = path[path.length - 1] as string;
        const value = isObject(parent) ? parent[leaf] : undefined;
        if (typeof value === 'string' && mayRekey(row.provider, value)) {
          (parent as Record<string, unknown>)[leaf] = rekey(value);
          changed = true;
        }
      }
      const eventKey = mayRekey(row.provider, row.event_key, 'webhook-id') ? rekey(row.event_key) : row.event_key;
      if (changed || eventKey !== row.event_key) {
        await knex('webhook_inbox')
          .where({ id: row.id })
          .update({ event_key: eventKey, payload: JSON.stringify(payload) });
      }
    }
    if (rows.length < BATCH) break;
    after = rows[rows.length - 1]!.id;
  }
}

/**
 * Payments page by page (by id), and the facts of each page. Only the new value is bound: a fact is
 * updated by its row's `ctid` (read in this transaction), never `where fact_key = <the old value>`.
 * A fact keyed by its delivery (`fact_key` = its inbox event's key, inbox already re-keyed above) is
 * judged as a `webhook-id`.
 */
async function rekeyPayments(knex: Knex, rekey: Rekey): Promise<void> {
  for (let after = ''; ;) {
    const payments = (await knex('payments')
      .select('id', 'provider', 'external_id')
      .where('id', '>', after)
      .orderBy('id')
      .limit(BATCH)) as { id: string; provider: string; external_id: string }[];
    for (const p of payments) {
      if (mayRekey(p.provider, p.external_id)) {
        await knex('payments')
          .where({ id: p.id })
          .update({ external_id: rekey(p.external_id) });
      }
    }
    const providers = new Map(payments.map((p) => [p.id, p.provider]));
    const facts = (await knex('payment_facts')
      .leftJoin('webhook_inbox', 'webhook_inbox.id', 'payment_facts.inbox_id')
      .whereIn(
        'payment_facts.payment_id',
        payments.map((p) => p.id),
      )
      .select(
        knex.raw('payment_facts.ctid::text as row_ctid'),
        'payment_facts.payment_id',
        'payment_facts.fact_key',
        'webhook_inbox.event_key',
      )) as { row_ctid: string; payment_id: string; fact_key: string; event_key: string | null }[];
    for (const f of facts) {
      const role = f.fact_key === f.event_key ? 'webhook-id' : 'reference';
      if (mayRekey(providers.get(f.payment_id) ?? '', f.fact_key, role)) {
        await knex('payment_facts')
          .whereRaw('ctid = ?::tid', [f.row_ctid])
          .update({ fact_key: rekey(f.fact_key) });
      }
    }
    if (payments.length < BATCH) break;
    after = payments[payments.length - 1]!.id;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

export async function down(knex: Knex): Promise<void> {
  // Card data removed is not put back; only the findings table goes.
  await knex.schema.dropTable('card_data_legacy_findings');
  await knex.raw('drop function card_data_legacy_findings_append_only()');
}
