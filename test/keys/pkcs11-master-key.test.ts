/**
 * The master key in a PKCS#11 token (issue 19), on a real SoftHSM2 token this file makes for itself.
 *
 * Every PKCS#11 call made by the code under test is recorded (the binding's prototype is wrapped,
 * nothing is faked): the tests assert that the code never asks for the key's value (CKA_VALUE),
 * never wraps it out (C_WrapKey) or changes it (C_SetAttributeValue, C_CopyObject), and that the
 * card hot path makes no token call at all once the key ring is loaded.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pkcs11js from 'pkcs11js';
import { verifyAuditChain } from '../../src/audit/audit-log.js';
import { VaultService } from '../../src/cards/vault-service.js';
import { loadConfig } from '../../src/config/config.js';
import { migrateToLatest } from '../../src/db/migrations.js';
import { KeyRing } from '../../src/keys/key-ring.js';
import { LocalMasterKey, MasterKeySet, loadMasterKey, type MasterKeySource } from '../../src/keys/master-key-source.js';
import {
  Pkcs11MasterKey,
  createMasterKeyInToken,
  destroyCreatedTokenKey,
  type TokenKeyCreated,
} from '../../src/keys/master-key-sources/pkcs11.js';
import { signToken } from '../support/auth.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startTestService, testEnv } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { createSoftHsmToken, type SoftHsmToken } from '../support/softhsm.js';
import { keysFixture } from './keys-context.js';

const vaultOptions = { detokenise: { enabled: true, perMinute: 1000 } };
const caller = { subject: 'hsm-test', shopperRef: undefined, origin: 'test' };

/** Records every C_* call of the binding (made by the code under test, not by the test's own probes). */
function recordPkcs11Calls(): {
  calls: { method: string; attributes: number[] }[];
  quiet<T>(f: () => T): T;
  restore(): void;
} {
  // The binding's class extends the native one: wrap each method once, where the chain first defines it.
  const originals: [Record<string, unknown>, string, unknown][] = [];
  const calls: { method: string; attributes: number[] }[] = [];
  let quiet = 0;
  const seen = new Set<string>();
  for (
    let proto = pkcs11js.PKCS11.prototype as unknown as Record<string, unknown> | null;
    proto !== null && proto !== Object.prototype;
    proto = Object.getPrototypeOf(proto) as Record<string, unknown> | null
  ) {
    for (const name of Object.getOwnPropertyNames(proto)) {
      const original = proto[name];
      if (!name.startsWith('C_') || typeof original !== 'function' || seen.has(name)) continue;
      seen.add(name);
      originals.push([proto, name, original]);
      proto[name] = function (this: unknown, ...args: unknown[]) {
        if (quiet === 0) {
          const template = name === 'C_GetAttributeValue' ? (args[2] as { type: number }[]) : [];
          calls.push({ method: name, attributes: template.map((a) => a.type) });
        }
        return (original as (...a: unknown[]) => unknown).apply(this, args);
      };
    }
  }
  return {
    calls,
    quiet<T>(f: () => T): T {
      quiet += 1;
      try {
        return f();
      } finally {
        quiet -= 1;
      }
    },
    restore() {
      for (const [proto, name, original] of originals) proto[name] = original;
    },
  };
}

/** A session of the test's own, logged in, to look at the token as an administrator would. */
function adminSession(token: SoftHsmToken): { api: pkcs11js.PKCS11; session: Buffer; close(): void } {
  const api = new pkcs11js.PKCS11();
  api.load(token.module);
  try {
    api.C_Initialize();
  } catch {
    // initialised by the source already: one library state per process
  }
  const slot = api.C_GetSlotList(true).find((s) => api.C_GetTokenInfo(s).label.trim() === token.tokenLabel);
  if (slot === undefined) throw new Error('test token not found');
  const session = api.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  try {
    api.C_Login(session, pkcs11js.CKU_USER, fs.readFileSync(token.pinFile, 'utf8').trim());
  } catch (error) {
    if ((error as { code?: number }).code !== pkcs11js.CKR_USER_ALREADY_LOGGED_IN) throw error;
  }
  return { api, session, close: () => api.C_CloseSession(session) };
}

