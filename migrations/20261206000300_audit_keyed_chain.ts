/**
 * The keyed, redactable audit trail (issue 16, issue 17): columns for the audit-chain key version,
 * the salted details digest and the sealed head; the audit-chain keys; and the card data already in
 * the trail removed.
 *
 * Migrations run without the master key (`npm run migrate`), so this one does what needs no key:
 * 1. checks the plain SHA-256 chain while every entry is still whole, and records a finding in
 *    `audit_chain_head.legacy_verdict` (NULL when intact);
 * 2. redacts every entry whose details hold card data: a random salt, the digest of salt and the
 *    original details, then the details replaced by a tombstone and the salt discarded. The chain
 *    will commit to that digest, so nothing about the entry but its details is lost, and with the
 *    salt gone the digest cannot be used to confirm a guessed PAN.
 * The first append with a master key (service start, any key CLI command) then re-chains every
 * entry under the audit-chain key in one transaction and records the conversion and each of these
 * redactions as entries of their own (src/audit/audit-conversion.ts).
 *
 * `down` re-chains with plain SHA-256 over what is stored (redacted details stay redacted: that is
 * the point of redacting) so the previous release's verifier accepts the trail, then drops the
 * columns and the chain keys.
 */
import type { Knex } from 'knex';
import {
  detailsDigest,
  holdsCardData,
  LEGACY_GENESIS_HASH,
  legacyHash,
  newDetailsSalt,
} from '../src/audit/audit-chain.js';

const MIGRATION = '20261206000300';

interface Row {
  seq: number;
  id: string;
  occurred_at: Date;
  actor: string;
  actor_type: string;
  action: string;
  outcome: string;
  origin: string;
  resource: string;
  details: Record<string, unknown> | string;
  prev_hash: string;
  hash: string;
}

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('audit_chain_keys', (t) => {
    t.integer('version').primary();
    t.text('state').notNullable();
    // AES-256-GCM under the master key, AAD `loyalty-vault/audit-chain-key/v1|<version>`.
    t.binary('wrapped_key').notNullable();
    t.text('kek_id').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
  });
  await knex.raw(`
    alter table audit_chain_keys
      add constraint audit_chain_keys_state_check check (state in ('active', 'verify-only')),
      add constraint audit_chain_keys_version_check check (version >= 1)`);
  await knex.raw(`create unique index audit_chain_keys_one_active on audit_chain_keys (state) where state = 'active'`);
  await knex.schema.alterTable('audit_events', (t) => {
    t.integer('key_version');
    t.text('details_digest');
    t.text('details_salt');
  });
  await knex.schema.alterTable('audit_chain_head', (t) => {
    t.integer('key_version');
    t.text('mac');
    t.text('legacy_verdict');
  });

  let prev = LEGACY_GENESIS_HASH;
  let expectedSeq = 1;
  let finding: string | undefined;
  for (let after = 0; ;) {
    const rows = (await knex('audit_events').where('seq', '>', after).orderBy('seq').limit(1000)) as Row[];
    for (const row of rows) {
      const details = typeof row.details === 'string' ? (JSON.parse(row.details) as unknown) : row.details;
      finding ??= legacyFinding(row, details, expectedSeq, prev);
      prev = row.hash;
      expectedSeq = row.seq + 1;
      if (!holdsCardData(details)) continue;
      const salt = newDetailsSalt();
      await knex('audit_events')
        .where({ seq: row.seq })
        .update({
          details_digest: detailsDigest(salt, details),
          details_salt: null,
          details: JSON.stringify({
            redacted: {
              bySeq: null,
              at: new Date().toISOString(),
              reason: `card data found by migration ${MIGRATION}`,
            },
          }),
        });
    }
    if (rows.length < 1000) break;
    after = expectedSeq - 1;
  }
  const head = (await knex('audit_chain_head').where({ id: 1 }).first()) as { seq: number; hash: string };
  if (finding === undefined && (head.seq !== expectedSeq - 1 || head.hash !== prev)) {
    finding = `plain chain: the head named entry ${head.seq}, the last entry was ${expectedSeq - 1}`;
  }
  if (finding !== undefined) await knex('audit_chain_head').where({ id: 1 }).update({ legacy_verdict: finding });
}

function legacyFinding(row: Row, details: unknown, expectedSeq: number, prev: string): string | undefined {
  if (row.seq !== expectedSeq) return `plain chain: entry ${expectedSeq} was missing`;
  if (row.prev_hash !== prev) return `plain chain: entry ${row.seq} did not link to its predecessor`;
  const body = {
    seq: row.seq,
    id: row.id,
    occurredAt: row.occurred_at.toISOString(),
    actor: row.actor,
    actorType: row.actor_type,
    action: row.action,
    outcome: row.outcome,
    origin: row.origin,
    resource: row.resource,
    details,
    prevHash: row.prev_hash,
  };
  return legacyHash(body) === row.hash ? undefined : `plain chain: entry ${row.seq} did not match its hash`;
}

export async function down(knex: Knex): Promise<void> {
  let prev = LEGACY_GENESIS_HASH;
  let last = 0;
  for (let after = 0; ;) {
    const rows = (await knex('audit_events').where('seq', '>', after).orderBy('seq').limit(1000)) as Row[];
    for (const row of rows) {
      const details = typeof row.details === 'string' ? (JSON.parse(row.details) as unknown) : row.details;
      const hash = legacyHash({
        seq: row.seq,
        id: row.id,
        occurredAt: row.occurred_at.toISOString(),
        actor: row.actor,
        actorType: row.actor_type,
        action: row.action,
        outcome: row.outcome,
        origin: row.origin,
        resource: row.resource,
        details,
        prevHash: prev,
      });
      await knex('audit_events').where({ seq: row.seq }).update({ prev_hash: prev, hash });
      prev = hash;
      last = row.seq;
    }
    if (rows.length < 1000) break;
    after = last;
  }
  await knex('audit_chain_head').where({ id: 1 }).update({ seq: last, hash: prev });
  await knex.schema.alterTable('audit_chain_head', (t) => {
    t.dropColumn('key_version');
    t.dropColumn('mac');
    t.dropColumn('legacy_verdict');
  });
  await knex.schema.alterTable('audit_events', (t) => {
    t.dropColumn('key_version');
    t.dropColumn('details_digest');
    t.dropColumn('details_salt');
  });
  await knex.schema.dropTable('audit_chain_keys');
}
