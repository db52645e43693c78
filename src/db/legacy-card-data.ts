/**
 * Card data stored before the guard where nothing may rewrite it (docs/card-data.md, "Cleaning what
 * was stored before"): reported, never shown. Migration 20261209300000 re-keyed every gateway
 * reference it safely could; what is left here is
 * - gateway references a redelivery would still be matched by (a 16-alphanumeric Adyen reference that
 *   holds a card number: `payments.external_id`, `webhook_inbox.event_key` and its payload references,
 *   `payment_facts.fact_key`), and a UUID-shaped platform `webhook-id` holding one (`event_key`, and a
 *   fact key equal to it), verdict `report` of src/card-data/legacy-references.ts;
 * - `audit_events` actor, action, origin and resource: covered by the entry MAC, so neither rewritten
 *   nor redactable (new entries have them masked by `appendAuditEvent`).
 * A finding names the table, the column and the row's key, never the value.
 */
import type { Knex } from 'knex';
import { containsCardData } from '../card-data/card-data-guard.js';
import { legacyReferenceVerdict, type LegacyReferenceRole } from '../card-data/legacy-references.js';

export interface LegacyCardDataFinding {
  readonly table: string;
  readonly column: string;
  /** The row: `id`, `seq`, or `payment_id/kind/inbox_id` for a fact (its primary key holds the value). */
  readonly row: string;
}

const BATCH = 1000;

export async function findLegacyCardData(knex: Knex | Knex.Transaction): Promise<LegacyCardDataFinding[]> {
  return [...(await inboxReferences(knex)), ...(await paymentReferences(knex)), ...(await auditColumns(knex))];
}

const reported = (provider: string, value: unknown, role?: LegacyReferenceRole): boolean =>
  typeof value === 'string' && legacyReferenceVerdict(provider, value, role) === 'report';

/** Adyen and platform inbox events, page by page (nothing else can be reported). */
async function inboxReferences(knex: Knex | Knex.Transaction): Promise<LegacyCardDataFinding[]> {
  const found: LegacyCardDataFinding[] = [];
  for (let after = ''; ;) {
    const rows = (await knex('webhook_inbox')
      .select(
        'id',
        'provider',
        'event_key',
        knex.raw(`payload->>'pspReference' as psp`),
        knex.raw(`payload->>'originalReference' as orig`),
      )
      .whereIn('provider', ['adyen', 'platform'])
      .where('id', '>', after)
      .orderBy('id')
      .limit(BATCH)) as { id: string; provider: string; event_key: string; psp: string | null; orig: string | null }[];
    for (const row of rows) {
      if (reported(row.provider, row.event_key, 'webhook-id')) {
        found.push({ table: 'webhook_inbox', column: 'event_key', row: row.id });
      }
      if (row.provider === 'adyen' && (reported('adyen', row.psp) || reported('adyen', row.orig))) {
        found.push({ table: 'webhook_inbox', column: 'payload', row: row.id });
      }
    }
    if (rows.length < BATCH) break;
    after = rows[rows.length - 1]!.id;
  }
  return found;
}

/** Adyen and platform payments page by page, with the facts of each page. */
async function paymentReferences(knex: Knex | Knex.Transaction): Promise<LegacyCardDataFinding[]> {
  const found: LegacyCardDataFinding[] = [];
  for (let after = ''; ;) {
    const payments = (await knex('payments')
      .select('id', 'provider', 'external_id')
      .whereIn('provider', ['adyen', 'platform'])
      .where('id', '>', after)
      .orderBy('id')
      .limit(BATCH)) as { id: string; provider: string; external_id: string }[];
    for (const p of payments) {
      if (reported(p.provider, p.external_id)) found.push({ table: 'payments', column: 'external_id', row: p.id });
    }
    const providers = new Map(payments.map((p) => [p.id, p.provider]));
    const facts = (await knex('payment_facts')
      .leftJoin('webhook_inbox', 'webhook_inbox.id', 'payment_facts.inbox_id')
      .whereIn(
        'payment_facts.payment_id',
        payments.map((p) => p.id),
      )
      .select(
        'payment_facts.payment_id',
        'payment_facts.kind',
        'payment_facts.inbox_id',
        'payment_facts.fact_key',
        'webhook_inbox.event_key',
      )) as { payment_id: string; kind: string; inbox_id: string; fact_key: string; event_key: string | null }[];
    for (const f of facts) {
      const role = f.fact_key === f.event_key ? 'webhook-id' : 'reference';
      if (reported(providers.get(f.payment_id) ?? '', f.fact_key, role)) {
        found.push({ table: 'payment_facts', column: 'fact_key', row: `${f.payment_id}/${f.kind}/${f.inbox_id}` });
      }
    }
    if (payments.length < BATCH) break;
    after = payments[payments.length - 1]!.id;
  }
  return found;
}

async function auditColumns(knex: Knex | Knex.Transaction): Promise<LegacyCardDataFinding[]> {
  const found: LegacyCardDataFinding[] = [];
  for (let after = 0; ;) {
    const rows = (await knex('audit_events')
      .select('seq', 'actor', 'action', 'origin', 'resource')
      .where('seq', '>', after)
      .orderBy('seq')
      .limit(BATCH)) as { seq: number; actor: string; action: string; origin: string; resource: string }[];
    for (const row of rows) {
      for (const column of ['actor', 'action', 'origin', 'resource'] as const) {
        if (containsCardData(row[column])) found.push({ table: 'audit_events', column, row: String(row.seq) });
      }
    }
    if (rows.length < BATCH) break;
    after = rows[rows.length - 1]!.seq;
  }
  return found;
}

/** What migration 20261209300000 recorded and left (read at start-up): rows per table and column. */
export async function recordedLegacyCardData(
  knex: Knex | Knex.Transaction,
): Promise<{ readonly table: string; readonly column: string; readonly rows: number }[]> {
  const rows = (await knex('card_data_legacy_findings')
    .select('table_name', 'column_name')
    .count({ n: '*' })
    .groupBy('table_name', 'column_name')
    .orderBy(['table_name', 'column_name'])) as { table_name: string; column_name: string; n: string | number }[];
  return rows.map((r) => ({ table: r.table_name, column: r.column_name, rows: Number(r.n) }));
}
