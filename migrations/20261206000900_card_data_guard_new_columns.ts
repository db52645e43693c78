/**
 * The card-data guard (20261206000100) over the tables and columns that later migrations of the same
 * release added: the keyed audit trail (20261206000300), dual control bound to what was signed
 * (20261206000400), subscription secrets under their own key (20261206000600), the sealed mTLS
 * revocation list (20261206000610) and instance heartbeats (20261206000700).
 *
 * Digests, MACs, salts, thumbprints and master-key ids are computed by the service and never carry
 * outside text; in hex they hold a Luhn-valid run of 12 or more digits about once in a hundred
 * values, so they are exempt with that reason, as the earlier digest columns are. Every other new
 * text column is read by the guard. test/card-data/column-coverage.test.ts checks the result.
 */
import type { Knex } from 'knex';

const EXEMPT: readonly (readonly [table: string, column: string, reason: string])[] = [
  ['audit_chain_head', 'mac', 'HMAC-SHA256 of the head under the audit-chain key'],
  ['audit_chain_keys', 'kek_id', 'master-key id (base64url), set by the service'],
  ['audit_events', 'details_digest', 'salted SHA-256 digest of the details'],
  ['audit_events', 'details_salt', 'random salt of the details digest'],
  ['dual_control_ledger', 'chain', 'hash chain value of the executed-request ledger'],
  ['key_approvals', 'key_thumbprint', 'JWK thumbprint (base64url SHA-256)'],
  ['key_request_executions', 'chain', 'hash chain value of the executed-request ledger'],
  ['key_request_executions', 'payload_sha256', 'SHA-256 digest of the signed request payload'],
  ['mtls_revocations', 'fingerprint_sha256', 'certificate SHA-256 fingerprint (hex with colons)'],
  ['mtls_revocations', 'serial', 'random certificate serial number (hex)'],
];

const TABLES = [
  'audit_chain_head',
  'audit_chain_keys',
  'audit_events',
  'dual_control_ledger',
  'event_subscription_secrets',
  'key_approvals',
  'key_custodians',
  'key_request_executions',
  'key_ring_instances',
  'mtls_revocations',
];

async function attach(knex: Knex): Promise<void> {
  for (const table of TABLES) await knex.raw('select card_data_guard_attach(?)', [table]);
}

export async function up(knex: Knex): Promise<void> {
  await knex('card_data_exempt_columns').insert(
    EXEMPT.map(([table, column, reason]) => ({ table_name: table, column_name: column, reason })),
  );
  await attach(knex);
}

export async function down(knex: Knex): Promise<void> {
  for (const [table, column] of EXEMPT) {
    await knex('card_data_exempt_columns').where({ table_name: table, column_name: column }).delete();
  }
  await attach(knex);
}
