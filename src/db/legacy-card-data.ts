/**
 * Card data stored before the guard where nothing may rewrite it (docs/card-data.md, "Cleaning what
 * was stored before"): reported, never shown. Migration 20261209300000 re-keyed every gateway
 * reference it safely could; what is left here is
 * - gateway references a redelivery would still be matched by (a 16-alphanumeric Adyen reference that
 *   holds a card number: `payments.external_id`, `webhook_inbox.event_key` and its payload references,
 *   `payment_facts.fact_key`), and a UUID-shaped platform `webhook-id` holding one (`event_key`, and a
 *   fact key equal to it), verdict `report` of src/card-data/legacy-references.ts;
 * - `audit_events` actor, action, origin and resource: covered by the entry MAC, so neither rewritten
 *   nor redactable (new entries have them masked by `appendAuditEvent`);
 * - client `Idempotency-Key`s an earlier release stored as sent (`idempotency_keys.key`,
 *   `event_subscription_secrets.rotation_key`) that a retry still matches: a bare UUID holding card
 *   data (role `idempotency-key`; migration 20261210000000, issue 16 third review). An
 *   `idempotency_keys` row is named by its scope and creation time (its primary key holds the value).
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
  return [...(await findLegacyReferenceData(knex)), ...(await findLegacyClientKeys(knex))];
}

/** The gateway references and audit columns (what migration 20261209300000 recorded). */
export async function findLegacyReferenceData(knex: Knex | Knex.Transaction): Promise<LegacyCardDataFinding[]> {
  return [...(await inboxReferences(knex)), ...(await paymentReferences(knex)), ...(await auditColumns(knex))];
}

/** Client `Idempotency-Key`s kept as sent that a retry still matches (what migration 20261210000000 recorded). */
export async function findLegacyClientKeys(knex: Knex | Knex.Transaction): Promise<LegacyCardDataFinding[]> {
  const found: LegacyCardDataFinding[] = [];
  for (const row of await legacyClientKeys(knex, 'report')) found.push(row.finding);
  return found;
}

export interface LegacyClientKey {
  readonly table: 'idempotency_keys' | 'event_subscription_secrets';
  /** The row's primary key (`scope` and `key`, or `id`): for the caller's update, never reported. */
  readonly where: Readonly<Record<string, string>>;
  readonly key: string;
  readonly finding: LegacyCardDataFinding;
}

/**
 * Client keys holding card data whose verdict (src/card-data/legacy-references.ts, role
 * `idempotency-key`) is `verdict`. Only rows the pre-scan lets through are read in full: a key with
 * fewer than 12 digits unbroken by a letter cannot hold card data.
 */
export async function legacyClientKeys(
  knex: Knex | Knex.Transaction,
  verdict: 'report' | 'rekey',
): Promise<LegacyClientKey[]> {
  const found: LegacyClientKey[] = [];
  const candidates = `[0-9]([^A-Za-z0-9]*[0-9]){11}`;
  const keys = (await knex('idempotency_keys')
    .whereRaw('key ~ ?', [candidates])
    .select('scope', 'key', 'created_at')
    .orderBy(['scope', 'created_at'])) as { scope: string; key: string; created_at: Date | string }[];
  for (const row of keys) {
    if (legacyReferenceVerdict('client', row.key, 'idempotency-key') !== verdict) continue;
    found.push({
      table: 'idempotency_keys',
      where: { scope: row.scope, key: row.key },
      key: row.key,
      finding: {
        table: 'idempotency_keys',
        column: 'key',
        row: `${row.scope}@${new Date(row.created_at).toISOString()}`,
      },
    });
  }
  const rotations = (await knex('event_subscription_secrets')
    .whereRaw('rotation_key ~ ?', [candidates])
    .select('id', 'rotation_key')
    .orderBy('id')) as { id: string; rotation_key: string }[];
  for (const row of rotations) {
    if (legacyReferenceVerdict('client', row.rotation_key, 'idempotency-key') !== verdict) continue;
    found.push({
      table: 'event_subscription_secrets',
      where: { id: row.id },
      key: row.rotation_key,
      finding: { table: 'event_subscription_secrets', column: 'rotation_key', row: row.id },
    });
  }
  return found;
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
