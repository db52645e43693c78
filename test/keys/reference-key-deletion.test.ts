/**
 * Issue 16, third review: an insider deletes (or replaces) the reference-digest key. Before, the next
 * use silently created a new key and a redelivery of a card-shaped UUID webhook-id got a new digest:
 * a second event, applied twice. Now the key's creation is in the keyed audit trail; a process that
 * finds it gone refuses (503 REFERENCE_KEY_MISSING, logged), and `keys audit verify` and `keys status`
 * name it (src/keys/reference-digests.ts, key-state-reconciliation.ts).
 */
import { expect } from 'chai';
import { forgetReferenceKey } from '../../src/keys/reference-digests.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { paymentId, platformEvent, postPlatform } from '../support/webhooks.js';
import { keysFixture, type KeysFixture } from './keys-context.js';

const CRAFTED = '41111111-1111-1111-abcd-ef0123456789'; // first groups: 4111111111111111
const CRAFTED_OTHER = '55555555-5555-4444-abcd-ef0123456789';

describe('reference-digest key deleted by an insider (issue 16, third review)', function () {
  this.timeout(180_000);
  let db: TestDatabase;
  let svc: TestService;
  let fx: KeysFixture;

  before(async () => {
    db = await createTestDatabase({ migrated: true });
    const env = await testEnv();
    svc = await startTestService({ env, db });
    fx = await keysFixture(db, { masterKeyBase64: env['MASTER_KEY'] as string });
  });
  after(async () => {
    await svc.close();
    await db.close();
  });

  it('when the row is deleted, then the next delivery needing a digest is refused 503 REFERENCE_KEY_MISSING and logged, no key is made, verify and status name it; restored, the redelivery is a duplicate', async () => {
    const event = platformEvent({ paymentId: paymentId('refkey'), type: 'payment.authorisation_failed' });
    const first = await postPlatform(svc, event, { id: CRAFTED });
    expect(first.status, first.text).to.equal(200);
    expect((await fx.run('audit', 'verify')).code).to.equal(0);
    const saved = await db.knex('reference_digest_keys').first();

    // The insider's delete; then a process without the key in memory (a restart, or after a seal).
    await db.knex('reference_digest_keys').delete();
    forgetReferenceKey(db.knex);
    const counts = async () =>
      Promise.all(
        ['webhook_inbox', 'payment_facts'].map(async (t) => Number((await db.knex(t).count({ n: '*' }).first())?.n)),
      );
    const before = await counts();
    for (const id of [CRAFTED, CRAFTED_OTHER]) {
      const res = await postPlatform(svc, event, { id });
      expect(res.status, res.text).to.equal(503);
      expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
      expect(res.body.code).to.equal('REFERENCE_KEY_MISSING');
    }
    // An id the detector does not flag needs no digest: unaffected.
    expect((await postPlatform(svc, platformEvent({ paymentId: paymentId('refkey-plain') }))).status).to.equal(200);
    expect(await db.knex('reference_digest_keys')).to.have.length(0);
    const after = await counts();
    expect(after.map((n, i) => n - (before[i] as number))).to.deep.equal([1, 1]);
    expect(svc.logs()).to.contain('REFERENCE_KEY_MISSING');

    const verify = await fx.run('audit', 'verify');
    expect(verify.code, verify.stdout).to.equal(1);
    expect(verify.stdout).to.match(
      /KEY STATE TAMPERED reference-digest v1: the audit trail recorded it \(entry \d+\) but its row is gone/,
    );
    const status = await fx.run('status');
    expect(status.code, status.stdout).to.equal(1);
    expect(status.stdout).to.contain('PROBLEM key-state-tampered: reference-digest v1');

    // Restored from a backup: the redelivery is the duplicate it always was.
    await db.knex('reference_digest_keys').insert(saved);
    forgetReferenceKey(db.knex);
    const again = await postPlatform(svc, event, { id: CRAFTED });
    expect(again.status, again.text).to.equal(200);
    expect(again.body).to.include({ duplicate: true, eventId: first.body.eventId });
    expect((await fx.run('status')).stdout).to.not.contain('reference-digest');
  });
});
