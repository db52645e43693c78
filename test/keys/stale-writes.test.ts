/**
 * Review of issue 18: writes from a stale key ring. A value re-sealed under the SAME version is checked
 * like a move to another version; the re-encryption backfill never overwrites a value written after it
 * read the row; a retry after a refusal runs on a ring loaded after the refusal; e-mail and
 * subscription-secret writes are retried, and a refusal that survives the retry is a 503, never a 500.
 */
import { expect } from 'chai';
import { VaultService } from '../../src/cards/vault-service.js';
import { decryptValue, emailAad, encryptValue } from '../../src/crypto/field-crypto.js';
import { SubscriptionService } from '../../src/events/subscription-service.js';
import { liveSecrets } from '../../src/events/subscription-secrets.js';
import { toAppError } from '../../src/http/problem.js';
import { problemStatus } from '../../src/http/problem-statuses.js';
import type { EncryptedFieldSet } from '../../src/keys/field-sets.js';
import { memberEmails } from '../../src/loyalty/member-field-sets.js';
import { reencrypt } from '../../src/keys/reencrypt.js';
import { isAppError } from '../../src/errors/app-error.js';
import { describeInstance, futureBeats, liveInstances, waitForInstances } from '../../src/keys/instance-heartbeat.js';
import { isKeyVersionNotWritable, KeyRing } from '../../src/keys/key-ring.js';
import type { MasterKeySource } from '../../src/keys/master-key-source.js';
import { MemberService } from '../../src/loyalty/member-service.js';
import { PaymentService } from '../../src/payments/payment-service.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { generatePans } from '../support/pans.js';
import { keysFixture, type KeysFixture } from './keys-context.js';

const ACTOR = { subject: 'test', origin: 'test' };
const SLOW_MS = 300_000;

