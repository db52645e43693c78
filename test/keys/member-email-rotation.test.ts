/**
 * Member e-mail addresses are sealed under the pan-encryption key like PANs: a rotation must move
 * them too, and a version may not be retired while one still depends on it.
 */
import { expect } from 'chai';
import { VaultService } from '../../src/cards/vault-service.js';
import { decryptValue, emailAad } from '../../src/crypto/field-crypto.js';
import { MemberService } from '../../src/loyalty/member-service.js';
import { PaymentService } from '../../src/payments/payment-service.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { generatePans } from '../support/pans.js';
import { keysFixture, type KeysFixture } from './keys-context.js';

describe('key rotation: member e-mail addresses', function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let fx: KeysFixture;

  before(async () => {
    db = await createTestDatabase({ migrated: true });
    fx = await keysFixture(db, { policy: { singleOperator: true, propagationMs: 300 } });
  });
  after(async () => db.close());

  it('when pan-encryption is rotated, then e-mails move to the new version, retire waits for them, and each still decrypts', async () => {
    const vault = new VaultService(db.knex, fx.ring, { detokenise: { enabled: false, perMinute: 1 } });
    const payments = new PaymentService(db.knex, vault, { autoCaptureChannels: [] });
    const members = new MemberService({ knex: db.knex, keyRing: fx.ring, vault, payments });
    const enrolled: { shopperRef: string; email: string }[] = [];
    for (const [i, pan] of generatePans(5, '477777').entries()) {
      const { card } = await vault.tokenise({ kind: 'pan', pan });
      const email = `member${i}@example.com`;
      await members.enrol(card.shopperReference, { email }, { subject: 'test', origin: 'test' });
      enrolled.push({ shopperRef: card.shopperReference, email });
    }

    const listed = JSON.parse((await fx.run('list', '--json')).stdout) as { purpose: string; rows: object }[];
    expect(listed.find((k) => k.purpose === 'pan-encryption')?.rows).to.deep.include({ 'loyalty_accounts.email': 5 });

    const rotated = await fx.run('rotate', '--purpose', 'pan-encryption', '--apply');
    expect(rotated.code, rotated.stderr).to.equal(0);
    // Cards and e-mails still under v1: retiring it is refused.
    const early = await fx.run('retire', '--purpose', 'pan-encryption', '--version', '1', '--apply');
    expect(early.code).to.equal(1);

    const backfill = await fx.run('reencrypt', '--purpose', 'pan-encryption');
    expect(backfill.code, backfill.stdout + backfill.stderr).to.equal(0);
    const versions = await db.knex('loyalty_accounts').whereNotNull('email_key_version').pluck('email_key_version');
    expect(versions).to.deep.equal([2, 2, 2, 2, 2]);
    expect((await fx.run('retire', '--purpose', 'pan-encryption', '--version', '1', '--apply')).code).to.equal(0);

    await fx.ring.reload();
    const key = await fx.ring.version('pan-encryption', 2);
    for (const { shopperRef, email } of enrolled) {
      const row = await db.knex('loyalty_accounts').where({ shopper_ref: shopperRef }).first();
      expect(decryptValue(key.key, emailAad(shopperRef, 2), row.email_ciphertext)).to.equal(email);
    }
  });
});
