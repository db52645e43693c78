/**
 * Cleans what was stored before the card-data guard (issue 16; docs/card-data.md).
 *
 * - `webhook_inbox.payload`: each stored delivery is re-projected onto its provider's allow-list (the
 *   lists below are this migration's own copy, frozen as of 2026-12-06, so that later changes to the
 *   adapters cannot change what this migration did), then every text in it is masked by the guard;
 *   what was masked or dropped is listed in `masked`. Validated Adyen references are kept as they are.
 * - Every other guarded text or JSON column of every table (payments' merchant reference, store and
 *   terminal, the outbox bodies and delivery errors, redemption references, subscription descriptions,
 *   stored idempotent responses…), found by the database guard's own `card_data_in_json`, is masked
 *   to the last four in place (JSON re-serialised, so it stays valid JSON). An idempotency key that
 *   holds a card number is deleted: it only served replays, and cannot be masked without colliding.
 * - `audit_events` is left alone: its entries are hash-chained, and removing card data from them is
 *   the audit trail's own redaction (an audited entry of its own), not a silent rewrite.
 *
 * Every update passes the database guard installed by 20261206000100, so a value this migration
 * failed to clean stops it. `down` cannot restore card data and does nothing.
 */
import type { Knex } from 'knex';
import { maskCardData, maskCardDataDeep } from '../src/card-data/card-data-guard.js';

type Json = Record<string, unknown>;

const ADYEN_PATHS = [
  'eventCode',
  'success',
  'pspReference',
  'originalReference',
  'merchantAccountCode',
  'merchantReference',
  'eventDate',
  'amount.value',
  'amount.currency',
  'paymentMethod',
  'additionalData.shopperInteraction',
  'additionalData.store',
  'additionalData.terminalId',
  'additionalData.cardSummary',
  'card.token',
];
const STRIPE_PATHS = [
  'id',
  'type',
  'created',
  'livemode',
  'card.token',
  ...[
    'id',
    'object',
    'amount',
    'amount_captured',
    'amount_refunded',
    'captured',
    'currency',
    'status',
    'charge',
    'description',
    'metadata.order_id',
    'metadata.store_id',
    'metadata.terminal_id',
    'payment_method_details.type',
    'payment_method_details.card.brand',
    'payment_method_details.card.last4',
    'payment_method_details.card_present.brand',
    'payment_method_details.card_present.last4',
    'payment_method_details.card_present.terminal_id',
  ].map((p) => `data.object.${p}`),
];
const PLATFORM_PATHS = [
  'type',
  'occurredAt',
  'payment.id',
  'payment.merchantReference',
  'payment.amount.value',
  'payment.amount.currency',
  'payment.channel',
  'payment.storeId',
  'payment.terminalId',
  'card.token',
  'refund.id',
  'refund.amount',
  'chargeback.id',
  'chargeback.amount',
];
const PATHS: Readonly<Record<string, readonly string[]>> = {
  adyen: ADYEN_PATHS,
  stripe: STRIPE_PATHS,
  platform: PLATFORM_PATHS,
};
const ADYEN_REFERENCE = /^[A-Za-z0-9]{16}$/;

/** The allow-listed leaves of `payload` (scalars only), and the pointers of what was dropped. */
export function reproject(provider: string, payload: unknown): { value: Json; masked: string[] } {
  const paths = PATHS[provider] ?? [];
  const kept: Json = {};
  for (const path of paths) {
    const parts = path.split('.');
    let node: unknown = payload;
    for (const part of parts) node = node !== null && typeof node === 'object' ? (node as Json)[part] : undefined;
    if (typeof node !== 'string' && typeof node !== 'number' && typeof node !== 'boolean') continue;
    let target = kept;
    for (const part of parts.slice(0, -1)) target = (target[part] ??= {}) as Json;
    target[parts[parts.length - 1] as string] = node;
  }
  const references: Json = {};
  if (provider === 'adyen') {
    for (const name of ['pspReference', 'originalReference']) {
      const value = kept[name];
      if (typeof value === 'string' && ADYEN_REFERENCE.test(value)) references[name] = value;
    }
  }
  const { value, masked } = maskCardDataDeep(kept);
  const dropped = leafPointers(payload).filter((p) => !leafPointers(kept).includes(p));
  return { value: { ...value, ...references }, masked: [...masked, ...dropped] };
}

function leafPointers(value: unknown, pointer = ''): string[] {
  if (value === null || typeof value !== 'object') return [pointer];
  return Object.entries(value as Json).flatMap(([key, child]) => leafPointers(child, `${pointer}/${key}`));
}

async function cleanInbox(knex: Knex): Promise<void> {
  const rows = (await knex('webhook_inbox').select('id', 'provider', 'payload', 'masked')) as {
    id: string;
    provider: string;
    payload: unknown;
    masked: string[];
  }[];
  for (const row of rows) {
    const { value, masked } = reproject(row.provider, row.payload);
    if (JSON.stringify(value) === JSON.stringify(row.payload)) continue;
    await knex('webhook_inbox')
      .where({ id: row.id })
      .update({ payload: JSON.stringify(value), masked: JSON.stringify([...row.masked, ...masked]) });
  }
}

/** Guarded text-like columns (not exempt), with their table's primary key. */
async function guardedColumns(knex: Knex): Promise<{ table: string; column: string; type: string; key: string[] }[]> {
  const result = (await knex.raw(
    `select c.table_name, c.column_name, c.data_type,
            (select array_agg(a.attname::text order by a.attnum)
               from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any (i.indkey)
              where i.indrelid = (quote_ident(c.table_name))::regclass and i.indisprimary) as key
       from information_schema.columns c
       join information_schema.tables t on t.table_schema = c.table_schema and t.table_name = c.table_name
      where c.table_schema = current_schema() and t.table_type = 'BASE TABLE'
        and c.data_type in ('text', 'character varying', 'character', 'json', 'jsonb')
        and not exists (select 1 from card_data_exempt_columns e
                         where e.table_name = c.table_name and e.column_name = c.column_name)
      order by 1, 2`,
  )) as { rows: { table_name: string; column_name: string; data_type: string; key: string[] | null }[] };
  return result.rows.flatMap((r) =>
    r.key === null ? [] : [{ table: r.table_name, column: r.column_name, type: r.data_type, key: r.key }],
  );
}

function maskValue(value: unknown, type: string): unknown {
  if (type === 'json' || type === 'jsonb') return JSON.stringify(maskCardDataDeep(value).value);
  const text = String(value);
  try {
    const parsed = JSON.parse(text) as unknown;
    if (parsed !== null && typeof parsed === 'object') return JSON.stringify(maskCardDataDeep(parsed).value);
  } catch {
    // not JSON: masked as text below
  }
  return maskCardData(text);
}

async function cleanColumns(knex: Knex): Promise<void> {
  for (const { table, column, type, key } of await guardedColumns(knex)) {
    if (table === 'audit_events' || (table === 'webhook_inbox' && column === 'payload')) continue;
    const rows = (await knex(table)
      .whereRaw('card_data_in_json(to_jsonb(??))', [column])
      .select([...key, column])) as Json[];
    for (const row of rows) {
      const where = Object.fromEntries(key.map((k) => [k, row[k]]));
      if (table === 'idempotency_keys' && column === 'key') {
        await knex(table).where(where).delete();
        continue;
      }
      await knex(table)
        .where(where)
        .update({ [column]: maskValue(row[column], type) });
    }
  }
}

export async function up(knex: Knex): Promise<void> {
  await cleanInbox(knex);
  await cleanColumns(knex);
}

export async function down(): Promise<void> {
  // Card data removed is not put back.
}