function findByLabel(api: pkcs11js.PKCS11, session: Buffer, label: string): Buffer[] {
  api.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_LABEL, value: label }]);
  const found = api.C_FindObjects(session, 10);
  api.C_FindObjectsFinal(session);
  return found;
}

async function rejection(promise: Promise<unknown>): Promise<Error & { code?: unknown }> {
  try {
    await promise;
  } catch (error) {
    return error as Error & { code?: unknown };
  }
  throw new Error('expected a rejection');
}

async function eventually<T>(what: string, probe: () => Promise<T>, ok: (t: T) => boolean, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (ok(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(value)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('master key in a PKCS#11 token (SoftHSM2)', function () {
  this.timeout(120_000);
  let token: SoftHsmToken;
  let recorder: ReturnType<typeof recordPkcs11Calls>;
  let kekA: TokenKeyCreated;
  let kekB: TokenKeyCreated;
  const opened: MasterKeySource[] = [];
  const open = async (label: string): Promise<Pkcs11MasterKey> => {
    const source = await Pkcs11MasterKey.open(token.settings, label);
    opened.push(source);
    return source;
  };

  before(async () => {
    token = createSoftHsmToken('lv-hsm');
    recorder = recordPkcs11Calls();
    kekA = await createMasterKeyInToken(token.settings, 'lv-kek-a');
    kekB = await createMasterKeyInToken(token.settings, 'lv-kek-b');
  });

  after(async () => {
    for (const source of opened) await source.close?.();
    recorder.restore();
    token.remove();
  });

  describe('the key in the token', () => {
    it('when the key is created, then it is a sensitive, never-extractable AES-256 key whose value the token refuses to give (CKA_VALUE)', () => {
      const admin = recorder.quiet(() => adminSession(token));
      try {
        recorder.quiet(() => {
          const [key] = findByLabel(admin.api, admin.session, 'lv-kek-a');
          expect(key).to.not.equal(undefined);
          let refused: unknown;
          try {
            admin.api.C_GetAttributeValue(admin.session, key!, [{ type: pkcs11js.CKA_VALUE }]);
          } catch (error) {
            refused = error;
          }
          expect((refused as { code?: number }).code).to.equal(pkcs11js.CKR_ATTRIBUTE_SENSITIVE);
          const [extractable, neverExtractable, sensitive, length] = admin.api
            .C_GetAttributeValue(admin.session, key!, [
              { type: pkcs11js.CKA_EXTRACTABLE },
              { type: pkcs11js.CKA_NEVER_EXTRACTABLE },
              { type: pkcs11js.CKA_SENSITIVE },
              { type: pkcs11js.CKA_VALUE_LEN },
            ])
            .map((a) => a.value as Buffer);
          expect([extractable![0], neverExtractable![0], sensitive![0], length!.readUInt32LE(0)]).to.deep.equal([
            0, 1, 1, 32,
          ]);
        });
      } finally {
        recorder.quiet(() => admin.close());
      }
      expect(kekA.keyCheckValue).to.match(/^[0-9A-F]{6}$/);
      expect(kekA.keyId).to.match(/^pkcs11:[A-Za-z0-9_-]{16}$/);
      expect(kekA.keyId).to.not.equal(kekB.keyId);
    });

    it('when the key id is published (kek_id in every row, the audit trail, the inventory), then it holds no part of the GCM hash key H = E_K(0¹²⁸) beyond the conventional 3-byte check value', () => {
      // H authenticates every wrapped key and seal: knowing 96 of its 128 bits leaves an insider 2^32
      // guesses from forging a wrapped value under another row's AAD.
      const admin = recorder.quiet(() => adminSession(token));
      let h: Buffer;
      try {
        h = recorder.quiet(() => {
          const [key] = findByLabel(admin.api, admin.session, 'lv-kek-a');
          admin.api.C_EncryptInit(admin.session, { mechanism: pkcs11js.CKM_AES_ECB }, key!);
          return admin.api.C_Encrypt(admin.session, Buffer.alloc(16), Buffer.alloc(16));
        });
      } finally {
        recorder.quiet(() => admin.close());
      }
      expect(kekA.keyCheckValue).to.equal(h.subarray(0, 3).toString('hex').toUpperCase());
      const idBytes = Buffer.from(kekA.keyId.slice('pkcs11:'.length), 'base64url');
      for (let i = 0; i + 4 <= idBytes.length; i += 1) {
        expect(h.includes(idBytes.subarray(i, i + 4)), `key id bytes ${i}..${i + 3} are bytes of H`).to.equal(false);
      }
    });

    it('when a key with the label already exists, then keys hsm init refuses and the token still holds one key under it', async () => {
      const error = await rejection(createMasterKeyInToken(token.settings, 'lv-kek-a'));
      expect(error.code).to.equal('KEY_OPERATION_INVALID');
      expect(error.message).to.contain('already holds an object labelled "lv-kek-a"');
      const admin = recorder.quiet(() => adminSession(token));
      try {
        expect(recorder.quiet(() => findByLabel(admin.api, admin.session, 'lv-kek-a'))).to.have.length(1);
      } finally {
        recorder.quiet(() => admin.close());
      }
    });

    const weakKeys: [string, { type: number; value: boolean }[], string][] = [
      ['extractable', [{ type: pkcs11js.CKA_EXTRACTABLE, value: true }], 'extractable (now or once)'],
      ['not sensitive', [{ type: pkcs11js.CKA_SENSITIVE, value: false }], 'not (always) sensitive'],
    ];
    for (const [name, attributes, refusal] of weakKeys) {
      it(`when the key under the label is ${name}, then the source refuses to use it`, async () => {
        const label = `lv-weak-${name.replace(/\W/g, '')}`;
        const admin = recorder.quiet(() => adminSession(token));
        try {
          recorder.quiet(() =>
            admin.api.C_GenerateKey(admin.session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
              { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
              { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
              { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
              { type: pkcs11js.CKA_LABEL, value: label },
              { type: pkcs11js.CKA_TOKEN, value: true },
              { type: pkcs11js.CKA_PRIVATE, value: true },
              { type: pkcs11js.CKA_SENSITIVE, value: true },
              { type: pkcs11js.CKA_EXTRACTABLE, value: false },
              { type: pkcs11js.CKA_ENCRYPT, value: true },
              { type: pkcs11js.CKA_DECRYPT, value: true },
              ...attributes,
            ]),
          );
        } finally {
          recorder.quiet(() => admin.close());
        }
        const error = await rejection(Pkcs11MasterKey.open(token.settings, label));
        expect(error.message).to.contain(`the token key labelled "${label}" is refused as a master key`);
        expect(error.message).to.contain(refusal);
      });
    }

    it('when the label names no key, then start-up fails naming the label and the command that creates it', async () => {
      const error = await rejection(Pkcs11MasterKey.open(token.settings, 'lv-kek-missing'));
      expect(error.message).to.contain('no key labelled "lv-kek-missing"').and.to.contain('keys hsm init');
    });

    it('when the PIN file can be read by group or others, then the source refuses it without reading the PIN into any message', async () => {
      const pin = fs.readFileSync(token.pinFile, 'utf8').trim();
      fs.chmodSync(token.pinFile, 0o644);
      try {
        const error = await rejection(Pkcs11MasterKey.open(token.settings, 'lv-kek-a'));
        expect(error.message).to.contain('PKCS11_PIN_FILE must be readable by its owner only');
        expect(JSON.stringify({ message: error.message, cause: String(error.cause) })).to.not.contain(pin);
      } finally {
        fs.chmodSync(token.pinFile, 0o600);
      }
    });

    it('when a value is wrapped by the token, then it unwraps only with the same AAD and the wrapped form holds neither the value nor the key', async () => {
      const source = await open('lv-kek-a');
      const value = randomBytes(32);
      const wrapped = await source.wrap(value, 'data-key:pan-encryption:v1');
      expect(wrapped[0]).to.equal(2);
      expect(wrapped.length).to.equal(1 + 12 + 32 + 16);
      expect(wrapped.includes(value)).to.equal(false);
      expect(await source.unwrap(wrapped, 'data-key:pan-encryption:v1')).to.deep.equal(value);
      // Moved onto another key's row (an insider with DB write access): GCM authentication fails in the token.
      await rejection(source.unwrap(wrapped, 'data-key:pan-encryption:v2'));
      const flipped = Buffer.from(wrapped);
      flipped[20] = flipped[20]! ^ 1;
      await rejection(source.unwrap(flipped, 'data-key:pan-encryption:v1'));
      // Another key in the same token does not open it either.
      await rejection((await open('lv-kek-b')).unwrap(wrapped, 'data-key:pan-encryption:v1'));
      expect(source.readiness()).to.deep.equal({ ready: true });
      expect(source.location).to.deep.include({
        source: 'pkcs11',
        tokenLabel: token.tokenLabel,
        keyLabel: 'lv-kek-a',
        keyCheckValue: kekA.keyCheckValue,
      });
      expect(source.keyId).to.equal(kekA.keyId);
    });
  });

  describe('on the database', () => {
    let db: TestDatabase;
    beforeEach(async () => {
      db = await createTestDatabase();
      await migrateToLatest(db.knex);
    });
    afterEach(async () => db.close());

    it('when cards are tokenised and looked up with the master key in the token, then they round trip and the hot path makes no token call', async () => {
      const source = await open('lv-kek-a');
      const fx = await keysFixture(db, { source });
      const kekIds = (await db.knex('data_keys').whereNotNull('wrapped_key').select('kek_id', 'wrapped_key')) as {
        kek_id: string;
        wrapped_key: Buffer;
      }[];
      expect(new Set(kekIds.map((r) => r.kek_id))).to.deep.equal(new Set([kekA.keyId]));
      expect(kekIds.every((r) => r.wrapped_key[0] === 2)).to.equal(true);

      const vault = new VaultService(db.knex, fx.ring, vaultOptions);
      await vault.tokenise({ kind: 'pan', pan: generatePans(1, '555555')[0]! }); // loads the ring
      const before = recorder.calls.length;
      const cards: { pan: string; token: string }[] = [];
      for (const pan of generatePans(20))
        cards.push({ pan, token: (await vault.tokenise({ kind: 'pan', pan })).card.token });
      for (const card of cards) {
        expect((await vault.tokenise({ kind: 'pan', pan: card.pan })).card.token).to.equal(card.token);
        expect(await vault.detokenise(card.token, 'hsm round trip', caller)).to.deep.equal({ pan: card.pan });
      }
      expect(recorder.calls.slice(before).map((c) => c.method)).to.deep.equal([]);

      // The inventory says where the master key lives, its key check value and cryptoperiod.
      const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'lv-inv-')), 'inventory');
      expect((await fx.run('inventory', '--out', out)).code).to.equal(0);
      const inventory = JSON.parse(fs.readFileSync(`${out}.json`, 'utf8')) as {
        currentMasterKey: Record<string, unknown>;
      };
      expect(inventory.currentMasterKey).to.deep.include({
        kekId: kekA.keyId,
        source: 'pkcs11',
        tokenLabel: token.tokenLabel,
        keyLabel: 'lv-kek-a',
        keyCheckValue: kekA.keyCheckValue,
        cryptoperiodDays: 730,
        overdue: false,
      });
      expect(fs.readFileSync(`${out}.md`, 'utf8')).to.contain(`key check value ${kekA.keyCheckValue}`);
      const listed = await fx.run('list');
      expect(listed.stdout).to.contain(
        `master key ${kekA.keyId}: source pkcs11, token "${token.tokenLabel}", key label "lv-kek-a", key check value ${kekA.keyCheckValue}`,
      );
      expect(listed.stdout).to.match(/cryptoperiod 730 d, 7(29|30) days left/);
    });

    it('when key_ring_generation moves with no new data key (an insider bumping it, a retirement), then the ring reloads without the token: no token call on the hot path, and cards still tokenise while the token is away', async () => {
      const source = await open('lv-kek-a');
      await keysFixture(db, { source });
      const ring = new KeyRing(db.knex, source, 20);
      const vault = new VaultService(db.knex, ring, vaultOptions);
      await vault.tokenise({ kind: 'pan', pan: generatePans(1, '555555')[0]! }); // loads the ring
      const bump = () => db.knex('key_ring_generation').where({ id: 1 }).increment('generation', 1);
      const [first, second] = generatePans(2, '411111');

      await bump();
      await new Promise((r) => setTimeout(r, 40));
      const before = recorder.calls.length;
      await vault.tokenise({ kind: 'pan', pan: first! });
      expect(recorder.calls.slice(before).map((c) => c.method)).to.deep.equal([]);
      const generation = ring.loadedGeneration;

      const bringBack = token.takeAway();
      try {
        await bump();
        await new Promise((r) => setTimeout(r, 40));
        const card = (await vault.tokenise({ kind: 'pan', pan: second! })).card;
        expect(await vault.detokenise(card.token, 'token away', caller)).to.deep.equal({ pan: second });
        expect(ring.loadedGeneration).to.equal(generation + 1);
      } finally {
        bringBack();
      }
    });

    it('when the master key is rotated env → token → another token key → file, then every data key and seal follows, the data is untouched, and each old key opens nothing', async () => {
      const envKeyBase64 = randomBytes(32).toString('base64');
      const start = await keysFixture(db, { masterKeyBase64: envKeyBase64 });
      const vault = new VaultService(db.knex, start.ring, vaultOptions);
      const cards: { pan: string; token: string }[] = [];
      for (const pan of generatePans(5))
        cards.push({ pan, token: (await vault.tokenise({ kind: 'pan', pan })).card.token });
      const ciphertexts = await db.knex('cards').orderBy('token').select('token', 'pan_ciphertext');

      // env → pkcs11, configured as an operator would: the token key current, the env key previous.
      const env = { ...(await testEnv()), ...token.env('lv-kek-a'), MASTER_KEY_PREVIOUS: envKeyBase64 };
      const toToken = await loadMasterKey(
        loadConfig(env).masterKey,
        loadConfig(env).masterKeyPrevious,
        loadConfig(env).masterKeyPreviousSources,
      );
      opened.push(toToken.source);
      const steps: [MasterKeySource, string][] = [[toToken.source, kekA.keyId]];
      // pkcs11 → pkcs11 (a new key in the token: PKCS11_PREVIOUS_KEY_LABEL).
      const toB = await loadMasterKey(
        loadConfig({ ...env, ...token.env('lv-kek-b'), PKCS11_PREVIOUS_KEY_LABEL: 'lv-kek-a' }).masterKey,
        [],
        loadConfig({ ...env, ...token.env('lv-kek-b'), PKCS11_PREVIOUS_KEY_LABEL: 'lv-kek-a' })
          .masterKeyPreviousSources,
      );
      opened.push(toB.source);
      steps.push([toB.source, kekB.keyId]);
      // pkcs11 → file (leaving the token).
      const fileKey = new LocalMasterKey(randomBytes(32), 'file key', { source: 'file', where: 'file test' });
      steps.push([new MasterKeySet(fileKey, [await open('lv-kek-b')]), fileKey.keyId]);

      for (const [source, expected] of steps) {
        const fx = await keysFixture(db, { source, policy: { singleOperator: true } });
        const res = await fx.run('rotate', '--purpose', 'master', '--apply');
        expect(res.code, res.stderr).to.equal(0);
        expect(
          new Set((await db.knex('data_keys').whereNotNull('wrapped_key').select('kek_id')).map((r) => r.kek_id)),
        ).to.deep.equal(new Set([expected]));
      }
      expect(await db.knex('cards').orderBy('token').select('token', 'pan_ciphertext')).to.deep.equal(ciphertexts);
      // The file key alone (every previous source removed) reads every card; the token keys open nothing.
      const after = new VaultService(db.knex, new KeyRing(db.knex, fileKey, 50), vaultOptions);
      for (const card of cards) {
        expect(await after.detokenise(card.token, 'after rotations', caller)).to.deep.equal({ pan: card.pan });
      }
      for (const label of ['lv-kek-a', 'lv-kek-b']) {
        expect(String(await rejection(new KeyRing(db.knex, await open(label), 50).reload()))).to.contain(
          'cannot unwrap data key',
        );
      }
      const rotated = (await db.knex('audit_events').where({ action: 'master-key.rotated' }).orderBy('seq')) as {
        resource: string;
      }[];
      expect(rotated.map((r) => r.resource)).to.deep.equal(
        [kekA.keyId, kekB.keyId, fileKey.keyId].map((id) => `master-key:${id}`),
      );
      expect((await verifyAuditChain(db.knex)).ok).to.equal(true);
    });

    it('when keys hsm init cannot be audited after data keys were already wrapped under the new key (a first installation naming it, another instance starting), then the undo keeps the key instead of stranding them', async () => {
      const created = await createMasterKeyInToken(token.settings, 'lv-kek-undo-used');
      const source = await open('lv-kek-undo-used');
      await keysFixture(db, { source }); // ensureInitialKeys: every data key wrapped under it
      expect(await db.knex('data_keys').where({ kek_id: created.keyId })).to.have.length.greaterThan(0);
      const outcome = await destroyCreatedTokenKey(token.settings, created, db.knex);
      const admin = recorder.quiet(() => adminSession(token));
      try {
        expect(recorder.quiet(() => findByLabel(admin.api, admin.session, 'lv-kek-undo-used'))).to.have.length(1);
      } finally {
        recorder.quiet(() => admin.close());
      }
      expect(outcome).to.match(/^kept: .*data_keys/);
      await new KeyRing(db.knex, source, 50).reload();

      // A key nothing uses yet is destroyed as before.
      const unused = await createMasterKeyInToken(token.settings, 'lv-kek-undo-unused');
      expect(await destroyCreatedTokenKey(token.settings, unused, db.knex)).to.equal('destroyed');
      const again = recorder.quiet(() => adminSession(token));
      try {
        expect(recorder.quiet(() => findByLabel(again.api, again.session, 'lv-kek-undo-unused'))).to.have.length(0);
      } finally {
        recorder.quiet(() => again.close());
      }
    });

    it('when the token goes away in the middle of a rotation, then nothing is half-written, and the rotation resumes once it is back', async () => {
      const envKey = new LocalMasterKey(randomBytes(32), 'env key');
      await keysFixture(db, { source: envKey });
      const tokenKey = await open('lv-kek-a');
      let wraps = 0;
      let bringBack: (() => void) | undefined;
      // The outage strikes after the second data key was rewrapped, inside the rotation's transaction.
      const flaky: MasterKeySource = {
        keyId: tokenKey.keyId,
        description: tokenKey.description,
        location: tokenKey.location,
        readiness: () => tokenKey.readiness(),
        unwrap: (w, aad) => tokenKey.unwrap(w, aad),
        async wrap(value, aad) {
          wraps += 1;
          if (wraps === 3 && bringBack === undefined) bringBack = token.takeAway();
          return tokenKey.wrap(value, aad);
        },
      };
      const before = await db
        .knex('data_keys')
        .orderBy(['purpose', 'version'])
        .select('purpose', 'version', 'kek_id', 'wrapped_key');
      const fx = await keysFixture(db, { source: new MasterKeySet(flaky, [envKey]), policy: { singleOperator: true } });
      const failed = await fx.run('rotate', '--purpose', 'master', '--apply');
      expect(failed.code).to.equal(1);
      expect(failed.stderr).to.contain('MASTER_KEY_UNAVAILABLE');
      expect(tokenKey.readiness()).to.include({ ready: false, code: 'MASTER_KEY_UNAVAILABLE' });
      expect(
        await db
          .knex('data_keys')
          .orderBy(['purpose', 'version'])
          .select('purpose', 'version', 'kek_id', 'wrapped_key'),
      ).to.deep.equal(before);
      expect(await db.knex('audit_events').where({ action: 'master-key.rotated' })).to.have.length(0);

      bringBack!();
      const resumed = await fx.run('rotate', '--purpose', 'master', '--apply');
      expect(resumed.code, resumed.stderr).to.equal(0);
      expect(tokenKey.readiness()).to.deep.equal({ ready: true });
      expect(
        new Set((await db.knex('data_keys').whereNotNull('wrapped_key').select('kek_id')).map((r) => r.kek_id)),
      ).to.deep.equal(new Set([kekA.keyId]));
    });
    it('when the token goes away after the data keys but before the seals and audit-chain keys are rewrapped (token → file), then the rotation rolls back instead of leaving them under the old key', async () => {
      const tokenKey = await open('lv-kek-a');
      await keysFixture(db, { source: tokenKey });
      const dataKeys = Number(
        ((await db.knex('data_keys').whereNotNull('wrapped_key').count({ n: '*' })) as { n: string | number }[])[0]!.n,
      );
      expect(await db.knex('audit_chain_keys').where({ kek_id: kekA.keyId })).to.have.length.greaterThan(0);
      let unwraps = 0;
      let bringBack: (() => void) | undefined;
      // The outage strikes at the first unwrap that is not a data key's (a seal, an audit-chain key).
      const flaky: MasterKeySource = {
        keyId: tokenKey.keyId,
        description: tokenKey.description,
        readiness: () => tokenKey.readiness(),
        wrap: (value, aad) => tokenKey.wrap(value, aad),
        unwrap(wrapped, aad) {
          if (!aad.startsWith('loyalty-vault/data-key/') && bringBack === undefined) bringBack = token.takeAway();
          else unwraps += 1;
          return tokenKey.unwrap(wrapped, aad);
        },
      };
      const fileKey = new LocalMasterKey(randomBytes(32), 'file key', { source: 'file', where: 'file test' });
      const snapshot = async () => ({
        dataKeys: await db
          .knex('data_keys')
          .orderBy(['purpose', 'version'])
          .select('purpose', 'version', 'kek_id', 'wrapped_key'),
        chainKeys: await db.knex('audit_chain_keys').orderBy('version').select('version', 'kek_id', 'wrapped_key'),
      });
      const before = await snapshot();
      const fx = await keysFixture(db, {
        source: new MasterKeySet(fileKey, [flaky]),
        policy: { singleOperator: true },
      });
      try {
        const res = await fx.run('rotate', '--purpose', 'master', '--apply');
        expect(unwraps).to.be.at.least(dataKeys);
        expect(res.stderr).to.contain('MASTER_KEY_UNAVAILABLE');
        expect(res.code).to.equal(1);
        expect(await snapshot()).to.deep.equal(before);
      } finally {
        bringBack?.();
      }
    });
  });

  describe('the service with the master key in the token', () => {
    it('when the token goes away, then /readyz is 503 MASTER_KEY_UNAVAILABLE while cards still tokenise from the key ring, and it is ready again when the token is back, without a restart', async () => {
      const svc = await startTestService({ env: await testEnv(token.env('lv-kek-a')) });
      try {
        const bearer = await signToken({ scope: 'tokens:write' });
        const ready = await svc.request('GET', '/readyz');
        expect(ready.status).to.equal(200);
        expect(ready.body.checks).to.deep.equal({ database: 'up', process: 'up', masterKey: 'up' });
        expect(svc.logs()).to.contain(`PKCS#11 token \\"${token.tokenLabel}\\", key \\"lv-kek-a\\"`);

        const bringBack = token.takeAway();
        let back = false;
        try {
          const down = await eventually(
            '/readyz 503',
            () => svc.request('GET', '/readyz'),
            (r) => r.status === 503,
          );
          expect(down.body.code).to.equal('MASTER_KEY_UNAVAILABLE');
          expect(down.body.checks).to.deep.equal({ database: 'up', process: 'up', masterKey: 'down' });
          expect(down.headers.get('retry-after')).to.equal('2');
          // /readyz answers anyone: the reason (token and key labels) is in the log, not the body.
          expect(down.body.detail).to.equal("The master-key source does not answer; the instance's log says why.");
          expect(down.text).not.to.contain(token.tokenLabel).and.not.to.contain('lv-kek-a');
          expect(svc.logs()).to.contain('master key not ready');
          const tokenised = await svc.request('POST', '/v1/tokens', {
            token: bearer,
            json: { pan: '4111111111111111' },
          });
          expect(tokenised.status, tokenised.text).to.be.oneOf([200, 201]);
          bringBack();
          back = true;
          const up = await eventually(
            '/readyz 200',
            () => svc.request('GET', '/readyz'),
            (r) => r.status === 200,
          );
          expect(up.body.checks).to.deep.equal({ database: 'up', process: 'up', masterKey: 'up' });
        } finally {
          if (!back) bringBack();
        }
      } finally {
        await svc.close();
      }
    });
  });

  describe('a PIN the token refuses', () => {
    it('when the PIN file holds a wrong PIN after an outage, then the source is unavailable saying so and does not try the same PIN again (a real token locks its PIN after a few wrong tries), and recovers once the file is corrected', async () => {
      const source = await open('lv-kek-a');
      const pin = fs.readFileSync(token.pinFile, 'utf8');
      fs.writeFileSync(token.pinFile, 'not-the-pin\n', { mode: 0o600 });
      const bringBack = token.takeAway(); // the library is finalised: every login is gone
      bringBack();
      try {
        const before = recorder.calls.length;
        for (let i = 0; i < 3; i += 1) {
          await source.refreshReadiness();
          await new Promise((r) => setTimeout(r, 1_100)); // past the probe interval
        }
        const logins = recorder.calls.slice(before).filter((c) => c.method === 'C_Login');
        expect(logins, 'C_Login attempts with the same wrong PIN').to.have.length(1);
        const state = source.readiness();
        expect(state).to.include({ ready: false, code: 'MASTER_KEY_UNAVAILABLE' });
        expect(state.ready ? '' : state.detail)
          .to.contain('PIN')
          .and.not.contain('not-the-pin');
        const wrap = await rejection(source.wrap(randomBytes(32), 'pin-test'));
        expect(wrap.code).to.equal('MASTER_KEY_UNAVAILABLE');
      } finally {
        fs.writeFileSync(token.pinFile, pin, { mode: 0o600 });
      }
      await eventually(
        'ready again',
        async () => {
          await source.refreshReadiness();
          return source.readiness();
        },
        (state) => state.ready,
      );
    });
  });

  describe('the calls the code made (recorded over the whole file)', () => {
    it('when the whole file has run, then the code under test never asked for the key value, never wrapped a key out of the token and never changed an object', () => {
      expect(recorder.calls.length).to.be.greaterThan(50);
      const asked = recorder.calls.filter((c) => c.attributes.includes(pkcs11js.CKA_VALUE));
      expect(asked).to.deep.equal([]);
      const forbidden = recorder.calls.filter((c) =>
        ['C_WrapKey', 'C_SetAttributeValue', 'C_CopyObject', 'C_DeriveKey', 'C_DigestKey'].includes(c.method),
      );
      expect(forbidden).to.deep.equal([]);
      // And what it did use: GCM inside the token.
      expect(recorder.calls.some((c) => c.method === 'C_EncryptInit')).to.equal(true);
      expect(recorder.calls.some((c) => c.method === 'C_DecryptInit')).to.equal(true);
    });
  });
});
