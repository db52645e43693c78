/**
 * Seals for the mTLS trust data (security review, finding 1): a client CA certificate kept in
 * `data_keys` and a client certificate's grant (client, scopes, validity) in
 * `mtls_client_certificates` were trusted as read, so database write access alone could add a CA or
 * widen a till's scopes. Each now carries a SHA-256 of its canonical description wrapped by the
 * master key (src/mtls/seals.ts); the service refuses a row whose seal does not verify.
 *
 * Rows present when this migration runs get no seal and are therefore untrusted: the feature was
 * hours old and never deployed, so such certificates are reissued (and a CA made before this
 * migration is replaced by `keys rotate --purpose mtls-client-ca`), not sealed after the fact.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('data_keys', (t) => {
    // Only for purpose mtls-client-ca: masterKey.wrap(sha256(canonical CA description)).
    t.binary('certificate_seal');
  });
  await knex.raw(`
    alter table data_keys
      add constraint data_keys_certificate_seal_check
        check (certificate_seal is null or purpose = 'mtls-client-ca')`);
  await knex.schema.alterTable('mtls_client_certificates', (t) => {
    // masterKey.wrap(sha256(canonical grant)); revocation columns are outside it (revoking never reseals).
    t.binary('seal');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('mtls_client_certificates', (t) => {
    t.dropColumn('seal');
  });
  await knex.raw(`alter table data_keys drop constraint data_keys_certificate_seal_check`);
  await knex.schema.alterTable('data_keys', (t) => {
    t.dropColumn('certificate_seal');
  });
}
