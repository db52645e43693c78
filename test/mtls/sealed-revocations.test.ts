/**
 * Issue 17, acting as the insider (database write access, no master key): a revocation cannot be
 * undone, and any change to or deletion of a certificate record reaches every instance's cache within
 * the revocation interval. Two verifiers on one database stand for two instances; the database is real.
 */
import { expect } from 'chai';
import { randomBytes, X509Certificate } from 'node:crypto';
import { createClientCertificateVerifier } from '../../src/mtls/client-certificate-verifier.js';
import { ClientCertificateAuthority } from '../../src/mtls/client-certificates.js';
import { verifyRevocationList } from '../../src/mtls/revocation-list.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { keysFixture, OPERATOR, type KeysFixture } from '../keys/keys-context.js';

const INTERVAL_MS = 100;

describe('mTLS insider: sealed revocations and record changes reaching every cache', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let fx: KeysFixture;
  let ca: ClientCertificateAuthority;
  let tampered: string[];

  /** An instance: its own verifier (and caches) on the shared database. */
  const instance = (checkMs = INTERVAL_MS) =>
    createClientCertificateVerifier(db.knex, {
      masterKey: fx.masterKey,
      revocationCheckMs: checkMs,
      onTamper: (problem) => tampered.push(problem),
    });

  async function issue(client: string) {
    const issued = await ca.issue({ client, scopes: ['tokens:write'], days: 30, password: 'a-long-enough-password' });
    return { certificate: new X509Certificate(issued.certificatePem), serial: issued.record.serial };
  }

  async function outcome(promise: Promise<unknown>): Promise<string> {
    return promise.then(
      () => 'accepted',
      (error: { code?: string; message?: string }) => error.code ?? error.message ?? 'thrown',
    );
  }

  const afterInterval = () => new Promise((resolve) => setTimeout(resolve, INTERVAL_MS * 2 + 20));

  async function auditCount(action: string, outcome?: string): Promise<number> {
    const q = db.knex('audit_events').where({ action });
    if (outcome !== undefined) void q.where({ outcome });
    return Number(((await q.count({ n: '*' }).first()) as { n: string | number }).n);
  }

  before(async () => {
    db = await createTestDatabase({ migrated: true });
    fx = await keysFixture(db, { masterKeyBase64: randomBytes(32).toString('base64') });
    ca = new ClientCertificateAuthority({
      knex: db.knex,
      masterKey: fx.masterKey,
      actor: OPERATOR,
      cryptoperiodDays: 730,
    });
    await ca.initCa();
  });
  beforeEach(() => {
    tampered = [];
  });
  after(async () => db?.close());

  describe('a revocation cannot be undone', () => {
    it('when revoked_at is cleared on the record, then running and new instances still refuse it with CLIENT_CERTIFICATE_REVOKED, and keys mtls list still shows it revoked', async () => {
      const till = await issue('till-cleared');
      const running = instance();
      expect(await outcome(running.verify(till.certificate))).to.equal('accepted');
      await ca.revoke(till.serial, 'till reported stolen');
      await db
        .knex('mtls_client_certificates')
        .where({ serial: till.serial })
        .update({ revoked_at: null, revoked_by: null, revocation_reason: null });
      await afterInterval();
      expect(await outcome(running.verify(till.certificate)), 'running').to.equal('CLIENT_CERTIFICATE_REVOKED');
      expect(await outcome(instance().verify(till.certificate)), 'new').to.equal('CLIENT_CERTIFICATE_REVOKED');
      // Each use of the revoked certificate is evidence, but whoever holds it cannot flood the trail:
      // one entry per certificate and minute, across instances, however often it is presented.
      for (let i = 0; i < 20; i += 1) {
        expect(await outcome((i % 2 === 0 ? running : instance()).verify(till.certificate))).to.equal(
          'CLIENT_CERTIFICATE_REVOKED',
        );
      }
      const refusals = (await db
        .knex('audit_events')
        .where({ action: 'mtls.certificate.refused', resource: 'mtls-client:till-cleared' })
        .orderBy('seq')) as { actor: string; actor_type: string; outcome: string; details: unknown }[];
      expect(refusals.length, '22 refusals, within one minute or across one boundary').to.be.within(1, 2);
      const first = refusals[0]!;
      expect(first).to.deep.include({ actor: 'mtls:till-cleared', actor_type: 'client', outcome: 'denied' });
      const details = (typeof first.details === 'string' ? JSON.parse(first.details) : first.details) as object;
      expect(details).to.deep.include({ code: 'CLIENT_CERTIFICATE_REVOKED', serial: till.serial });
      const listed = await fx.run('mtls', 'list', '--all');
      expect(listed.stdout).to.match(new RegExp(`${till.serial}.*REVOKED`));
      expect((await fx.run('mtls', 'list')).stdout).to.not.contain(till.serial);
      expect(tampered).to.deep.equal([]);
    });

    it('when the revocation row is deleted, then a running instance still refuses it, a new instance refuses every certificate with CLIENT_CERTIFICATE_REVOCATIONS_INVALID and audits it, and revoking is refused and audited; restored, all is as before', async () => {
      const stolen = await issue('till-deleted-row');
      const bystander = await issue('till-bystander');
      const running = instance();
      await ca.revoke(stolen.serial, 'till reported stolen');
      expect(await outcome(running.verify(stolen.certificate))).to.equal('CLIENT_CERTIFICATE_REVOKED');
      const row = (await db.knex('mtls_revocations').where({ serial: stolen.serial }).first()) as Record<
        string,
        unknown
      >;
      await db.knex('mtls_revocations').where({ serial: stolen.serial }).delete();
      await db.knex('mtls_client_certificates').where({ serial: stolen.serial }).update({
        revoked_at: null,
        revoked_by: null,
        revocation_reason: null,
      });
      await afterInterval();
      expect(await outcome(running.verify(stolen.certificate)), 'running').to.equal('CLIENT_CERTIFICATE_REVOKED');
      const invalidBefore = await auditCount('mtls.revocations.invalid', 'denied');
      const fresh = instance();
      expect(await outcome(fresh.verify(stolen.certificate)), 'new').to.equal('CLIENT_CERTIFICATE_REVOCATIONS_INVALID');
      expect(await outcome(fresh.verify(bystander.certificate)), 'fail closed').to.equal(
        'CLIENT_CERTIFICATE_REVOCATIONS_INVALID',
      );
      expect(tampered).to.have.length(1);
      expect(await auditCount('mtls.revocations.invalid', 'denied')).to.equal(invalidBefore + 1);
      expect((await verifyRevocationList(db.knex, fx.masterKey)).ok).to.equal(false);
      const check = await fx.run('mtls', 'revocations', 'verify');
      expect(check.code).to.equal(1);
      expect(check.stdout).to.contain('revocation list BROKEN');

      // The key CLI will not seal a new revocation over the tampered list; the refusal is audited.
      const deniedBefore = await auditCount('mtls.certificate.revoked', 'denied');
      const refused = await fx.run('mtls', 'revoke', bystander.serial, '--reason', 'till replaced');
      expect(refused.code).to.equal(1);
      expect(refused.stderr).to.contain('CLIENT_CERTIFICATE_REVOCATIONS_INVALID');
      expect(await auditCount('mtls.certificate.revoked', 'denied')).to.equal(deniedBefore + 1);

      await db.knex('mtls_revocations').insert(row);
      expect((await fx.run('mtls', 'revocations', 'verify')).stdout).to.contain('revocation list intact');
      await afterInterval();
      expect(await outcome(fresh.verify(stolen.certificate))).to.equal('CLIENT_CERTIFICATE_REVOKED');
      expect(await outcome(fresh.verify(bystander.certificate))).to.equal('accepted');
    });

    it('when a revocation row is edited, a row is added past the head, or the head is edited, then new instances fail closed', async () => {
      const till = await issue('till-edits');
      await ca.revoke(till.serial, 'till reported stolen');
      // Only the sealed list can refuse it now.
      await db
        .knex('mtls_client_certificates')
        .where({ serial: till.serial })
        .update({ revoked_at: null, revoked_by: null, revocation_reason: null });
      const head = (await db.knex('mtls_revocation_list').where({ id: 1 }).first()) as Record<string, unknown>;
      const last = (await db.knex('mtls_revocations').where({ serial: till.serial }).first()) as Record<
        string,
        unknown
      >;
      const edits: [string, () => Promise<unknown>, () => Promise<unknown>][] = [
        [
          'serial of a revocation replaced',
          () => db.knex('mtls_revocations').where({ serial: till.serial }).update({ serial: '00:11:22' }),
          () => db.knex('mtls_revocations').where({ position: last['position'] }).update({ serial: till.serial }),
        ],
        [
          'head length lowered',
          () =>
            db
              .knex('mtls_revocation_list')
              .where({ id: 1 })
              .update({ length: Number(head['length']) - 1 }),
          () => db.knex('mtls_revocation_list').where({ id: 1 }).update(head),
        ],
        [
          'a revocation inserted past the head',
          () =>
            db.knex('mtls_revocations').insert({
              ...last,
              position: Number(head['length']) + 1,
              serial: 'AA:BB:CC',
            }),
          () => db.knex('mtls_revocations').where({ serial: 'AA:BB:CC' }).delete(),
        ],
        [
          'head reset to the empty list',
          () =>
            db
              .knex('mtls_revocation_list')
              .where({ id: 1 })
              .update({ length: 0, chain: Buffer.alloc(32), seal: null }),
          () => db.knex('mtls_revocation_list').where({ id: 1 }).update(head),
        ],
      ];
      for (const [name, tamper, restore] of edits) {
        await tamper();
        try {
          expect(await outcome(instance().verify(till.certificate)), name).to.equal(
            'CLIENT_CERTIFICATE_REVOCATIONS_INVALID',
          );
        } finally {
          await restore();
        }
      }
      expect(await outcome(instance().verify(till.certificate))).to.equal('CLIENT_CERTIFICATE_REVOKED');
    });

    it('when the head and rows are put back as they were before a revocation (a rollback), then a running instance that saw the revocation fails closed', async () => {
      const running = instance();
      const before = await issue('till-before-rollback');
      expect(await outcome(running.verify(before.certificate))).to.equal('accepted');
      const savedHead = (await db.knex('mtls_revocation_list').where({ id: 1 }).first()) as Record<string, unknown>;
      const till = await issue('till-rollback');
      await ca.revoke(till.serial, 'till reported stolen');
      await afterInterval();
      expect(await outcome(running.verify(till.certificate))).to.equal('CLIENT_CERTIFICATE_REVOKED');
      await db.knex('mtls_revocations').where({ serial: till.serial }).delete();
      await db.knex('mtls_revocation_list').where({ id: 1 }).update(savedHead);
      await afterInterval();
      expect(await outcome(running.verify(till.certificate))).to.equal('CLIENT_CERTIFICATE_REVOCATIONS_INVALID');
      expect(tampered[0]).to.contain('shorter');
      // A new instance has seen nothing, but the keyed audit trail names the revocation.
      expect(await outcome(instance().verify(till.certificate))).to.equal('CLIENT_CERTIFICATE_REVOCATIONS_INVALID');
      expect(tampered[1]).to.contain(`certificate ${till.serial} was revoked`);
    });

    it('when the list is reset to the empty unsealed state a migration leaves (no saved state) and revoked_at cleared, then a new instance fails closed, onTamper is told, mtls revocations verify exits 1, and revoking is refused', async () => {
      // The previous test's rollback is still in place: seal it back the way a service start does.
      const system = new ClientCertificateAuthority({
        knex: db.knex,
        masterKey: fx.masterKey,
        actor: { actor: 'system', actorType: 'system', origin: 'service:test' },
        cryptoperiodDays: 730,
      });
      await system.sealPendingRevocations();
      expect((await fx.run('mtls', 'revocations', 'verify')).code).to.equal(0);
      const stolen = await issue('till-reset');
      await ca.revoke(stolen.serial, 'stolen');
      expect(await outcome(instance().verify(stolen.certificate))).to.equal('CLIENT_CERTIFICATE_REVOKED');
      const savedRows = (await db.knex('mtls_revocations').orderBy('position')) as Record<string, unknown>[];
      const savedHead = (await db.knex('mtls_revocation_list').where({ id: 1 }).first()) as Record<string, unknown>;
      // ---- the insider, SQL only
      await db.knex('mtls_revocations').delete();
      await db
        .knex('mtls_revocation_list')
        .where({ id: 1 })
        .update({ length: 0, chain: Buffer.alloc(32), seal: null });
      await db
        .knex('mtls_client_certificates')
        .where({ serial: stolen.serial })
        .update({ revoked_at: null, revoked_by: null, revocation_reason: null });
      try {
        expect(await outcome(instance().verify(stolen.certificate))).to.equal('CLIENT_CERTIFICATE_REVOCATIONS_INVALID');
        expect(tampered[0]).to.match(/unsealed, but audit entry \d+ \(mtls\./);
        const verify = await fx.run('mtls', 'revocations', 'verify');
        expect(verify.code).to.equal(1);
        expect(verify.stdout).to.contain('revocation list BROKEN');
        const other = await issue('till-after-reset');
        expect(await outcome(ca.revoke(other.serial, 'lost'))).to.equal('CLIENT_CERTIFICATE_REVOCATIONS_INVALID');
        // The service start does not seal over the reset either.
        await system.sealPendingRevocations();
        expect((await db.knex('mtls_revocation_list').where({ id: 1 }).first('seal')).seal).to.equal(null);
      } finally {
        await db.knex('mtls_revocations').insert(savedRows);
        await db.knex('mtls_revocation_list').where({ id: 1 }).update(savedHead);
      }
      expect(await outcome(instance().verify(stolen.certificate))).to.equal('CLIENT_CERTIFICATE_REVOKED');
    });

    it('when the CA is initialised, then the empty revocation list head is sealed and that is audited', async () => {
      expect(await auditCount('mtls.revocations.sealed', 'success')).to.equal(1);
    });

    it('when a certificate revoked before sealed revocations has only revoked_at, then the service start seals it (audited) and clearing revoked_at no longer helps', async () => {
      // Every earlier test restored what it tampered with.
      expect((await verifyRevocationList(db.knex, fx.masterKey)).ok).to.equal(true);
      const till = await issue('till-legacy');
      await db
        .knex('mtls_client_certificates')
        .where({ serial: till.serial })
        .update({ revoked_at: new Date(), revoked_by: 'earlier-operator', revocation_reason: 'till lost' });
      expect(await outcome(instance().verify(till.certificate))).to.equal('CLIENT_CERTIFICATE_REVOKED');
      const system = new ClientCertificateAuthority({
        knex: db.knex,
        masterKey: fx.masterKey,
        actor: { actor: 'system', actorType: 'system', origin: 'service:test' },
        cryptoperiodDays: 730,
      });
      expect(await system.sealPendingRevocations()).to.equal(1);
      expect(await system.sealPendingRevocations()).to.equal(0);
      const sealedAudit = await db
        .knex('audit_events')
        .where({ action: 'mtls.certificate.revocation-sealed', outcome: 'success' })
        .pluck('details');
      expect(
        sealedAudit.map((d: { serial: string } | string) => (typeof d === 'string' ? JSON.parse(d) : d).serial),
      ).to.include(till.serial);
      await db
        .knex('mtls_client_certificates')
        .where({ serial: till.serial })
        .update({ revoked_at: null, revoked_by: null, revocation_reason: null });
      expect(await outcome(instance().verify(till.certificate))).to.equal('CLIENT_CERTIFICATE_REVOKED');
    });
  });

  describe('record changes reach every instance within the interval', () => {
    it('when a cached certificate record is deleted, then both instances refuse it within the interval, with no revocation', async () => {
      const till = await issue('till-record-deleted');
      const [a, b] = [instance(), instance()];
      expect(await outcome(a.verify(till.certificate))).to.equal('accepted');
      expect(await outcome(b.verify(till.certificate))).to.equal('accepted');
      const headBefore = await db.knex('mtls_revocation_list').where({ id: 1 }).first();
      await db.knex('mtls_client_certificates').where({ serial: till.serial }).delete();
      await afterInterval();
      expect(await outcome(a.verify(till.certificate)), 'a').to.equal('CLIENT_CERTIFICATE_UNTRUSTED');
      expect(await outcome(b.verify(till.certificate)), 'b').to.equal('CLIENT_CERTIFICATE_UNTRUSTED');
      expect(await db.knex('mtls_revocation_list').where({ id: 1 }).first()).to.deep.equal(headBefore);
    });

    it('when a cached record is edited (client, scopes, seal) or marked revoked in the database, then both instances stop accepting it within the interval', async () => {
      const changes: [string, Record<string, unknown>, string][] = [
        ['client renamed', { client_name: 'platform-gateway' }, 'CLIENT_CERTIFICATE_UNTRUSTED'],
        [
          'scopes widened',
          { scopes: JSON.stringify(['tokens:write', 'webhooks:platform']) },
          'CLIENT_CERTIFICATE_UNTRUSTED',
        ],
        ['seal removed', { seal: null }, 'CLIENT_CERTIFICATE_UNTRUSTED'],
        [
          'revoked_at set by hand',
          { revoked_at: new Date(), revoked_by: 'dba', revocation_reason: 'by hand' },
          'CLIENT_CERTIFICATE_REVOKED',
        ],
      ];
      for (const [name, change, code] of changes) {
        const till = await issue(`till-${randomBytes(3).toString('hex')}`);
        const [a, b] = [instance(), instance()];
        expect(await outcome(a.verify(till.certificate)), name).to.equal('accepted');
        expect(await outcome(b.verify(till.certificate)), name).to.equal('accepted');
        await db.knex('mtls_client_certificates').where({ serial: till.serial }).update(change);
        await afterInterval();
        expect(await outcome(a.verify(till.certificate)), `${name}: a`).to.equal(code);
        expect(await outcome(b.verify(till.certificate)), `${name}: b`).to.equal(code);
      }
    });
  });
});