describe('keys: writes from a stale ring (review of issue 18)', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let fx: KeysFixture;

  before(async () => {
    db = await createTestDatabase({ migrated: true });
    fx = await keysFixture(db, { policy: { singleOperator: true, propagationMs: 0 } });
  });
  after(async () => db.close());

  /** A ring that loaded now and will not look again for five minutes: an instance that missed a NOTIFY. */
  async function staleRing(source: MasterKeySource = fx.masterKey): Promise<KeyRing> {
    const ring = new KeyRing(db.knex, source, SLOW_MS);
    await ring.reload();
    return ring;
  }

  function membersOn(ring: KeyRing): MemberService {
    const vault = new VaultService(db.knex, ring, { detokenise: { enabled: false, perMinute: 1 } });
    return new MemberService({
      knex: db.knex,
      keyRing: ring,
      vault,
      payments: new PaymentService(db.knex, vault, { autoCaptureChannels: [] }),
    });
  }

  async function newShopper(): Promise<string> {
    const vault = new VaultService(db.knex, fx.ring, { detokenise: { enabled: false, perMinute: 1 } });
    const { card } = await vault.tokenise({ kind: 'pan', pan: generatePans(1, '455555')[0] as string });
    return card.shopperReference;
  }

  async function rotate(purpose: string): Promise<void> {
    const rotated = await fx.run('rotate', '--purpose', purpose, '--apply');
    expect(rotated.code, rotated.stdout + rotated.stderr).to.equal(0);
    await fx.ring.reload();
  }

  async function refusal(write: Promise<unknown>): Promise<unknown> {
    try {
      await write;
    } catch (error) {
      return error;
    }
    return undefined;
  }

  async function emailOf(shopperRef: string): Promise<{ email: string; version: number }> {
    const row = (await db.knex('loyalty_accounts').where({ shopper_ref: shopperRef }).first()) as {
      email_ciphertext: Buffer;
      email_key_version: number;
    };
    const key = await fx.ring.version('pan-encryption', row.email_key_version);
    return {
      email: decryptValue(key.key, emailAad(shopperRef, row.email_key_version), row.email_ciphertext),
      version: row.email_key_version,
    };
  }

  it('when a value is re-sealed under the same version after that version stopped being active, then the database refuses it (e-mail, PAN)', async () => {
    const shopper = await newShopper();
    await membersOn(fx.ring).enrol(shopper, { email: 'before@example.com' }, ACTOR);
    const old = (await fx.ring.active('pan-encryption')).version;
    const card = (await db.knex('cards').where({ shopper_ref: shopper }).first('token')) as { token: string };
    await rotate('pan-encryption');

    // As a stale instance would write: new ciphertext, the version left as it was.
    const key = await fx.ring.version('pan-encryption', old);
    const email = refusal(
      db
        .knex('loyalty_accounts')
        .where({ shopper_ref: shopper })
        .update({ email_ciphertext: encryptValue(key.key, emailAad(shopper, old), 'after@example.com') }),
    );
    expect(isKeyVersionNotWritable(await email), String(await email)).to.equal(true);
    const pan = await refusal(
      db
        .knex('cards')
        .where({ token: card.token })
        .update({ pan_ciphertext: Buffer.alloc(40, 1) }),
    );
    expect(isKeyVersionNotWritable(pan), String(pan)).to.equal(true);
    expect((await emailOf(shopper)).email).to.equal('before@example.com');
  });

  it('when a value is written after the backfill read its row, then the backfill does not overwrite it (compare-and-set on the ciphertext)', async () => {
    const shopper = await newShopper();
    const stale = await staleRing();
    await membersOn(stale).enrol(shopper, { email: 'old@example.com' }, ACTOR);
    const from = (await stale.active('pan-encryption')).version;
    await rotate('pan-encryption');
    const target = await fx.ring.active('pan-encryption');

    // The backfill reads the row (under the old version) …
    const batch = await memberEmails.prepareBatch(db.knex, {
      after: '',
      limit: 10_000,
      target,
      keyRing: fx.ring,
      now: new Date(),
    });
    expect(batch.read).to.be.greaterThan(0);
    // … the member changes their e-mail meanwhile, under the OLD version (written while it was still
    // active: the same bytes a concurrent writer could have committed just before the rotation) …
    const oldKey = await fx.ring.version('pan-encryption', from);
    await db.knex.transaction(async (trx) => {
      await trx.raw('alter table loyalty_accounts disable trigger loyalty_accounts_email_key_version_writable_update');
      await trx('loyalty_accounts')
        .where({ shopper_ref: shopper })
        .update({ email_ciphertext: encryptValue(oldKey.key, emailAad(shopper, from), 'new@example.com') });
      await trx.raw('alter table loyalty_accounts enable trigger loyalty_accounts_email_key_version_writable_update');
    });
    // … then the batch is written: the changed row is left for the next pass, never set back.
    await db.knex.transaction((trx) => batch.write(trx));
    expect((await emailOf(shopper)).email).to.equal('new@example.com');
    const run = await fx.run('reencrypt', '--purpose', 'pan-encryption');
    expect(run.code, run.stdout + run.stderr).to.equal(0);
    expect(await emailOf(shopper)).to.deep.equal({ email: 'new@example.com', version: target.version });
  });

  it('when a member enrols through a stale ring, then the write is retried on a reloaded ring and sealed under the active version', async () => {
    const shopper = await newShopper();
    const stale = await staleRing();
    await rotate('pan-encryption');
    const active = (await fx.ring.active('pan-encryption')).version;
    expect((await stale.active('pan-encryption')).version).to.be.lessThan(active);
    await membersOn(stale).enrol(shopper, { email: 'stale@example.com' }, ACTOR);
    expect(await emailOf(shopper)).to.deep.equal({ email: 'stale@example.com', version: active });
  });

  it('when a subscription is created through a stale ring, then its secret is retried on a reloaded ring and sealed under the active subscription-secret version', async () => {
    const stale = await staleRing();
    await rotate('subscription-secret');
    const active = (await fx.ring.active('subscription-secret')).version;
    const subscriptions = new SubscriptionService({
      knex: db.knex,
      keyRing: stale,
      targets: {
        resolver: () => Promise.resolve([{ address: '151.101.1.69', family: 4 }]),
        allowHttp: false,
        allowPrivate: false,
      },
    });
    const made = await subscriptions.create(
      { url: 'https://hooks.example.com/stale-ring', eventTypes: ['points.available'] },
      { subject: 'admin', origin: 'test' },
    );
    const rows = (await db
      .knex('event_subscription_secrets')
      .where({ subscription_id: made.subscription.id })
      .pluck('secret_key_version')) as number[];
    expect(rows).to.deep.equal([active]);
    expect(await liveSecrets(db.knex, fx.ring, made.subscription.id, new Date())).to.deep.equal([made.secret]);
  });

  it('when the retry would join a load that read the keys before the activation, then it loads again (a slow master key) and succeeds', async () => {
    let gate: Promise<void> | undefined;
    let open = (): void => undefined;
    let unwrapping = (): void => undefined;
    const unwrapStarted = new Promise<void>((resolve) => (unwrapping = resolve));
    const slow: MasterKeySource = {
      keyId: fx.masterKey.keyId,
      description: fx.masterKey.description,
      wrap: (k, aad) => fx.masterKey.wrap(k, aad),
      readiness: () => ({ ready: true }),
      async unwrap(w, aad) {
        if (gate !== undefined) {
          unwrapping();
          await gate;
        }
        return fx.masterKey.unwrap(w, aad);
      },
    };
    const shopper = await newShopper();
    const stale = await staleRing(slow);
    // A reload unwraps only versions it has not unwrapped before (key-ring.ts): this one starts from
    // an empty ring, so that it sends every key to the slow master key.
    stale.forget();
    gate = new Promise<void>((resolve) => (open = resolve));
    // A load starts (a NOTIFY of an earlier change, say), reads data_keys, and is slow to unwrap …
    const loading = stale.reload();
    await unwrapStarted;
    // … while the operator activates a new version.
    await rotate('pan-encryption');
    const active = (await fx.ring.active('pan-encryption')).version;
    let settled = false;
    const enrolled = membersOn(stale)
      .enrol(shopper, { email: 'slow@example.com' }, ACTOR)
      .finally(() => (settled = true));
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(settled, 'the retry waits for a load').to.equal(false);
    gate = undefined;
    open();
    await loading;
    await enrolled;
    expect(await emailOf(shopper)).to.deep.equal({ email: 'slow@example.com', version: active });
  });

  it('when a rotation commits while the backfill runs, then the backfill stops with a clear message (not the raw check violation), and a rerun finishes', async () => {
    const shopper = await newShopper();
    await membersOn(fx.ring).enrol(shopper, { email: 'during@example.com' }, ACTOR);
    await rotate('pan-encryption');
    let rotated = false;
    // The rotation lands after the backfill chose its target and before its first batch commits.
    const racing: EncryptedFieldSet = {
      ...memberEmails,
      async prepareBatch(db, context) {
        if (!rotated) {
          rotated = true;
          await rotate('pan-encryption');
        }
        return memberEmails.prepareBatch(db, context);
      },
    };
    const error = await refusal(
      reencrypt(db.knex, fx.ring, {
        purpose: 'pan-encryption',
        registry: [racing],
        batchSize: 100,
        lanes: 1,
        propagationMs: 0,
        actor: { actor: 'test-operator', actorType: 'operator', origin: 'cli:test' },
      }),
    );
    expect(isAppError(error) && error.code, String(error)).to.equal('KEY_OPERATION_INVALID');
    expect((error as Error).message).to.match(/no longer active .*run keys reencrypt again/);
    const rerun = await fx.run('reencrypt', '--purpose', 'pan-encryption');
    expect(rerun.code, rerun.stdout + rerun.stderr).to.equal(0);
    const active = (await fx.ring.active('pan-encryption')).version;
    expect(await emailOf(shopper)).to.deep.equal({ email: 'during@example.com', version: active });
  });

  it('when a key-version trigger is disabled or replaced, or rows sit under an unknown version, then keys status says so and exits 1', async () => {
    const healthy = await fx.run('status');
    expect(healthy.code, healthy.stdout + healthy.stderr).to.equal(0);
    const trigger = 'loyalty_accounts_email_key_version_writable_update';
    await db.knex.raw(`alter table loyalty_accounts disable trigger ${trigger}`);
    const disabled = await fx.run('status');
    expect(disabled.code).to.equal(1);
    expect(disabled.stdout).to.include(`PROBLEM trigger-disabled: trigger ${trigger} on loyalty_accounts`);
    await db.knex.raw(`alter table loyalty_accounts enable trigger ${trigger}`);
    const [fn] = (await db.knex.raw(`select pg_get_functiondef('${trigger}'::regproc) as def`)).rows as {
      def: string;
    }[];
    await db.knex.raw(
      `create or replace function ${trigger}() returns trigger language plpgsql as $$ begin return new; end $$`,
    );
    const altered = await fx.run('status', '--json');
    expect(altered.code).to.equal(1);
    expect(JSON.parse(altered.stdout).keyChecks).to.deep.include({
      kind: 'trigger-altered',
      detail: `function ${trigger}() of trigger ${trigger} on loyalty_accounts differs from its migration`,
    });
    await db.knex.raw((fn as { def: string }).def);
    expect((await fx.run('status')).code).to.equal(0);
    await db.knex.raw('alter table cards disable trigger user');
    const shopper = await newShopper();
    const { pan_key_version: before } = (await db.knex('cards').where({ shopper_ref: shopper }).first()) as {
      pan_key_version: number;
    };
    await db.knex('cards').where({ shopper_ref: shopper }).update({ pan_key_version: 99 });
    await db.knex.raw('alter table cards enable trigger user');
    const unknown = await fx.run('status');
    expect(unknown.code).to.equal(1);
    expect(unknown.stdout).to.match(
      /PROBLEM rows-under-unreadable-version: 1 row\(s\) of cards.pan under pan-encryption v99/,
    );
    await db.knex.raw('alter table cards disable trigger user');
    await db.knex('cards').where({ shopper_ref: shopper }).update({ pan_key_version: before });
    await db.knex.raw('alter table cards enable trigger user');
    expect((await fx.run('status')).code).to.equal(0);
  });

  it('when a key-version refusal survives the retry, then it is a 503 KEY_RING_STALE with Retry-After, never a 500', async () => {
    const error = await refusal(
      db.knex('cards').insert({
        token: 'tok_refusedtwiceaaaaaaaaaaaaaaaa',
        shopper_ref: await newShopper(),
        pan_ciphertext: Buffer.alloc(40),
        pan_key_version: 1,
        created_at: new Date(),
        updated_at: new Date(),
      }),
    );
    expect(isKeyVersionNotWritable(error), String(error)).to.equal(true);
    const problem = toAppError(error);
    expect(problem.code).to.equal('KEY_RING_STALE');
    expect(problemStatus(problem)).to.equal(503);
    expect(problem.headers).to.deep.equal({ 'Retry-After': '1' });
  });
});

