/**
 * Support of the card-data red-team suite: every written form of the test PANs, and the scans.
 * Only scheme test numbers are used (never real card data), and every form is made at run time.
 */
import { execFileSync } from 'node:child_process';
import type { TestService } from '../support/harness.js';
import { usingPostgres } from '../support/database.js';
import { containsCardData } from '../../src/card-data/card-data-guard.js';

/** Scheme test PANs of every length the vault accepts: 12, 15, 16 and 19 digits. */
export const RED_TEAM_PANS = [
  '4111111111111111',
  '5555555555554444',
  '5105105105105100',
  '6011000990139424',
  '378282246310005',
  '4012888888881881',
  '411111111117',
  '4111111111111111110',
] as const;

const group = (pan: string, sep: string): string => pan.replace(/(\d{4})(?=\d)/g, `$1${sep}`);

/** Every form the suite sends a PAN in; all must end up masked or refused. */
export function panForms(pan: string): Record<string, string> {
  return {
    plain: pan,
    spaces: group(pan, ' '),
    dashes: group(pan, '-'),
    dots: group(pan, '.'),
    slashes: group(pan, '/'),
    underscores: group(pan, '_'),
    mixed: pan.replace(/(\d{4})(\d{4})(\d{4})(?=\d)/, '$1 $2-$3.'),
    'one digit per group': pan.split('').join('-'),
  };
}

/** Forms the Idempotency-Key pattern (`[A-Za-z0-9._:-]`) lets through. */
export function keyForms(pan: string): string[] {
  return [pan, group(pan, '.'), group(pan, '-'), group(pan, '_'), group(pan, ':')];
}

export const track1 = (pan: string): string => `%B${pan}^TEST/CARDHOLDER^2512101000000000?`;
export const track2 = (pan: string): string => `;${pan}=25121010000000000000?`;

/** Every table of the public schema, every row, as text (what pg_dump would hold, PGlite included). */
export async function dumpEveryRow(svc: TestService): Promise<{ text: string; tables: number; rows: number }> {
  const tables = (await svc.db
    .knex('information_schema.tables')
    .where({ table_schema: 'public', table_type: 'BASE TABLE' })
    .pluck('table_name')) as string[];
  let rows = 0;
  const parts: string[] = [];
  for (const table of tables) {
    const result = (await svc.db.knex.raw(`select t::text as row from ?? t`, [table])) as { rows: { row: string }[] };
    rows += result.rows.length;
    parts.push(`-- ${table}`, ...result.rows.map((r) => r.row));
  }
  return { text: parts.join('\n'), tables: tables.length, rows };
}

/** A real pg_dump of the test database when on PostgreSQL and the binary exists; else undefined. */
export function pgDump(svc: TestService): string | undefined {
  if (!usingPostgres) return undefined;
  try {
    return execFileSync('pg_dump', ['--no-owner', '--data-only', svc.db.url as string], {
      maxBuffer: 512 * 1024 * 1024,
    }).toString('utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** The PANs found in `haystack`, as sent (any of its forms) or as bare digits. */
export function panHits(haystack: string, pans: readonly string[]): string[] {
  const hits: string[] = [];
  for (const pan of pans) {
    const forms = [...Object.values(panForms(pan)), ...keyForms(pan), track1(pan), track2(pan)];
    for (const form of forms) if (haystack.includes(form)) hits.push(form);
  }
  return hits;
}

/**
 * The stored keys (`webhook_inbox.event_key`, `payments.external_id`, `payment_facts.fact_key`) the
 * card-data detector flags, as `table.column=value`. Keys are exempt from the database guard, so the
 * detector is asked here. The only value allowed through is the one the design accepts as sent: an
 * Adyen key whose reference is 16 alphanumerics (an all-digit Luhn-valid one cannot be told from a real
 * Adyen reference, docs/card-data.md) and whose other parts (`eventCode`, `success`) hold no card data.
 */
export async function storedKeysHoldingCardData(svc: TestService): Promise<string[]> {
  const adyenKeyAccepted = (value: string): boolean => {
    const [reference = '', ...rest] = value.split(':');
    return /^[A-Za-z0-9]{16}$/.test(reference) && rest.every((part) => !containsCardData(part));
  };
  const flagged: string[] = [];
  const check = (where: string, provider: string, value: string): void => {
    if (!containsCardData(value)) return;
    if (provider === 'adyen' && adyenKeyAccepted(value)) return;
    flagged.push(`${where}=${value}`);
  };
  for (const r of (await svc.db.knex('webhook_inbox').select('provider', 'event_key')) as {
    provider: string;
    event_key: string;
  }[]) {
    check('webhook_inbox.event_key', r.provider, r.event_key);
  }
  for (const r of (await svc.db.knex('payments').select('provider', 'external_id')) as {
    provider: string;
    external_id: string;
  }[]) {
    check('payments.external_id', r.provider, r.external_id);
  }
  for (const r of (await svc.db
    .knex('payment_facts')
    .join('payments', 'payments.id', 'payment_facts.payment_id')
    .select('payments.provider', 'payment_facts.fact_key')) as { provider: string; fact_key: string }[]) {
    check('payment_facts.fact_key', r.provider, r.fact_key);
  }
  return flagged;
}
