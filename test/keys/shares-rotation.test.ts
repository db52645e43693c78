/**
 * Master-key rotation into and out of the shares source (issue 19): env → shares, PKCS#11 → shares
 * (a fresh key re-wraps everything and is split among the custodians, never written in clear),
 * shares → PKCS#11 (the previous key rebuilt from the previous split's share files,
 * MASTER_KEY_PREVIOUS_SOURCE=shares), the same dual control as every rotation, a failure midway rolled
 * back and run again, and afterwards the new source alone reads every card. Real database (PGlite or
 * PostgreSQL) and a real SoftHSM2 token.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { verifyAuditChain } from '../../src/audit/audit-log.js';
import { VaultService } from '../../src/cards/vault-service.js';
import { loadConfig, type Env } from '../../src/config/config.js';
import { AppError } from '../../src/errors/app-error.js';
import { SHARE_FILE_TYPE } from '../../src/keys/key-shares.js';
import { referenceKeyAad } from '../../src/keys/reference-digests.js';
import { KeyRing } from '../../src/keys/key-ring.js';
import { loadMasterKey, type MasterKeySource } from '../../src/keys/master-key-source.js';
import { Pkcs11MasterKey, createMasterKeyInToken } from '../../src/keys/master-key-sources/pkcs11.js';
import { clearShareFile, custodianKey } from '../../src/keys/unseal-client.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { generatePans } from '../support/pans.js';
import { startTestService, testEnv } from '../support/harness.js';
import { createSoftHsmToken, type SoftHsmToken } from '../support/softhsm.js';
import { approve, requestId, threeCustodians, type Person } from './custodians-fixture.js';
import { keysFixture, type KeysFixture } from './keys-context.js';

const vaultOptions = { detokenise: { enabled: true, perMinute: 1000 } };
const caller = { subject: 'rotation-test', shopperRef: undefined, origin: 'test' };
const development: Env = { NODE_ENV: 'development' };

/**
 * A source whose data-key unwraps, once armed, fail from the `failAt`-th on, as a token taken away in
 * the middle of the re-wrap would (earlier data keys are already re-wrapped in the transaction).
 */
function failingAfter(inner: MasterKeySource, failAt: number): MasterKeySource & { arm(): void } {
  let unwraps = 0;
  let armed = false;
  return {
    arm: () => {
      armed = true;
    },
    keyId: inner.keyId,
    description: inner.description,
    location: inner.location,
    wrap: (key, aad) => inner.wrap(key, aad),
    unwrap: (wrapped, aad) => {
      if (armed && aad.startsWith('loyalty-vault/data-key/')) unwraps += 1;
      if (armed && unwraps >= failAt)
        return Promise.reject(new AppError('MASTER_KEY_UNAVAILABLE', { detail: 'token away' }));
      return inner.unwrap(wrapped, aad);
    },
    readiness: () => ({ ready: true }),
  };
}