describe('keys: forged heartbeat rows (review of issue 18)', function () {
  this.timeout(60_000);
  let db: TestDatabase;

  before(async () => {
    db = await createTestDatabase({ migrated: true });
  });
  after(async () => db.close());

  const row = (id: string, refreshMs: number, beat: unknown) => ({
    instance_id: id,
    host: 'forged',
    pid: 1,
    started_at: new Date(),
    generation: 0,
    refresh_interval_ms: refreshMs,
    last_beat_at: beat,
  });

  it('when a heartbeat row claims a refresh interval beyond the configuration maximum, then the database refuses it', async () => {
    const error = await db
      .knex('key_ring_instances')
      .insert(row('forged-interval', 2_147_483_647, db.knex.fn.now()))
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect((error as { code?: string } | undefined)?.code, String(error)).to.equal('23514');
  });

  it('when a heartbeat row beats from the future, then it is not a live instance, the wait ignores it and says so, and ages print honestly', async () => {
    await db
      .knex('key_ring_instances')
      .insert(row('forged-future', 300_000, db.knex.raw(`now() + interval '10 years'`)));
    expect((await liveInstances(db.knex)).map((i) => i.instanceId)).to.not.include('forged-future');
    const [future] = await futureBeats(db.knex);
    expect(future?.instanceId).to.equal('forged-future');
    expect(describeInstance(future as NonNullable<typeof future>)).to.match(/IN THE FUTURE/);
    const told: string[] = [];
    await waitForInstances(db.knex, 1, { timeoutMs: 1_000, pollMs: 10, onWait: (m) => told.push(m) });
    expect(told.join('\n')).to.match(/ignoring 1 heartbeat row\(s\) dated in the future.*forged-future/);
  });
});
