/**
 * The reference-digest key (src/keys/reference-digests.ts): a UUID id that reads as a card number is
 * stored as `~` + base64url(HMAC-SHA256(key, id)); the key is one per database, wrapped by the master
 * key; without it the caller fails closed (503 codes), never gets the raw id back.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { AppError } from '../../src/errors/app-error.js';
import { KeyRing } from '../../src/keys/key-ring.js';
import { LocalMasterKey } from '../../src/keys/master-key-source.js';
import { registerAuditChainKeys } from '../../src/audit/audit-chain-keys.js';
import {
  forgetReferenceKey,
  reconcileReferenceKey,
  referenceKeyAad,
  referenceKeyCheckValue,
  registerReferenceKey,
  storedReference,
} from '../../src/keys/reference-digests.js';
import { problemStatus } from '../../src/http/problem-statuses.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

const CRAFTED = '41111111-1111-1111-abcd-ef0123456789'; // first groups: a scheme test PAN
const OTHER = '55555555-5555-4444-abcd-ef0123456789';
const DIGEST = /^~[A-Za-z0-9_-]{43}$/;

async function failure(promise: Promise<unknown>): Promise<AppError> {
  try {
    await promise;
  } catch (error) {
    return error as AppError;
  }
  throw new Error('expected a failure');
}

describe('reference digests (issue 16): UUID ids holding a card number are stored as a keyed digest', function () {
  this.timeout(60_000);
  let db: TestDatabase;

  beforeEach(async () => {
    db = await createTestDatabase({ migrated: true });
  });
  afterEach(async () => db.close());

  it('when no master key is registered for the database, then a flagged id fails closed with 503 MASTER_KEY_UNAVAILABLE and an unflagged id is returned as sent', async () => {
    expect(await storedReference(db.knex, 'msg_2KWPBgLlAfxdpx2AI54pPJ85f4W')).to.equal(
      'msg_2KWPBgLlAfxdpx2AI54pPJ85f4W',
    );
    const error = await failure(storedReference(db.knex, CRAFTED));
    expect(error).to.be.instanceOf(AppError);
    expect(error.code).to.equal('MASTER_KEY_UNAVAILABLE');
    expect(problemStatus(error)).to.equal(503);
    expect(await db.knex('reference_digest_keys')).to.have.length(0);
  });

  it('when the key is created on first need, then digests are deterministic, distinct per id, and the same for another process of the same database', async () => {
    const master = new LocalMasterKey(randomBytes(32), 'test master key');
    new KeyRing(db.knex, master, 50);
    const digest = await storedReference(db.knex, CRAFTED);
    expect(digest).to.match(DIGEST);
    expect(digest).to.not.contain('4111');
    expect(await storedReference(db.knex, CRAFTED)).to.equal(digest);
    expect(await storedReference(db.knex, OTHER))
      .to.match(DIGEST)
      .and.not.equal(digest);
    const rows = await db.knex('reference_digest_keys').select('version', 'kek_id');
    expect(rows).to.deep.equal([{ version: 1, kek_id: master.keyId }]);
    forgetReferenceKey(db.knex); // another process: nothing cached, the row unwrapped again
    expect(await storedReference(db.knex, CRAFTED)).to.equal(digest);
  });

  it('when the key is created in a transaction that rolls back, then it is not kept: the next caller creates one that is stored, and digests agree from then on', async () => {
    const master = new LocalMasterKey(randomBytes(32), 'test master key');
    new KeyRing(db.knex, master, 50);
    let inRolledBack = '';
    await db.knex
      .transaction(async (trx) => {
        inRolledBack = await storedReference(trx, CRAFTED);
        throw new Error('roll back');
      })
      .catch(() => undefined);
    expect(inRolledBack).to.match(DIGEST);
    expect(await db.knex('reference_digest_keys')).to.have.length(0);
    const committed = await db.knex.transaction((trx) => storedReference(trx, CRAFTED));
    expect(await db.knex('reference_digest_keys')).to.have.length(1);
    expect(await storedReference(db.knex, CRAFTED)).to.equal(committed);
  });

  it('when the master key source is sealed, then a flagged id fails closed with its 503 code (never the raw id); unflagged ids are unaffected', async () => {
    const master = new LocalMasterKey(randomBytes(32), 'test master key');
    // A source that seals like the shares source: it answers VAULT_SEALED until unsealed.
    let open = true;
    const gate = {
      keyId: master.keyId,
      wrap: (key: Buffer, aad: string) => (open ? master.wrap(key, aad) : Promise.reject(new AppError('VAULT_SEALED'))),
      unwrap: (key: Buffer, aad: string) =>
        open ? master.unwrap(key, aad) : Promise.reject(new AppError('VAULT_SEALED')),
    };
    registerReferenceKey(db.knex, gate);
    // The key's creation is audited (issue 16, third review): the trail's key opens under the same source.
    registerAuditChainKeys(db.knex, gate);
    const digest = await storedReference(db.knex, CRAFTED);
    open = false;
    forgetReferenceKey(db.knex); // what keys-feature does when the vault seals
    const error = await failure(storedReference(db.knex, CRAFTED));
    expect(error.code).to.equal('VAULT_SEALED');
    expect(problemStatus(error)).to.equal(503);
    expect(await storedReference(db.knex, 'idem-key-letters')).to.equal('idem-key-letters');
    open = true;
    expect(await storedReference(db.knex, CRAFTED)).to.equal(digest);
  });

  describe('deleted or replaced (issue 16, third review): the creation is audited and re-creation refused', () => {
    let master: LocalMasterKey;
    beforeEach(() => {
      master = new LocalMasterKey(randomBytes(32), 'test master key');
      new KeyRing(db.knex, master, 50);
    });
    const entries = () =>
      db.knex('audit_events').whereIn('action', ['reference-key.created', 'reference-key.recorded']).orderBy('seq');
    const detailsOf = (row: { details: unknown }) =>
      (typeof row.details === 'string' ? JSON.parse(row.details) : row.details) as Record<string, unknown>;

    it('when the key is created, then a reference-key.created entry in the same transaction names its master key and check value, and nothing secret', async () => {
      await storedReference(db.knex, CRAFTED);
      const [entry, ...more] = await entries();
      expect(more).to.deep.equal([]);
      expect(entry.action).to.equal('reference-key.created');
      expect(entry.resource).to.equal('reference-key:v1');
      const details = detailsOf(entry);
      const row = await db.knex('reference_digest_keys').first();
      const key = await master.unwrap(row.wrapped_key, referenceKeyAad(1));
      expect(details).to.deep.equal({
        version: 1,
        algorithm: 'HMAC-SHA256',
        strengthBits: 256,
        kekId: master.keyId,
        checkValue: referenceKeyCheckValue(key),
      });
      const text = JSON.stringify(entry);
      for (const secret of [
        key.toString('base64'),
        key.toString('hex'),
        Buffer.from(row.wrapped_key).toString('base64'),
      ])
        expect(text).to.not.contain(secret);
      expect(await reconcileReferenceKey(db.knex, master)).to.deep.equal([]);
    });

    it('when an insider deletes the row, then the next process refuses with 503 REFERENCE_KEY_MISSING (no new key) and the reconciliation names it', async () => {
      const digest = await storedReference(db.knex, CRAFTED);
      const saved = await db.knex('reference_digest_keys').first();
      await db.knex('reference_digest_keys').delete();
      forgetReferenceKey(db.knex); // another process (or this one after a seal): nothing cached
      const error = await failure(storedReference(db.knex, CRAFTED));
      expect(error.code).to.equal('REFERENCE_KEY_MISSING');
      expect(problemStatus(error)).to.equal(503);
      expect(await db.knex('reference_digest_keys')).to.have.length(0);
      const findings = await reconcileReferenceKey(db.knex, master);
      expect(findings.map((f) => f.problem).join()).to.match(/recorded it \(entry \d+\) but its row is gone/);
      // Restored from a backup: the same key, the same digests.
      await db.knex('reference_digest_keys').insert(saved);
      expect(await storedReference(db.knex, CRAFTED)).to.equal(digest);
      expect(await reconcileReferenceKey(db.knex, master)).to.deep.equal([]);
    });

    it('when an insider replaces the wrapped key (validly wrapped, or garbage), then it is refused and detected', async () => {
      const digest = await storedReference(db.knex, CRAFTED);
      const saved = await db.knex('reference_digest_keys').first();
      await db
        .knex('reference_digest_keys')
        .update({ wrapped_key: await master.wrap(randomBytes(32), referenceKeyAad(1)) });
      forgetReferenceKey(db.knex);
      expect((await failure(storedReference(db.knex, CRAFTED))).code).to.equal('REFERENCE_KEY_MISSING');
      expect((await reconcileReferenceKey(db.knex, master)).map((f) => f.problem).join()).to.match(/replaced/);

      await db.knex('reference_digest_keys').update({ wrapped_key: randomBytes(60) });
      forgetReferenceKey(db.knex);
      expect((await failure(storedReference(db.knex, CRAFTED))).code).to.equal('MASTER_KEY_UNAVAILABLE');
      expect((await reconcileReferenceKey(db.knex, master)).map((f) => f.problem).join()).to.match(/does not unwrap/);

      await db.knex('reference_digest_keys').update({ wrapped_key: saved.wrapped_key });
      forgetReferenceKey(db.knex);
      expect(await storedReference(db.knex, CRAFTED)).to.equal(digest);
    });

    it('when an earlier release created the key without an entry, then the first process to unwrap it records it, and its deletion is refused from then on', async () => {
      await db.knex('reference_digest_keys').insert({
        version: 1,
        wrapped_key: await master.wrap(randomBytes(32), referenceKeyAad(1)),
        kek_id: master.keyId,
        created_at: new Date(),
      });
      expect((await reconcileReferenceKey(db.knex, master)).map((f) => f.problem).join()).to.match(
        /no intact reference-key entry/,
      );
      await storedReference(db.knex, CRAFTED);
      expect((await entries()).map((e) => e.action)).to.deep.equal(['reference-key.recorded']);
      expect(await reconcileReferenceKey(db.knex, master)).to.deep.equal([]);
      await db.knex('reference_digest_keys').delete();
      forgetReferenceKey(db.knex);
      expect((await failure(storedReference(db.knex, CRAFTED))).code).to.equal('REFERENCE_KEY_MISSING');
    });
  });
});
