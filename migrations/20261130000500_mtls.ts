/**
 * Mutual TLS for card-data clients (issue 9): the client CA is a data key of purpose
 * `mtls-client-ca` (its private key wrapped by the master key like every other, its certificate kept
 * in clear beside it), and every client certificate it issues has a row here, which is what maps a
 * presented certificate to a client and its scopes, and what revokes it.
 *
 * Append-only: the constraints of earlier tables are replaced here, never edited where they landed.
 */
import type { Knex } from 'knex';

const PURPOSES_BEFORE = `'pan-encryption', 'identifier-mac', 'audit-signing'`;

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('data_keys', (t) => {
    // The CA certificate (public): every instance trusts the certificates of every readable version.
    t.text('certificate_pem');
  });
  await knex.raw(`
    alter table data_keys
      drop constraint data_keys_purpose_check,
      add constraint data_keys_purpose_check check (purpose in (${PURPOSES_BEFORE}, 'mtls-client-ca')),
      drop constraint data_keys_public_key_check,
      add constraint data_keys_public_key_check
        check ((purpose in ('audit-signing', 'mtls-client-ca')) = (public_key_pem is not null)),
      add constraint data_keys_certificate_check
        check ((purpose = 'mtls-client-ca') = (certificate_pem is not null))`);

  await knex.schema.createTable('mtls_client_certificates', (t) => {
    // Upper-case hex bytes joined by colons (`0F:9D:…`): never a digit run the PAN guard would refuse.
    t.text('serial').primary();
    t.text('client_name').notNullable();
    t.jsonb('scopes').notNullable();
    t.timestamp('not_before', { useTz: true }).notNullable();
    t.timestamp('not_after', { useTz: true }).notNullable();
    // SHA-256 of the DER certificate, base64url: the presented certificate must be exactly this one.
    t.text('fingerprint_sha256').notNullable().unique();
    // The mtls-client-ca version that signed it; null for a certificate of an external CA (TLS_CLIENT_CA).
    t.integer('ca_version');
    // 'generated': key made by the CLI and shipped in a PKCS#12 bundle; 'csr': key never left the device;
    // 'external': issued by the CA of TLS_CLIENT_CA and registered here for its client and scopes.
    t.text('key_source').notNullable();
    t.text('issued_by').notNullable();
    t.timestamp('issued_at', { useTz: true }).notNullable();
    t.timestamp('revoked_at', { useTz: true });
    t.text('revoked_by');
    t.text('revocation_reason');
  });
  await knex.raw(`
    alter table mtls_client_certificates
      add constraint mtls_client_certificates_key_source_check check (key_source in ('generated', 'csr', 'external')),
      add constraint mtls_client_certificates_ca_check check ((key_source = 'external') = (ca_version is null)),
      add constraint mtls_client_certificates_validity_check check (not_after > not_before),
      add constraint mtls_client_certificates_revoked_check
        check ((revoked_at is null) = (revoked_by is null) and (revoked_at is null) = (revocation_reason is null))`);
  await knex.raw(`create index mtls_client_certificates_client on mtls_client_certificates (client_name)`);
  await knex.raw(`create index mtls_client_certificates_ca on mtls_client_certificates (ca_version)`);

  // Bumped in the revoking transaction: each instance compares it (one indexed single-row read, at most
  // every MTLS_REVOCATION_CHECK_MS) and drops its cached certificate records when it moved.
  await knex.schema.createTable('mtls_revocation_generation', (t) => {
    t.integer('id').primary();
    t.bigInteger('generation').notNullable();
  });
  await knex.raw(
    `alter table mtls_revocation_generation add constraint mtls_revocation_generation_singleton check (id = 1)`,
  );
  await knex('mtls_revocation_generation').insert({ id: 1, generation: 0 });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('mtls_revocation_generation');
  await knex.schema.dropTableIfExists('mtls_client_certificates');
  await knex('data_keys').where({ purpose: 'mtls-client-ca' }).delete();
  await knex.raw(`
    alter table data_keys
      drop constraint data_keys_certificate_check,
      drop constraint data_keys_public_key_check,
      add constraint data_keys_public_key_check check ((purpose = 'audit-signing') = (public_key_pem is not null)),
      drop constraint data_keys_purpose_check,
      add constraint data_keys_purpose_check check (purpose in (${PURPOSES_BEFORE}))`);
  await knex.schema.alterTable('data_keys', (t) => {
    t.dropColumn('certificate_pem');
  });
}
