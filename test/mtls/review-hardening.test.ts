/**
 * The security review of the mTLS feature: what database write access alone must not achieve (seals),
 * the revocation race of the record cache, certificates never carrying PAN access, and the client
 * certificate's keyUsage. Driven through the verifier the service builds, on the real database.
 */
import { expect } from 'chai';
import { createPrivateKey, generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import forge from 'node-forge';
import type { Knex } from 'knex';
import { migrateToLatest } from '../../src/db/migrations.js';
import { LocalMasterKey, MasterKeySet } from '../../src/keys/master-key-source.js';
import { wrappingAad } from '../../src/keys/key-ring.js';
import {
  certificateFingerprint,
  formatSerial,
  generateCa,
  randomSerialHex,
} from '../../src/mtls/certificate-authority.js';
import { createClientCertificateVerifier } from '../../src/mtls/client-certificate-verifier.js';
import { ClientCertificateAuthority } from '../../src/mtls/client-certificates.js';
import { caSealValid, grantSealValid, rewrapSeals, sealGrant, type GrantFields } from '../../src/mtls/seals.js';
import { containsCardData } from '../../src/card-data/card-data-guard.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { keysFixture, OPERATOR, type KeysFixture } from '../keys/keys-context.js';

describe('mTLS security review: seals, revocation race, detokenise scope, keyUsage', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let fx: KeysFixture;
  let ca: ClientCertificateAuthority;

  const verifier = (extra: { now?: () => number; afterRecordRead?: (serial: string) => Promise<void> } = {}) =>
    createClientCertificateVerifier(db.knex, { masterKey: fx.masterKey, revocationCheckMs: 60_000, ...extra });

  async function issue(client: string, scopes: string[] = ['tokens:write']) {
    const issued = await ca.issue({ client, scopes, days: 30, password: 'a-long-enough-password' });
    return { certificate: new X509Certificate(issued.certificatePem), serial: issued.record.serial };
  }

  async function outcome(promise: Promise<unknown>): Promise<string> {
    return promise.then(
      () => 'accepted',
      (error: { code?: string; message?: string }) => error.code ?? error.message ?? 'thrown',
    );
  }

  /** The CA's private key as PEM, as only the key CLI (holder of the master key) can have it. */
  async function caKeyPem(version: number): Promise<string> {
    const row = (await db.knex('data_keys').where({ purpose: 'mtls-client-ca', version }).first()) as {
      wrapped_key: Buffer;
    };
    const der = await fx.masterKey.unwrap(row.wrapped_key, wrappingAad('mtls-client-ca', version));
    return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })
      .export({ format: 'pem', type: 'pkcs8' })
      .toString();
  }

  /** A client certificate made with forge under `issuer`, with the given keyUsage (none: no extension). */
  function forgeClientCertificate(
    issuer: { certPem: string; keyPem: string },
    keyUsage: Record<string, boolean> | undefined,
    serialHex = randomSerialHex(),
  ): X509Certificate {
    const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const cert = forge.pki.createCertificate();
    cert.publicKey = forge.pki.publicKeyFromPem(publicKey.export({ format: 'pem', type: 'spki' }).toString());
    cert.serialNumber = serialHex;
    cert.validity.notBefore = new Date(Date.now() - 60_000);
    cert.validity.notAfter = new Date(Date.now() + 86_400_000);
    cert.setSubject([{ name: 'commonName', value: 'till-ku' }]);
    cert.setIssuer(forge.pki.certificateFromPem(issuer.certPem).subject.attributes);
    cert.setExtensions([
      { name: 'basicConstraints', cA: false },
      ...(keyUsage === undefined ? [] : [{ name: 'keyUsage', ...keyUsage }]),
      { name: 'extKeyUsage', clientAuth: true },
    ]);
    cert.sign(forge.pki.privateKeyFromPem(issuer.keyPem), forge.md.sha256.create());
    return new X509Certificate(forge.pki.certificateToPem(cert));
  }

  /** Records a grant for `certificate` the way the key CLI does, sealed (or with the given seal). */
  async function recordGrant(
    knex: Knex,
    certificate: X509Certificate,
    caVersion: number,
    seal?: Buffer | null,
  ): Promise<string> {
    const grant: GrantFields = {
      serial: formatSerial(certificate.serialNumber),
      fingerprint: certificateFingerprint(certificate.raw),
      clientName: 'till-ku',
      scopes: ['tokens:write'],
      caVersion,
      notBefore: new Date(certificate.validFrom),
      notAfter: new Date(certificate.validTo),
      keySource: 'csr',
    };
    await knex('mtls_client_certificates').insert({
      serial: grant.serial,
      client_name: grant.clientName,
      scopes: JSON.stringify(grant.scopes),
      not_before: grant.notBefore,
      not_after: grant.notAfter,
      fingerprint_sha256: grant.fingerprint,
      ca_version: caVersion,
      key_source: grant.keySource,
      issued_by: 'attacker',
      issued_at: new Date(),
      seal: seal === undefined ? await sealGrant(fx.masterKey, grant) : seal,
    });
    return grant.serial;
  }

  before(async () => {
    db = await createTestDatabase();
    await migrateToLatest(db.knex);
    fx = await keysFixture(db, { masterKeyBase64: randomBytes(32).toString('base64') });
    ca = new ClientCertificateAuthority({
      knex: db.knex,
      masterKey: fx.masterKey,
      actor: OPERATOR,
      cryptoperiodDays: 730,
    });
    await ca.initCa();
  });

  after(async () => {
    await db?.close();
  });

  describe('seals: database write access is not PAN access', () => {
    it('when a certificate is issued by the CLI and nothing is altered, then it is accepted with its recorded scopes', async () => {
      const till = await issue('till-intact');
      const principal = await verifier().verify(till.certificate);
      expect(principal.subject).to.equal('mtls:till-intact');
      expect([...principal.scopes]).to.deep.equal(['tokens:write']);
    });

    it("when a grant's scopes are widened in the database, then the certificate is refused with CLIENT_CERTIFICATE_UNTRUSTED", async () => {
      const till = await issue('till-widened');
      await db
        .knex('mtls_client_certificates')
        .where({ serial: till.serial })
        .update({ scopes: JSON.stringify(['tokens:detokenise', 'tokens:write']) });
      expect(await outcome(verifier().verify(till.certificate))).to.equal('CLIENT_CERTIFICATE_UNTRUSTED');
    });

    it("when a grant's client, validity or CA version is altered, or its seal is copied from another grant or removed, then it is refused", async () => {
      const donor = await issue('till-donor');
      const donorSeal = (
        (await db.knex('mtls_client_certificates').where({ serial: donor.serial }).first()) as {
          seal: Buffer;
        }
      ).seal;
      const alterations: [string, Record<string, unknown>][] = [
        ['client', { client_name: 'platform-gateway' }],
        ['not_after', { not_after: new Date(Date.now() + 900 * 86_400_000) }],
        ['key source', { key_source: 'csr' }],
        ['CA version', { ca_version: 7 }],
        ['seal of another grant', { seal: donorSeal }],
        ['no seal', { seal: null }],
      ];
      for (const [name, change] of alterations) {
        const till = await issue(`till-${randomBytes(3).toString('hex')}`);
        await db.knex('mtls_client_certificates').where({ serial: till.serial }).update(change);
        expect(await outcome(verifier().verify(till.certificate)), name).to.equal('CLIENT_CERTIFICATE_UNTRUSTED');
      }
    });

    it('when a foreign CA certificate is inserted as a new mtls-client-ca version with a grant it signed, then its certificates are refused', async () => {
      const foreign = generateCa(2, 30);
      const foreignKeyPem = createPrivateKey({ key: foreign.privateKeyDer, format: 'der', type: 'pkcs8' })
        .export({ format: 'pem', type: 'pkcs8' })
        .toString();
      await db.knex.transaction(async (trx) => {
        await trx('data_keys').insert({
          purpose: 'mtls-client-ca',
          version: 2,
          state: 'published',
          algorithm: 'RSA-3072',
          strength_bits: 128,
          wrapped_key: randomBytes(64),
          kek_id: fx.masterKey.keyId,
          cryptoperiod_days: 730,
          public_key_pem: foreign.publicKeyPem,
          certificate_pem: foreign.certificatePem,
          created_at: new Date(),
        });
        await trx('key_ring_generation').where({ id: 1 }).increment('generation', 1);
      });
      const forged = forgeClientCertificate(
        { certPem: foreign.certificatePem, keyPem: foreignKeyPem },
        { digitalSignature: true, keyEncipherment: true },
      );
      // Even with a grant sealed by the real master key: the CA itself is not sealed.
      try {
        await recordGrant(db.knex, forged, 2);
        expect(await outcome(verifier().verify(forged))).to.equal('CLIENT_CERTIFICATE_UNTRUSTED');
        // And the genuine CA's certificates still work beside it.
        expect(await outcome(verifier().verify((await issue('till-beside')).certificate))).to.equal('accepted');
      } finally {
        await db.knex('mtls_client_certificates').where({ ca_version: 2 }).delete();
        await db.knex('data_keys').where({ purpose: 'mtls-client-ca', version: 2 }).delete();
      }
    });

    it("when the CA row's certificate is replaced by a foreign one, then the seal no longer matches and it is not trusted", async () => {
      const row = (await db.knex('data_keys').where({ purpose: 'mtls-client-ca', version: 1 }).first()) as {
        certificate_pem: string;
        certificate_seal: Buffer;
      };
      const fields = { purpose: 'mtls-client-ca', version: 1, certificatePem: row.certificate_pem };
      expect(await caSealValid(fx.masterKey, fields, row.certificate_seal)).to.equal(true);
      const foreign = generateCa(1, 30);
      expect(
        await caSealValid(fx.masterKey, { ...fields, certificatePem: foreign.certificatePem }, row.certificate_seal),
      ).to.equal(false);
      expect(await caSealValid(fx.masterKey, { ...fields, version: 2 }, row.certificate_seal)).to.equal(false);
      const otherMasterKey = new LocalMasterKey(randomBytes(32), 'another master key');
      expect(await caSealValid(otherMasterKey, fields, row.certificate_seal)).to.equal(false);
    });

    it('when the master key is rotated, then the seals are rewrapped and verify under the new master key alone', async () => {
      const till = await issue('till-rewrap');
      const row = (await db.knex('mtls_client_certificates').where({ serial: till.serial }).first()) as {
        seal: Buffer;
      };
      const next = new LocalMasterKey(randomBytes(32), 'next master key');
      const fields = await ca.list().then((records) => records.find((r) => r.serial === till.serial));
      const grant: GrantFields = { ...(fields as GrantFields & { fingerprint: string }) };
      expect(await grantSealValid(next, grant, row.seal)).to.equal(false);
      await db.knex.transaction((trx) => rewrapSeals(trx, new MasterKeySet(next, [fx.masterKey])));
      const after = (await db.knex('mtls_client_certificates').where({ serial: till.serial }).first()) as {
        seal: Buffer;
      };
      expect(await grantSealValid(next, grant, after.seal)).to.equal(true);
      const caRow = (await db.knex('data_keys').where({ purpose: 'mtls-client-ca', version: 1 }).first()) as {
        certificate_pem: string;
        certificate_seal: Buffer;
      };
      expect(
        await caSealValid(
          next,
          { purpose: 'mtls-client-ca', version: 1, certificatePem: caRow.certificate_pem },
          caRow.certificate_seal,
        ),
      ).to.equal(true);
      // Put the seals back under the fixture's master key for the tests that follow.
      await db.knex.transaction((trx) => rewrapSeals(trx, new MasterKeySet(fx.masterKey, [next])));
    });
  });

  describe('revocation race in the record cache', () => {
    it('when a record read before a revocation finishes after another request saw the revocation, then it is not cached and the next request is refused', async () => {
      const till = await issue('till-race');
      let clock = Date.now();
      let interleaved = false;
      let second = '';
      const v: ReturnType<typeof verifier> = verifier({
        now: () => clock,
        // Between the first request's read (not revoked yet) and its caching: the revocation commits,
        // and a second request on this instance refreshes, drops the cache and is refused.
        afterRecordRead: async (serial) => {
          if (interleaved || serial !== till.serial) return;
          interleaved = true;
          await ca.revoke(till.serial, 'till reported stolen');
          clock += 60_000;
          second = await outcome(v.verify(till.certificate));
        },
      });
      // The request that began before the revocation is judged against the revoked serials as they are
      // when its record arrives (kept in memory apart from the record cache): already refused.
      expect(await outcome(v.verify(till.certificate)), 'began before the revocation').to.equal(
        'CLIENT_CERTIFICATE_REVOKED',
      );
      expect(second).to.equal('CLIENT_CERTIFICATE_REVOKED');
      // No refresh is due (the clock has not moved): only the cache could answer "accepted" here.
      expect(await outcome(v.verify(till.certificate))).to.equal('CLIENT_CERTIFICATE_REVOKED');
    });

    it('when no refresh is due, then a record is cached (a later change to the row is not read again until the next refresh)', async () => {
      const till = await issue('till-cached');
      const frozen = Date.now();
      const v = verifier({ now: () => frozen });
      expect(await outcome(v.verify(till.certificate))).to.equal('accepted');
      await db.knex('mtls_client_certificates').where({ serial: till.serial }).update({ client_name: 'renamed' });
      expect(await outcome(v.verify(till.certificate)), 'served from the cache').to.equal('accepted');
      expect(await outcome(verifier().verify(till.certificate)), 'a fresh instance').to.equal(
        'CLIENT_CERTIFICATE_UNTRUSTED',
      );
    });
  });

  describe('tokens:detokenise is never granted to a certificate', () => {
    it('when issue or register asks for tokens:detokenise, then 422 CLIENT_CERTIFICATE_SCOPE_REFUSED, audited as denied, nothing recorded', async () => {
      const before = Number((await db.knex('mtls_client_certificates').count({ n: '*' }).first())?.n);
      const issued = await outcome(
        ca.issue({ client: 'gateway', scopes: ['tokens:detokenise'], days: 30, password: 'a-long-enough-password' }),
      );
      expect(issued).to.equal('CLIENT_CERTIFICATE_SCOPE_REFUSED');
      const external = generateCa(1, 30);
      const registered = await outcome(
        ca.register({
          certificatePem: external.certificatePem,
          client: 'gateway',
          scopes: ['tokens:write', 'tokens:detokenise'],
          externalCaPems: [external.certificatePem],
        }),
      );
      expect(registered).to.equal('CLIENT_CERTIFICATE_SCOPE_REFUSED');
      expect(Number((await db.knex('mtls_client_certificates').count({ n: '*' }).first())?.n)).to.equal(before);
      const denied = (await db
        .knex('audit_events')
        .where({ action: 'mtls.certificate.registered', outcome: 'denied' })
        .orderBy('seq', 'desc')
        .first()) as { details: { code: string } | string };
      const details =
        typeof denied.details === 'string' ? (JSON.parse(denied.details) as { code: string }) : denied.details;
      expect(details.code).to.equal('CLIENT_CERTIFICATE_SCOPE_REFUSED');
    });
  });

  describe('serial numbers that read as card numbers', () => {
    it('when 5,000 serials are minted, then none reads as card data, as hex or printed with colons (about 1 random serial in 140 does)', () => {
      const carding = Array.from({ length: 5_000 }, () => randomSerialHex()).filter(
        (hex) => containsCardData(hex) || containsCardData(formatSerial(hex)),
      );
      expect(carding).to.deep.equal([]);
    });

    it('when a certificate whose serial prints as a PAN (41:11:11:11:11:11:11:11) is registered, then CLIENT_CERTIFICATE_REQUEST_INVALID without the serial, nothing recorded, the refusal audited without it', async () => {
      const external = generateCa(1, 30);
      const keyPem = createPrivateKey({ key: external.privateKeyDer, format: 'der', type: 'pkcs8' })
        .export({ format: 'pem', type: 'pkcs8' })
        .toString();
      const device = forgeClientCertificate(
        { certPem: external.certificatePem, keyPem },
        undefined,
        '4111111111111111',
      );
      const before = Number((await db.knex('mtls_client_certificates').count({ n: '*' }).first())?.n);
      const refused = await ca
        .register({
          certificatePem: device.toString(),
          client: 'kiosk-pan',
          scopes: ['tokens:write'],
          externalCaPems: [external.certificatePem],
        })
        .then(
          () => undefined,
          (error: { code?: string; detail?: string }) => error,
        );
      expect(refused?.code).to.equal('CLIENT_CERTIFICATE_REQUEST_INVALID');
      expect(refused?.detail).to.contain('serial number reads as a card number');
      expect(containsCardData(refused?.detail ?? '')).to.equal(false);
      expect(Number((await db.knex('mtls_client_certificates').count({ n: '*' }).first())?.n)).to.equal(before);
      const denied = (await db
        .knex('audit_events')
        .where({ action: 'mtls.certificate.registered', outcome: 'denied' })
        .orderBy('seq', 'desc')
        .first()) as { details: unknown };
      const details = typeof denied.details === 'string' ? denied.details : JSON.stringify(denied.details);
      expect(details).to.contain('CLIENT_CERTIFICATE_REQUEST_INVALID');
      expect(containsCardData(details)).to.equal(false);
    });
  });

  describe('keyUsage of the client certificate', () => {
    const cases: [string, Record<string, boolean> | undefined, string][] = [
      ['digitalSignature and keyEncipherment', { digitalSignature: true, keyEncipherment: true }, 'accepted'],
      ['no keyUsage extension', undefined, 'accepted'],
      ['keyEncipherment only', { keyEncipherment: true }, 'CLIENT_CERTIFICATE_UNTRUSTED'],
      ['keyCertSign only', { keyCertSign: true }, 'CLIENT_CERTIFICATE_UNTRUSTED'],
    ];
    for (const [name, keyUsage, expected] of cases) {
      it(`when a certificate of our CA with a sealed grant has ${name}, then ${expected}`, async () => {
        const certificate = forgeClientCertificate(
          {
            certPem: (await ca.trustedCaCertificates()).find((c) => c.version === 1)?.certificatePem as string,
            keyPem: await caKeyPem(1),
          },
          keyUsage,
        );
        await recordGrant(db.knex, certificate, 1);
        expect(await outcome(verifier().verify(certificate))).to.equal(expected);
      });
    }
  });
});
