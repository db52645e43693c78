/**
 * Subscription signing secrets are sealed under the pan-encryption key like PANs: a rotation must
 * move them too, retirement must wait for them, and deliveries must still be signed with the same
 * secrets afterwards.
 */
import { expect } from 'chai';
import { Webhook } from 'standardwebhooks';
import { migrateToLatest } from '../../src/db/migrations.js';
import { signedHeaders } from '../../src/events/signing.js';
import { SubscriptionService } from '../../src/events/subscription-service.js';
import { liveSecrets } from '../../src/events/subscription-secrets.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { keysFixture, type KeysFixture } from './keys-context.js';

describe('key rotation: subscription signing secrets', function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let fx: KeysFixture;

  before(async () => {
    db = await createTestDatabase();
    await migrateToLatest(db.knex);
    fx = await keysFixture(db, { policy: { singleOperator: true, propagationMs: 300 } });
  });
  after(async () => db.close());

  it('when pan-encryption is rotated, then subscription secrets move to the new version, retire waits for them, and they still sign', async () => {
    const subscriptions = new SubscriptionService({
      knex: db.knex,
      keyRing: fx.ring,
      targets: {
        resolver: () => Promise.resolve([{ address: '151.101.1.69', family: 4 }]),
        allowHttp: false,
        allowPrivate: false,
      },
    });
    const actor = { subject: 'test', origin: 'test' };
    const made: { id: string; secrets: string[] }[] = [];
    for (let i = 0; i < 3; i++) {
      const { subscription, secret } = await subscriptions.create(
        { url: `https://crm${i}.example.com/hook`, eventTypes: ['points.available'] },
        actor,
      );
      made.push({ id: subscription.id, secrets: [secret] });
    }
    // One in a rotation's overlap: two live secrets.
    const rotated = await subscriptions.rotateSecret(made[0]!.id, 3600, actor);
    made[0]!.secrets.unshift(rotated.secret);

    const listed = JSON.parse((await fx.run('list', '--json')).stdout) as { purpose: string; rows: object }[];
    expect(listed.find((k) => k.purpose === 'pan-encryption')?.rows).to.deep.include({
      'event_subscription_secrets.secret': 4,
    });
    expect((await fx.run('rotate', '--purpose', 'pan-encryption', '--apply')).code).to.equal(0);
    expect((await fx.run('retire', '--purpose', 'pan-encryption', '--version', '1', '--apply')).code).to.equal(1);
    const backfill = await fx.run('reencrypt', '--purpose', 'pan-encryption');
    expect(backfill.code, backfill.stdout + backfill.stderr).to.equal(0);
    expect(await db.knex('event_subscription_secrets').pluck('secret_key_version')).to.deep.equal([2, 2, 2, 2]);
    expect((await fx.run('retire', '--purpose', 'pan-encryption', '--version', '1', '--apply')).code).to.equal(0);

    await fx.ring.reload();
    for (const { id, secrets } of made) {
      const live = await liveSecrets(db.knex, fx.ring, id, new Date());
      expect(live).to.deep.equal(secrets);
      const body = '{"type":"points.available"}';
      const headers = signedHeaders(live, 'msg_test', new Date(), body);
      for (const secret of secrets) expect(new Webhook(secret).verify(body, headers)).to.deep.equal(JSON.parse(body));
    }
  });
});