describe('master-key rotation into and out of the shares source', function () {
  this.timeout(240_000);
  let db: TestDatabase;
  let dir: string;
  let token: SoftHsmToken | undefined;
  const opened: { close?(): Promise<void> }[] = [];

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-shares-rot-'));
    db = await createTestDatabase({ migrated: true });
  });
  afterEach(async () => {
    for (const source of opened.splice(0)) await source.close?.();
    await db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  after(() => token?.remove());

  /** Custodians and five cards under the fixture's master key. */
  async function setUp(fx: KeysFixture): Promise<{ people: Person[]; cards: { pan: string; token: string }[] }> {
    const people = await threeCustodians(fx, dir);
    const vault = new VaultService(db.knex, fx.ring, vaultOptions);
    const cards = [];
    for (const pan of generatePans(5))
      cards.push({ pan, token: (await vault.tokenise({ kind: 'pan', pan })).card.token });
    return { people, cards };
  }

  async function approvedToShares(fx: KeysFixture, a: Person, b: Person): Promise<string> {
    const id = await requestId(
      fx,
      'rotate',
      '--purpose',
      'master',
      '--to',
      'shares',
      '--threshold',
      '2',
      '--all-custodians',
    );
    for (const who of [a, b]) expect((await approve(fx, id, who)).code).to.equal(0);
    return id;
  }

  const applyToShares = (fx: KeysFixture, out: string, ...request: string[]) =>
    fx.run(
      'rotate',
      '--purpose',
      'master',
      '--to',
      'shares',
      '--threshold',
      '2',
      '--all-custodians',
      '--out',
      out,
      '--apply',
      ...request,
    );

  /** Two custodians reveal their shares of the new split into 0600 files (keys shares reveal). */
  async function revealed(files: string[], people: Person[], which: string[]): Promise<string[]> {
    const out: string[] = [];
    for (const name of which) {
      const person = people.find((p) => p.name === name)!;
      const file = files.find((f) => f.endsWith(`.${name}.share.json`))!;
      const text = await clearShareFile(
        fs.readFileSync(file, 'utf8'),
        custodianKey(fs.readFileSync(person.privateKey, 'utf8')),
      );
      const clear = path.join(dir, `${name}-${randomBytes(3).toString('hex')}.clear.json`);
      fs.writeFileSync(clear, text, { mode: 0o600 });
      out.push(clear);
    }
    return out;
  }

  /** The new source alone (the old one removed): every card reads and tokenises to the same token. */
  async function readsEveryCard(source: MasterKeySource, cards: { pan: string; token: string }[]): Promise<void> {
    const vault = new VaultService(db.knex, new KeyRing(db.knex, source, 50), vaultOptions);
    for (const card of cards) {
      expect(await vault.detokenise(card.token, 'rotation check', caller)).to.deep.equal({ pan: card.pan });
      expect((await vault.tokenise({ kind: 'pan', pan: card.pan })).card.token).to.equal(card.token);
    }
    expect((await verifyAuditChain(db.knex)).ok).to.equal(true);
  }

  const kekIds = async () =>
    new Set((await db.knex('data_keys').whereNotNull('wrapped_key').select('kek_id')).map((r) => r.kek_id));

  /** env → shares, checked end to end; returns what the next step needs. */
  async function envToShares() {
    const fx = await keysFixture(db, { policy: { propagationMs: 0 } });
    const { people, cards } = await setUp(fx);
    const [alice, bob] = people as [Person, Person];
    const out = path.join(dir, 'split');
    const id = await approvedToShares(fx, alice, bob);
    const res = await applyToShares(fx, out, '--request', id);
    expect(res.code, res.stderr).to.equal(0);
    const keyId = /MASTER_KEY_SHARES_KEY_ID=(local:[A-Za-z0-9_-]{16})/.exec(res.stdout)?.[1];
    expect(keyId).to.be.a('string');
    expect(keyId).to.not.equal(fx.masterKey.keyId);
    const files = fs.readdirSync(out).map((f) => path.join(out, f));
    expect(files).to.have.length(3);
    for (const f of files) {
      expect(fs.statSync(f).mode & 0o777).to.equal(0o600);
      expect(JSON.parse(fs.readFileSync(f, 'utf8')).type).to.equal(SHARE_FILE_TYPE); // encrypted to its holder
    }
    return { fx, people, cards, keyId: keyId!, files, requestId: id };
  }

  it('when the rotation into shares has no request, or a request approved by one custodian, or a plain master rotation request, then it is refused, audited, and nothing changes', async () => {
    const fx = await keysFixture(db, { policy: { propagationMs: 0 } });
    const { people } = await setUp(fx);
    const [alice, bob] = people as [Person, Person];
    const out = path.join(dir, 'refused');
    const none = await applyToShares(fx, out);
    expect(none.code).to.equal(1);
    expect(none.stderr).to.contain('DUAL_CONTROL_REQUIRED');
    const lonely = await requestId(
      fx,
      'rotate',
      '--purpose',
      'master',
      '--to',
      'shares',
      '--threshold',
      '2',
      '--all-custodians',
    );
    expect((await approve(fx, lonely, alice)).code).to.equal(0);
    const one = await applyToShares(fx, out, '--request', lonely);
    expect(one.stderr).to.contain('DUAL_CONTROL_REQUIRED');
    const plain = await requestId(fx, 'rotate', '--purpose', 'master');
    for (const who of [alice, bob]) expect((await approve(fx, plain, who)).code).to.equal(0);
    const mismatch = await applyToShares(fx, out, '--request', plain);
    expect(mismatch.stderr).to.contain('KEY_REQUEST_MISMATCH');
    expect(await kekIds()).to.deep.equal(new Set([fx.masterKey.keyId]));
    expect(fs.existsSync(out)).to.equal(false);
    expect(await db.knex('master_key_splits').count({ n: '*' }).first()).to.deep.include({ n: 0 } as never);
    const denied = await db.knex('audit_events').where({ action: 'key.rotate', outcome: 'denied' });
    expect(denied).to.have.length(3);
  });

  it('when the master key is rotated from env into shares, then every key is re-wrapped by a fresh key that exists only as the encrypted shares, and two revealed shares alone read every card', async () => {
    const { fx, people, cards, keyId, files } = await envToShares();
    expect(await kekIds()).to.deep.equal(new Set([keyId]));
    const split = await db.knex('master_key_splits').where({ state: 'active' }).first();
    expect(split.kek_id).to.equal(keyId);
    const masters = await db.knex('master_keys').orderBy('state');
    expect(masters.map((m) => [m.kek_id, m.state])).to.deep.equal([
      [keyId, 'active'],
      [fx.masterKey.keyId, 'retired'],
    ]);
    const rotated = await db.knex('audit_events').where({ action: 'master-key.rotated' }).first();
    expect(JSON.stringify(rotated.details)).to.contain('"to":"shares"').and.to.contain('dual-control');
    expect(await db.knex('audit_events').where({ action: 'master-key.split', outcome: 'success' })).to.have.length(1);
    // The old key opens nothing any more.
    let failure: unknown;
    await new KeyRing(db.knex, fx.masterKey, 50).reload().catch((error: unknown) => (failure = error));
    expect(String(failure)).to.contain('cannot unwrap data key');
    // Only the new source: MASTER_KEY_SOURCE=shares with two of the three shares (bob and carol).
    const clear = await revealed(files, people, ['bob', 'carol']);
    const config = loadConfig({
      ...development,
      MASTER_KEY_SOURCE: 'shares',
      MASTER_KEY_SHARES_KEY_ID: keyId,
      MASTER_KEY_SHARE_FILES: clear.join(','),
    });
    const loaded = await loadMasterKey(config.masterKey, config.masterKeyPrevious, config.masterKeyPreviousSources);
    expect(loaded.source.keyId).to.equal(keyId);
    await readsEveryCard(loaded.source, cards);
    // The reference-digest key was rewrapped into the split too (src/keys/master-rewrap.ts).
    expect(JSON.stringify(rotated.details)).to.contain('"referenceKeys":[1]');
    const referenceKey = await db.knex('reference_digest_keys').where({ version: 1 }).first();
    expect(referenceKey.kek_id).to.equal(keyId);
    (await loaded.source.unwrap(Buffer.from(referenceKey.wrapped_key), referenceKeyAad(1))).fill(0);
  });

  it('when the old source fails midway through the re-wrap, then nothing is half-written (old key opens everything, no split, no file, request still pending) and the same request, run again, completes', async () => {
    const fx = await keysFixture(db, { policy: { propagationMs: 0 } });
    const { people, cards } = await setUp(fx);
    const [alice, bob] = people as [Person, Person];
    const id = await approvedToShares(fx, alice, bob);
    const before = await db
      .knex('data_keys')
      .orderBy(['purpose', 'version'])
      .select('purpose', 'version', 'wrapped_key', 'kek_id');
    const out = path.join(dir, 'split');
    // The third data key's unwrap fails: two are already re-wrapped in the transaction.
    const failing = failingAfter(fx.masterKey, 3);
    const broken = await keysFixture(db, { source: failing, policy: { propagationMs: 0 } });
    failing.arm();
    const failed = await applyToShares(broken, out, '--request', id);
    expect(failed.code).to.equal(1);
    expect(failed.stderr).to.contain('MASTER_KEY_UNAVAILABLE');
    expect(
      await db.knex('data_keys').orderBy(['purpose', 'version']).select('purpose', 'version', 'wrapped_key', 'kek_id'),
    ).to.deep.equal(before);
    expect(await db.knex('master_key_splits').count({ n: '*' }).first()).to.deep.include({ n: 0 } as never);
    expect(fs.existsSync(out) ? fs.readdirSync(out) : []).to.deep.equal([]);
    expect((await db.knex('key_requests').where({ id }).first()).executed_at).to.equal(null);
    await new KeyRing(db.knex, fx.masterKey, 50).reload();

    const again = await applyToShares(fx, out, '--request', id);
    expect(again.code, again.stderr).to.equal(0);
    const keyId = /MASTER_KEY_SHARES_KEY_ID=(local:[A-Za-z0-9_-]{16})/.exec(again.stdout)![1]!;
    const files = fs.readdirSync(out).map((f) => path.join(out, f));
    const clear = await revealed(files, people, ['alice', 'carol']);
    const source = (await loadMasterKey({ source: 'shares', keyId, shareFiles: clear })).source;
    await readsEveryCard(source, cards);
  });

  it("when a custodian leaves and the key is rotated from shares to a new split without them (§11 step 5), then the new shares read every card and the old shares, the leaver's included, rebuild a key that opens nothing", async () => {
    const { cards, people, keyId, files } = await envToShares();
    const [alice, bob] = people as [Person, Person];
    // The key CLI under the current split: MASTER_KEY_SOURCE=shares, MASTER_KEY_SHARE_FILES (alice, bob).
    const current = (
      await loadMasterKey({ source: 'shares', keyId, shareFiles: await revealed(files, people, ['alice', 'bob']) })
    ).source;
    const cli = await keysFixture(db, { source: current, policy: { propagationMs: 0 } });
    const id = await requestId(
      cli,
      'rotate',
      '--purpose',
      'master',
      '--to',
      'shares',
      '--threshold',
      '2',
      '--custodian',
      'alice',
      '--custodian',
      'bob',
    );
    for (const who of [alice, bob]) expect((await approve(cli, id, who)).code).to.equal(0);
    const out = path.join(dir, 'without-carol');
    const res = await cli.run(
      'rotate',
      '--purpose',
      'master',
      '--to',
      'shares',
      '--threshold',
      '2',
      '--custodian',
      'alice',
      '--custodian',
      'bob',
      '--out',
      out,
      '--apply',
      '--request',
      id,
    );
    expect(res.code, res.stderr).to.equal(0);
    const newKeyId = /MASTER_KEY_SHARES_KEY_ID=(local:[A-Za-z0-9_-]{16})/.exec(res.stdout)![1]!;
    const newFiles = fs.readdirSync(out).map((f) => path.join(out, f));
    expect(newFiles.map((f) => path.basename(f).split('.')[1])).to.have.members(['alice', 'bob']);
    const splits = (await db.knex('master_key_splits').orderBy('created_at').select('state', 'kek_id')) as {
      state: string;
      kek_id: string;
    }[];
    expect(splits.map((r) => [r.state, r.kek_id])).to.deep.equal([
      ['superseded', keyId],
      ['active', newKeyId],
    ]);
    // Carol's old share and another old holder's still rebuild the old key offline: it opens nothing now.
    const old = (
      await loadMasterKey({ source: 'shares', keyId, shareFiles: await revealed(files, people, ['carol', 'alice']) })
    ).source;
    let failure: unknown;
    await new KeyRing(db.knex, old, 50).reload().catch((error: unknown) => (failure = error));
    expect(String(failure)).to.contain('cannot unwrap data key');
    const next = (
      await loadMasterKey({
        source: 'shares',
        keyId: newKeyId,
        shareFiles: await revealed(newFiles, people, ['bob', 'alice']),
      })
    ).source;
    await readsEveryCard(next, cards);
  });

  describe('with a SoftHSM2 token', () => {
    before(() => {
      token = createSoftHsmToken('lv-rot');
    });

    it('when the master key is rotated from shares to a key in the token (MASTER_KEY_PREVIOUS_SOURCE=shares), then the token key alone reads every card afterwards', async () => {
      const { fx, people, cards, keyId, files } = await envToShares();
      const [alice, bob] = people as [Person, Person];
      await createMasterKeyInToken(token!.settings, 'lv-kek-from-shares');
      const clear = await revealed(files, people, ['alice', 'bob']);
      const env: Env = {
        ...development,
        ...token!.env('lv-kek-from-shares'),
        MASTER_KEY_PREVIOUS_SOURCE: 'shares',
        MASTER_KEY_PREVIOUS_SHARES_KEY_ID: keyId,
        MASTER_KEY_PREVIOUS_SHARE_FILES: clear.join(','),
      };
      // The service refuses the previous key's cleartext share files, as it refuses MASTER_KEY_SHARE_FILES.
      const refusal = await startTestService({ db, env: await testEnv(env) }).then(
        async (svc) => {
          await svc.close();
          return 'started';
        },
        (error: unknown) => (error as Error).message,
      );
      expect(refusal).to.contain('MASTER_KEY_PREVIOUS_SOURCE=shares is for the key CLI only');
      const config = loadConfig(env);
      const during = (await loadMasterKey(config.masterKey, config.masterKeyPrevious, config.masterKeyPreviousSources))
        .source;
      opened.push(during);
      const cli = await keysFixture(db, { source: during, policy: { propagationMs: 0 } });
      const id = await requestId(cli, 'rotate', '--purpose', 'master');
      for (const who of [alice, bob]) expect((await approve(cli, id, who)).code).to.equal(0);
      const res = await cli.run('rotate', '--purpose', 'master', '--apply', '--request', id);
      expect(res.code, res.stderr).to.equal(0);
      const tokenKey = await Pkcs11MasterKey.open(token!.settings, 'lv-kek-from-shares');
      opened.push(tokenKey);
      expect(await kekIds()).to.deep.equal(new Set([tokenKey.keyId]));
      for (const f of clear) fs.rmSync(f); // the previous split's shares are no longer needed
      await readsEveryCard(tokenKey, cards);
      expect(fx.masterKey.keyId).to.not.equal(tokenKey.keyId);
    });

    it('when the master key is rotated from the token into shares, then the token is not needed afterwards: two revealed shares alone read every card', async () => {
      await createMasterKeyInToken(token!.settings, 'lv-kek-to-shares');
      const tokenKey = await Pkcs11MasterKey.open(token!.settings, 'lv-kek-to-shares');
      opened.push(tokenKey);
      const fx = await keysFixture(db, { source: tokenKey, policy: { propagationMs: 0 } });
      const { people, cards } = await setUp(fx);
      const [alice, bob] = people as [Person, Person];
      const id = await approvedToShares(fx, bob, alice);
      const out = path.join(dir, 'split');
      const res = await applyToShares(fx, out, '--request', id);
      expect(res.code, res.stderr).to.equal(0);
      const keyId = /MASTER_KEY_SHARES_KEY_ID=(local:[A-Za-z0-9_-]{16})/.exec(res.stdout)![1]!;
      expect(await kekIds()).to.deep.equal(new Set([keyId]));
      await tokenKey.close();
      opened.splice(opened.indexOf(tokenKey), 1);
      const files = fs.readdirSync(out).map((f) => path.join(out, f));
      const clear = await revealed(files, people, ['carol', 'alice']);
      const source = (await loadMasterKey({ source: 'shares', keyId, shareFiles: clear })).source;
      await readsEveryCard(source, cards);
    });
  });

  it('when MASTER_KEY_PREVIOUS_SOURCE is another value or its settings are half given, then configuration names the problem', () => {
    const problems = (env: Env): string => {
      try {
        loadConfig({ ...development, MASTER_KEY: randomBytes(32).toString('base64'), ...env });
        return '';
      } catch (error) {
        return String((error as { problems?: string[] }).problems?.join('\n'));
      }
    };
    expect(problems({ MASTER_KEY_PREVIOUS_SOURCE: 'env' })).to.contain('MASTER_KEY_PREVIOUS_SOURCE must be shares');
    expect(problems({ MASTER_KEY_PREVIOUS_SHARES_KEY_ID: 'local:AAAAAAAAAAAAAAAA' })).to.contain(
      'need MASTER_KEY_PREVIOUS_SOURCE=shares',
    );
    expect(
      problems({ MASTER_KEY_PREVIOUS_SOURCE: 'shares', MASTER_KEY_PREVIOUS_SHARES_KEY_ID: 'local:AAAAAAAAAAAAAAAA' }),
    ).to.contain('needs MASTER_KEY_PREVIOUS_SHARE_FILES');
  });
});
