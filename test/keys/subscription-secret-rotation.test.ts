/**
 * Subscription signing secrets have a key purpose of their own, `subscription-secret` (issue 17): it is
 * created at start like the others, inventoried, rotated, re-encrypted and retired, and deliveries are
 * still signed with the same secrets afterwards. Secrets sealed under `pan-encryption` before the
 * purpose existed keep signing across the upgrade and are moved to it (at start, or by `keys reencrypt
 * --purpose pan-encryption`), after which pan-encryption's rotation and retirement no longer involve them.
 */
import { expect } from 'chai';
import { Webhook } from 'standardwebhooks';
import { encryptValue } from '../../src/crypto/field-crypto.js';
import { migrateToLatest, migrationConfig } from '../../src/db/migrations.js';
import { signedHeaders } from '../../src/events/signing.js';
import { SubscriptionService } from '../../src/events/subscription-service.js';
import { legacySubscriptionSecretAad, liveSecrets, moveLegacySecrets } from '../../src/events/subscription-secrets.js';
import { newSigningSecret } from '../../src/events/signing.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startTestService, testEnv } from '../support/harness.js';
import { keysFixture, type KeysFixture } from './keys-context.js';

const MIGRATION = '20261206000600_subscription_secret_purpose';

function subscriptionsOf(db: TestDatabase, fx: KeysFixture): SubscriptionService {
  return new SubscriptionService({
    knex: db.knex,
    keyRing: fx.ring,
    targets: {
      resolver: () => Promise.resolve([{ address: '151.101.1.69', family: 4 }]),
      allowHttp: false,
      allowPrivate: false,
    },
  });
}

async function expectSigning(db: TestDatabase, fx: KeysFixture, made: { id: string; secrets: string[] }[]) {
  await fx.ring.reload();
  for (const { id, secrets } of made) {
    const live = await liveSecrets(db.knex, fx.ring, id, new Date());
    expect(live).to.deep.equal(secrets);
    const body = '{"type":"points.available"}';
    const headers = signedHeaders(live, 'msg_test', new Date(), body);
    for (const secret of secrets) expect(new Webhook(secret).verify(body, headers)).to.deep.equal(JSON.parse(body));
  }
}

type Listed = { purpose: string; version: number; rows: Record<string, number> }[];

/** A database of the release before: secrets sealed under pan-encryption v1 with the v1 AAD, then migrated. */
async function upgradedDatabase(): Promise<{
  db: TestDatabase;
  fx: KeysFixture;
  made: { id: string; secrets: string[] }[];
}> {
  const db = await createTestDatabase({ migrated: true });
  // Keys as the release before made them: pan-encryption v1 (the rollback drops the unused
  // subscription-secret v1 that this release's fixture creates).
  const old = await keysFixture(db);
  const pan = await old.ring.active('pan-encryption');
  // Back to the release before: this migration and every later one, newest first.
  const undone: string[] = [];
  for (;;) {
    const last = (await db.knex('knex_migrations').orderBy('id', 'desc').first('name')) as { name: string };
    if (last.name < MIGRATION) break;
    await db.knex.migrate.down({ ...migrationConfig(), name: last.name });
    undone.unshift(last.name);
  }
  expect(undone[0]).to.equal(MIGRATION);
  const now = new Date();
  const made: { id: string; secrets: string[] }[] = [];
  for (let i = 0; i < 3; i++) {
    const id = `sub_legacy${i}`;
    await db.knex('event_subscriptions').insert({
      id,
      url: `https://legacy${i}.example.com/hook`,
      url_sha256: Buffer.alloc(32, i),
      event_types: JSON.stringify(['points.available']),
      state: 'active',
      created_by: 'test',
      created_at: now,
      updated_at: now,
    });
    const secret = newSigningSecret();
    const secretId = `whs_legacy${i}`;
    await db.knex('event_subscription_secrets').insert({
      id: secretId,
      subscription_id: id,
      secret_ciphertext: encryptValue(pan.key, legacySubscriptionSecretAad(secretId, pan.version), secret),
      secret_key_version: pan.version,
      created_at: now,
    });
    made.push({ id, secrets: [secret] });
  }
  expect(await migrateToLatest(db.knex)).to.deep.equal(undone);
  const fx = await keysFixture(db, {
    masterKeyBase64: old.masterKeyBase64,
    policy: { singleOperator: true, propagationMs: 300 },
  });
  return { db, fx, made };
}

