import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { verifyAuditChain } from '../../src/audit/audit-log.js';
import { VaultService } from '../../src/cards/vault-service.js';
import { createDatabase } from '../../src/db/database.js';
import { bumpGeneration, insertNewKey, KeyRing } from '../../src/keys/key-ring.js';
import { LocalMasterKey } from '../../src/keys/master-key-source.js';
import { createTestDatabase, testDbConfig, usingPostgres, type TestDatabase } from '../support/database.js';
import { generatePans } from '../support/pans.js';

const SYSTEM = { actor: 'test', actorType: 'system', origin: 'test' } as const;

describe('key ring', () => {
  let db: TestDatabase;
  let masterKey: LocalMasterKey;
  const vaultOptions = { detokenise: { enabled: true, perMinute: 1000 } };

  beforeEach(async () => {
    db = await createTestDatabase({ migrated: true });
    masterKey = new LocalMasterKey(randomBytes(32), 'test');
  });
  afterEach(async () => db.close());

  async function ring(knex: Knex = db.knex, refreshMs = 50): Promise<KeyRing> {
    const r = new KeyRing(knex, masterKey, refreshMs);
    await r.ensureInitialKeys('test');
    return r;
  }

  async function publishMacV2(): Promise<void> {
    await db.knex.transaction((trx) => insertNewKey(trx, masterKey, 'identifier-mac', 2, 'published', SYSTEM));
  }

  async function activateMacV2(): Promise<void> {
    await db.knex.transaction(async (trx) => {
      await trx('data_keys').where({ purpose: 'identifier-mac', version: 1 }).update({ state: 'decrypt-only' });
      await trx('data_keys')
        .where({ purpose: 'identifier-mac', version: 2 })
        .update({ state: 'active', activated_at: new Date() });
      await bumpGeneration(trx);
    });
  }

  const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  it('when master keys are named, then no name ever looks like a card number (the audit trail would refuse every key operation)', () => {
    // The hex names of an earlier release did for about one key in two thousand.
    const pan = /\d(?:[ -]?\d){12,}/;
    for (let i = 0; i < 20_000; i++) {
      const { keyId } = new LocalMasterKey(randomBytes(32), 'probe');
      if (pan.test(keyId)) expect.fail(`master key name ${keyId} holds a 13-digit run`);
    }
  });

  it('when data keys name their master key by the hex id of an earlier release, then the start renames them and they still unwrap', async () => {
    const legacy = masterKey.keyIdRenames[0]!.from;
    expect(legacy).to.match(/^local:[0-9a-f]{16}$/);
    await ring();
    await db.knex('data_keys').update({ kek_id: legacy });
    await db.knex('master_keys').update({ kek_id: legacy });
    const restarted = await ring();
    expect(await db.knex('data_keys').distinct('kek_id').pluck('kek_id')).to.deep.equal([masterKey.keyId]);
    expect(await db.knex('master_keys').pluck('kek_id')).to.deep.equal([masterKey.keyId]);
    expect((await restarted.active('pan-encryption')).version).to.equal(1);
  });

  it('when the service first starts, then version 1 of each purpose is created active, wrapped, and audited', async () => {
    await ring();
    const keys = await db.knex('data_keys').orderBy('purpose');
    expect(keys.map((k) => [k.purpose, k.version, k.state, k.algorithm])).to.deep.equal([
      ['audit-signing', 1, 'active', 'Ed25519'],
      ['identifier-mac', 1, 'active', 'HMAC-SHA256'],
      ['pan-encryption', 1, 'active', 'AES-256-GCM'],
      ['subscription-secret', 1, 'active', 'AES-256-GCM'],
    ]);
    for (const k of keys) expect(k.wrapped_key).to.have.length(1 + 12 + 16 + 32);
    expect(
      await db.knex('audit_events').where({ action: 'key.created' }).count<{ count: number }[]>('* as count'),
    ).to.deep.equal([{ count: 4 }]);
    expect((await verifyAuditChain(db.knex)).ok).to.equal(true);
  });

  it('when several instances start at once on an empty database, then each purpose still has exactly one version 1', async function () {
    if (!usingPostgres) this.skip();
    const extra = Array.from({ length: 3 }, () => createDatabase(testDbConfig(db.url as string)));
    try {
      await Promise.all(
        [db.knex, ...extra.map((d) => d.knex)].map((k) => new KeyRing(k, masterKey, 50).ensureInitialKeys('t')),
      );
      expect(await db.knex('data_keys').count<{ count: number }[]>('* as count')).to.deep.equal([{ count: 4 }]);
    } finally {
      await Promise.all(extra.map((d) => d.close()));
    }
  });

  it('when a wrapped key is moved to another purpose or version, then it does not unwrap', async () => {
    await ring();
    const mac = await db.knex('data_keys').where({ purpose: 'identifier-mac' }).first();
    await db.knex('data_keys').where({ purpose: 'pan-encryption' }).update({ wrapped_key: mac.wrapped_key });
    let failure: unknown;
    try {
      await new KeyRing(db.knex, masterKey, 50).reload();
    } catch (error) {
      failure = error;
    }
    expect(String(failure)).to.contain('cannot unwrap data key pan-encryption v1');
  });

  it('when a new MAC version is published and then activated, then every card stays findable and new cards are indexed under both', async () => {
    const vault = new VaultService(db.knex, await ring(), vaultOptions);
    const [oldPan, midPan, newPan] = generatePans(3);
    const old = await vault.tokenise({ kind: 'pan', pan: oldPan! });

    await publishMacV2();
    await wait(80);
    const mid = await vault.tokenise({ kind: 'pan', pan: midPan! });
    expect((await vault.tokenise({ kind: 'pan', pan: oldPan! })).card.token).to.equal(old.card.token);

    await activateMacV2();
    await wait(80);
    const fresh = await vault.tokenise({ kind: 'pan', pan: newPan! });
    for (const [pan, card] of [
      [oldPan, old],
      [midPan, mid],
      [newPan, fresh],
    ] as const) {
      const again = await vault.tokenise({ kind: 'pan', pan: pan! });
      expect(again.created).to.equal(false);
      expect(again.card.token).to.equal(card.card.token);
    }
    const versions = async (token: string) =>
      (await db.knex('identifier_fingerprints').where({ token }).orderBy('mac_key_version')).map(
        (r) => r.mac_key_version,
      );
    expect(await versions(old.card.token)).to.deep.equal([1]);
    expect(await versions(mid.card.token)).to.deep.equal([1, 2]);
    // After activation, v1 is decrypt-only: still matched, no longer written (the backfill empties it).
    expect(await versions(fresh.card.token)).to.deep.equal([2]);
  });

  it('when an instance has not yet seen a new MAC version and another has, then a PAN first seen by both at once gets one card', async function () {
    if (!usingPostgres) this.skip();
    const staleDb = createDatabase(testDbConfig(db.url as string));
    try {
      const stale = new VaultService(staleDb.knex, await ring(staleDb.knex, 3_600_000), vaultOptions);
      await publishMacV2();
      const fresh = new VaultService(db.knex, await ring(db.knex, 50), vaultOptions);
      for (const pan of generatePans(10, '222300')) {
        const results = await Promise.all([
          stale.tokenise({ kind: 'pan', pan }),
          fresh.tokenise({ kind: 'pan', pan }),
          stale.tokenise({ kind: 'pan', pan }),
          fresh.tokenise({ kind: 'pan', pan }),
        ]);
        expect(new Set(results.map((r) => r.card.token)).size).to.equal(1);
        expect(results.filter((r) => r.created)).to.have.length(1);
      }
    } finally {
      await staleDb.close();
    }
  });

  it('when a PAN was encrypted under a key version this instance has not loaded, then it reloads and decrypts', async () => {
    const oldRing = await ring(db.knex, 3_600_000);
    const writerRing = await ring(db.knex, 50);
    await db.knex.transaction(async (trx) => {
      await insertNewKey(trx, masterKey, 'pan-encryption', 2, 'published', SYSTEM);
      await trx('data_keys').where({ purpose: 'pan-encryption', version: 1 }).update({ state: 'decrypt-only' });
      await trx('data_keys').where({ purpose: 'pan-encryption', version: 2 }).update({ state: 'active' });
      await bumpGeneration(trx);
    });
    await writerRing.reload();
    const writer = new VaultService(db.knex, writerRing, vaultOptions);
    const [pan] = generatePans(1);
    const { card } = await writer.tokenise({ kind: 'pan', pan: pan! });
    expect((await db.knex('cards').where({ token: card.token }).first()).pan_key_version).to.equal(2);
    const reader = new VaultService(db.knex, oldRing, vaultOptions);
    const caller = { subject: 's', shopperRef: undefined, origin: 'test' };
    expect(await reader.detokenise(card.token, 'test reload', caller)).to.deep.equal({ pan });
  });

  it('when the ring checks for changes on every call, then work inside transactions never waits on its own connection', async () => {
    // Regression: on single-connection PGlite a refresh issued on the pool inside a transaction hung.
    const vault = new VaultService(db.knex, await ring(db.knex, 0), vaultOptions);
    const caller = { subject: 's', shopperRef: undefined, origin: 'test' };
    const [pan, second] = generatePans(2);
    const { card } = await vault.tokenise({ kind: 'pan', pan: pan! });
    await publishMacV2();
    const par = await vault.tokenise({ kind: 'par', par: 'V0010013816180398947592732139' });
    await vault.attachIdentifier(par.card.token, { kind: 'pan', pan: second! }, caller);
    expect(await vault.detokenise(card.token, 'regression', caller)).to.deep.equal({ pan });
  });

  it('when a ciphertext is copied onto another card, then decryption fails instead of revealing the wrong PAN', async () => {
    const vault = new VaultService(db.knex, await ring(), vaultOptions);
    const [a, b] = generatePans(2);
    const cardA = (await vault.tokenise({ kind: 'pan', pan: a! })).card;
    const cardB = (await vault.tokenise({ kind: 'pan', pan: b! })).card;
    const sealedA = (await db.knex('cards').where({ token: cardA.token }).first()).pan_ciphertext;
    await db.knex('cards').where({ token: cardB.token }).update({ pan_ciphertext: sealedA });
    const caller = { subject: 's', shopperRef: undefined, origin: 'test' };
    let failure: unknown;
    try {
      await vault.detokenise(cardB.token, 'swap test', caller);
    } catch (error) {
      failure = error;
    }
    expect(String(failure)).to.contain('unable to authenticate');
  });
});
