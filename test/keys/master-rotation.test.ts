import { expect } from 'chai';
import { randomBytes, X509Certificate } from 'node:crypto';
import { chainKeyAad } from '../../src/audit/audit-chain-keys.js';
import { verifyAuditChain } from '../../src/audit/audit-log.js';
import { VaultService } from '../../src/cards/vault-service.js';
import { KeyRing } from '../../src/keys/key-ring.js';
import { forgetReferenceKey, referenceKeyAad, storedReference } from '../../src/keys/reference-digests.js';
import { createHmac } from 'node:crypto';
import { LocalMasterKey, MasterKeySet } from '../../src/keys/master-key-source.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { generatePans } from '../support/pans.js';
import { ClientCertificateAuthority } from '../../src/mtls/client-certificates.js';
import { createClientCertificateVerifier } from '../../src/mtls/client-certificate-verifier.js';
import { keysFixture, OPERATOR, type KeysFixture } from './keys-context.js';

const vaultOptions = { detokenise: { enabled: true, perMinute: 100 } };
const caller = { subject: 'qsa-test', shopperRef: undefined, origin: 'test' };

describe('master-key rotation (keys rotate --purpose master)', function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let before: KeysFixture;
  let oldKek: LocalMasterKey;
  let newKek: LocalMasterKey;
  let cards: { pan: string; token: string }[];

  beforeEach(async () => {
    db = await createTestDatabase({ migrated: true });
    before = await keysFixture(db);
    oldKek = before.masterKey;
    newKek = new LocalMasterKey(randomBytes(32), 'new test master key');
    const vault = new VaultService(db.knex, before.ring, vaultOptions);
    cards = [];
    for (const pan of generatePans(5))
      cards.push({ pan, token: (await vault.tokenise({ kind: 'pan', pan })).card.token });
  });
  afterEach(async () => db.close());

  const during = (singleOperator: boolean) =>
    keysFixture(db, { source: new MasterKeySet(newKek, [oldKek]), policy: { singleOperator } });

  it('when an insider sets kek_id of the data keys still under the old master key to the new one, then the rotation still rewraps them (the column is not trusted), says so, and the new key alone opens every key', async () => {
    const fx = await during(true);
    await db.knex('data_keys').update({ kek_id: newKek.keyId });
    const plan = await fx.run('rotate', '--purpose', 'master');
    expect(plan.stdout).to.contain('kek_id names the current master key but it does not open them');
    const res = await fx.run('rotate', '--purpose', 'master', '--apply');
    expect(res.code, res.stderr).to.equal(0);
    expect(res.stdout).to.contain(`4 data key(s) rewrapped by master key ${newKek.keyId}`);
    await new KeyRing(db.knex, newKek, 50).reload(); // MASTER_KEY_PREVIOUS can go: nothing is stranded
    const entry = await db.knex('audit_events').where({ action: 'master-key.rotated' }).first();
    expect(JSON.stringify(entry.details)).to.contain('mislabelled');
  });

  it('when an insider sets kek_id of the audit-chain keys to the new master key, then the rotation still rewraps them and the new key alone opens every one', async () => {
    const fx = await during(true);
    expect(await db.knex('audit_chain_keys').where({ kek_id: oldKek.keyId })).to.have.length.greaterThan(0);
    await db.knex('audit_chain_keys').update({ kek_id: newKek.keyId });
    const res = await fx.run('rotate', '--purpose', 'master', '--apply');
    expect(res.code, res.stderr).to.equal(0);
    // Once MASTER_KEY_PREVIOUS is removed, the new key alone must open every audit-chain key.
    const rows = (await db.knex('audit_chain_keys').select('version', 'wrapped_key')) as {
      version: number;
      wrapped_key: Buffer;
    }[];
    for (const row of rows) await newKek.unwrap(Buffer.from(row.wrapped_key), chainKeyAad(row.version));
  });

  it('when the master key is rotated, then every data key is rewrapped by the new one, the data is untouched, and the old key no longer opens anything', async () => {
    const fx = await during(true);
    const plan = await fx.run('rotate', '--purpose', 'master');
    expect(plan.code).to.equal(0);
    expect(plan.stdout).to.contain(`unwrap 4 data key(s) wrapped by ${oldKek.keyId}`);
    const ciphertexts = await db.knex('cards').orderBy('token').select('token', 'pan_ciphertext', 'pan_key_version');

    const res = await fx.run('rotate', '--purpose', 'master', '--apply');
    expect(res.code, res.stderr).to.equal(0);
    expect(res.stdout).to.contain(`4 data key(s) rewrapped by master key ${newKek.keyId}`);
    expect(new Set((await db.knex('data_keys').select('kek_id')).map((r) => r.kek_id))).to.deep.equal(
      new Set([newKek.keyId]),
    );
    expect(await db.knex('cards').orderBy('token').select('token', 'pan_ciphertext', 'pan_key_version')).to.deep.equal(
      ciphertexts,
    );
    const masters = await db.knex('master_keys').orderBy('state');
    expect(masters.map((m) => [m.kek_id, m.state])).to.deep.equal([
      [newKek.keyId, 'active'],
      [oldKek.keyId, 'retired'],
    ]);

    // With only the new master key (MASTER_KEY_PREVIOUS removed) every card still reads.
    const after = new VaultService(db.knex, new KeyRing(db.knex, newKek, 50), vaultOptions);
    for (const card of cards) {
      expect((await after.tokenise({ kind: 'pan', pan: card.pan })).card.token).to.equal(card.token);
      expect(await after.detokenise(card.token, 'master rotation check', caller)).to.deep.equal({ pan: card.pan });
    }
    let failure: unknown;
    try {
      await new KeyRing(db.knex, oldKek, 50).reload();
    } catch (error) {
      failure = error;
    }
    expect(String(failure)).to.contain('cannot unwrap data key');
    const entry = await db.knex('audit_events').where({ action: 'master-key.rotated' }).first();
    expect(JSON.stringify(entry.details)).to.contain(oldKek.keyId);
    expect((await verifyAuditChain(db.knex)).ok).to.equal(true);

    const again = await fx.run('rotate', '--purpose', 'master', '--apply');
    expect(again.code).to.equal(1);
    expect(again.stderr).to.contain('KEY_OPERATION_INVALID');
  });

  it('when the master key is rotated, then the reference-digest key is rewrapped, not changed: a card-shaped UUID id keeps its digest (a redelivery still de-duplicates) and the new master key alone opens the key', async () => {
    // Created at start-up (KeyRing.ensureInitialKeys) under the old master key.
    const [created] = await db.knex('reference_digest_keys').select('version', 'kek_id');
    expect(created).to.deep.equal({ version: 1, kek_id: oldKek.keyId });
    const id = '41111111-1111-1111-abcd-ef0123456789'; // a UUID whose first groups are a test PAN
    const digest = await storedReference(db.knex, id);
    expect(digest).to.match(/^~[A-Za-z0-9_-]{43}$/);
    expect(await storedReference(db.knex, 'msg_2KWPBgLlAfxdpx2AI54pPJ85f4W')).to.equal(
      'msg_2KWPBgLlAfxdpx2AI54pPJ85f4W',
    );

    const fx = await during(true);
    await db.knex('reference_digest_keys').update({ kek_id: newKek.keyId }); // kek_id is not trusted
    const res = await fx.run('rotate', '--purpose', 'master', '--apply');
    expect(res.code, res.stderr).to.equal(0);
    const entry = await db.knex('audit_events').where({ action: 'master-key.rotated' }).first();
    expect(JSON.stringify(entry.details)).to.contain('"referenceKeys":[1]');

    // The new master key alone opens the rewrapped key, and its digest of the id is the one stored.
    const row = await db.knex('reference_digest_keys').where({ version: 1 }).first();
    expect(row.kek_id).to.equal(newKek.keyId);
    const material = await newKek.unwrap(Buffer.from(row.wrapped_key), referenceKeyAad(1));
    expect('~' + createHmac('sha256', material).update(id).digest('base64url')).to.equal(digest);
    let oldOpens = true;
    try {
      await oldKek.unwrap(Buffer.from(row.wrapped_key), referenceKeyAad(1));
    } catch {
      oldOpens = false;
    }
    expect(oldOpens).to.equal(false);
    // A process started after the rotation (nothing cached, the new master key first) computes the same digest.
    forgetReferenceKey(db.knex);
    new KeyRing(db.knex, newKek, 50);
    expect(await storedReference(db.knex, id)).to.equal(digest);
  });

  it('when the master key is rotated, then the mTLS seals are rewrapped too and a client certificate still verifies under the new master key alone', async () => {
    const ca = new ClientCertificateAuthority({
      knex: db.knex,
      masterKey: oldKek,
      actor: OPERATOR,
      cryptoperiodDays: 730,
    });
    await ca.initCa();
    const issued = await ca.issue({
      client: 'till-1',
      scopes: ['tokens:write'],
      days: 30,
      password: 'a-long-enough-password',
    });
    const certificate = new X509Certificate(issued.certificatePem);
    const fx = await during(true);
    const res = await fx.run('rotate', '--purpose', 'master', '--apply');
    expect(res.code, res.stderr).to.equal(0);
    const verifier = createClientCertificateVerifier(db.knex, { masterKey: newKek, revocationCheckMs: 0 });
    expect((await verifier.verify(certificate)).subject).to.equal('mtls:till-1');
  });

  it('when the master key rotation has no approved request, then it is refused and nothing is rewrapped', async () => {
    const fx = await during(false);
    const res = await fx.run('rotate', '--purpose', 'master', '--apply');
    expect(res.code).to.equal(1);
    expect(res.stderr).to.contain('DUAL_CONTROL_REQUIRED');
    expect(new Set((await db.knex('data_keys').select('kek_id')).map((r) => r.kek_id))).to.deep.equal(
      new Set([oldKek.keyId]),
    );
  });
});