describe('key rotation: subscription signing secrets under their own purpose', function () {
  this.timeout(60_000);

  describe('on a fresh database', () => {
    let db: TestDatabase;
    let fx: KeysFixture;
    before(async () => {
      db = await createTestDatabase({ migrated: true });
      fx = await keysFixture(db, { policy: { singleOperator: true, propagationMs: 300 } });
    });
    after(async () => db.close());

    it('when subscription-secret is rotated, then its secrets move to the new version, retire waits for them, they still sign, and pan-encryption never counts them', async () => {
      const subscriptions = subscriptionsOf(db, fx);
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
      expect(await db.knex('event_subscription_secrets').distinct().pluck('secret_key_purpose')).to.deep.equal([
        'subscription-secret',
      ]);

      const listed = JSON.parse((await fx.run('list', '--json')).stdout) as Listed;
      expect(listed.find((k) => k.purpose === 'subscription-secret')?.rows).to.deep.equal({
        'event_subscription_secrets.secret': 4,
      });
      expect(listed.find((k) => k.purpose === 'pan-encryption')?.rows).to.deep.include({
        'event_subscription_secrets.legacy_secret': 0,
      });
      // A pan-encryption rotation and retirement no longer wait for subscription secrets.
      expect((await fx.run('rotate', '--purpose', 'pan-encryption', '--apply')).code).to.equal(0);
      await new Promise((resolve) => setTimeout(resolve, 400)); // the policy's propagation time
      const panRetired = await fx.run('retire', '--purpose', 'pan-encryption', '--version', '1', '--apply');
      expect(panRetired.code, panRetired.stdout + panRetired.stderr).to.equal(0);

      expect((await fx.run('rotate', '--purpose', 'subscription-secret', '--apply')).code).to.equal(0);
      const refused = await fx.run('retire', '--purpose', 'subscription-secret', '--version', '1', '--apply');
      expect(refused.code).to.equal(1);
      expect(refused.stderr).to.contain('KEY_VERSION_IN_USE');
      const backfill = await fx.run('reencrypt', '--purpose', 'subscription-secret');
      expect(backfill.code, backfill.stdout + backfill.stderr).to.equal(0);
      expect(await db.knex('event_subscription_secrets').pluck('secret_key_version')).to.deep.equal([2, 2, 2, 2]);
      expect((await fx.run('retire', '--purpose', 'subscription-secret', '--version', '1', '--apply')).code).to.equal(
        0,
      );
      await expectSigning(db, fx, made);
    });

    it('when the key inventory is exported, then subscription-secret is in it with its algorithm and description', async () => {
      const listed = JSON.parse((await fx.run('list', '--json')).stdout) as (Listed[number] & {
        algorithm: string;
        strengthBits: number;
      })[];
      const own = listed.filter((k) => k.purpose === 'subscription-secret');
      expect(own.map((k) => [k.version, k.algorithm, k.strengthBits])).to.deep.equal([
        [1, 'AES-256-GCM', 256],
        [2, 'AES-256-GCM', 256],
      ]);
    });
  });

  describe('across the upgrade (secrets sealed under pan-encryption before the purpose existed)', () => {
    let db: TestDatabase;
    let fx: KeysFixture;
    let made: { id: string; secrets: string[] }[];

    before(async () => {
      ({ db, fx, made } = await upgradedDatabase());
    });
    after(async () => db.close());

    it('when migrated, then the existing secrets still sign, under pan-encryption, and pan-encryption v1 cannot be retired while they are there', async () => {
      expect(await db.knex('event_subscription_secrets').distinct().pluck('secret_key_purpose')).to.deep.equal([
        'pan-encryption',
      ]);
      await expectSigning(db, fx, made);
      const listed = JSON.parse((await fx.run('list', '--json')).stdout) as Listed;
      expect(listed.find((k) => k.purpose === 'pan-encryption')?.rows).to.deep.include({
        'event_subscription_secrets.legacy_secret': 3,
      });
      expect(listed.find((k) => k.purpose === 'subscription-secret')?.rows).to.deep.equal({
        'event_subscription_secrets.secret': 0,
      });
      expect((await fx.run('rotate', '--purpose', 'pan-encryption', '--apply')).code).to.equal(0);
      const refused = await fx.run('retire', '--purpose', 'pan-encryption', '--version', '1', '--apply');
      expect(refused.code).to.equal(1);
      expect(refused.stderr).to.contain('KEY_VERSION_IN_USE');
    });

    it('when pan-encryption is re-encrypted, then the secrets are moved to subscription-secret (not to pan-encryption v2), and pan v1 retires', async () => {
      const backfill = await fx.run('reencrypt', '--purpose', 'pan-encryption');
      expect(backfill.code, backfill.stdout + backfill.stderr).to.equal(0);
      const rows = (await db.knex('event_subscription_secrets').orderBy('id')) as {
        secret_key_purpose: string;
        secret_key_version: number;
      }[];
      expect(rows.map((r) => [r.secret_key_purpose, r.secret_key_version])).to.deep.equal([
        ['subscription-secret', 1],
        ['subscription-secret', 1],
        ['subscription-secret', 1],
      ]);
      await expectSigning(db, fx, made);
      expect((await fx.run('retire', '--purpose', 'pan-encryption', '--version', '1', '--apply')).code).to.equal(0);
      // Nothing left to move: the start-up step is a no-op and the secrets still sign.
      expect(await moveLegacySecrets(db.knex, fx.ring)).to.deep.equal({ moved: 0, failed: 0 });
      await expectSigning(db, fx, made);
    });
  });

  describe('at service start after the upgrade', () => {
    let db: TestDatabase;
    after(async () => db.close());

    it('when the service starts, then every secret still under pan-encryption moves to subscription-secret, once, and still signs', async () => {
      const upgraded = await upgradedDatabase();
      db = upgraded.db;
      const svc = await startTestService({
        db,
        env: await testEnv({ MASTER_KEY: upgraded.fx.masterKeyBase64 }),
      });
      try {
        expect(await db.knex('event_subscription_secrets').distinct().pluck('secret_key_purpose')).to.deep.equal([
          'subscription-secret',
        ]);
      } finally {
        await svc.close();
      }
      await expectSigning(db, upgraded.fx, upgraded.made);
    });
  });
});
