/**
 * The master key in custodians' shares (issue 19): the dual-controlled 2-of-3 split, a service that
 * starts sealed, unseal by custodians in any order through the real HTTP endpoint and the real
 * `keys unseal` client, refusals (wrong, duplicated, replayed, foreign), seal and restart, and no share
 * or key bytes in the database, the audit trail or the logs. Real database (PGlite or PostgreSQL).
 */
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { migrateToLatest } from '../../src/db/migrations.js';
import { remoteCommand } from '../../src/cli/keys-shares.js';
import { custodianKey, openShareFile, unsealSubmission } from '../../src/keys/unseal-client.js';
import { LocalMasterKey } from '../../src/keys/master-key-source.js';
import { signToken } from '../support/auth.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { TEST_PANS } from '../support/pans.js';
import { dumpEveryRow } from '../security/card-data-support.js';
import { approve, ed25519, requestId, threeCustodians, type Person } from './custodians-fixture.js';
import { keysFixture, type KeysFixture } from './keys-context.js';

const PAN = TEST_PANS.visa[0]!;

describe("master key in custodians' shares: split, sealed start, unseal, seal", function () {
  this.timeout(240_000);
  let db: TestDatabase;
  let fx: KeysFixture;
  let dir: string;
  let alice: Person;
  let bob: Person;
  let carol: Person;
  const shareFile: Record<string, string> = {};
  let writer: string;
  let token: string;
  let shopperRef: string;
  const services: TestService[] = [];

  /** The environment of a service whose master key is in shares (no MASTER_KEY anywhere). */
  const sharesEnv = async () => ({
    ...(await testEnv()),
    MASTER_KEY: undefined,
    MASTER_KEY_SOURCE: 'shares',
    MASTER_KEY_SHARES_KEY_ID: fx.masterKey.keyId,
  });
  const start = async (): Promise<TestService> => {
    const svc = await startTestService({ db, env: await sharesEnv() });
    services.push(svc);
    return svc;
  };
  const stop = async (svc: TestService): Promise<void> => {
    services.splice(services.indexOf(svc), 1);
    await svc.close();
  };
  const unsealAs = async (svc: TestService, who: Person) => {
    const status = (await svc.request('GET', '/v1/admin/unseal')).body;
    const submission = await unsealSubmission(
      status,
      fs.readFileSync(shareFile[who.name]!, 'utf8'),
      custodianKey(fs.readFileSync(who.privateKey, 'utf8')),
    );
    return { submission, response: await svc.request('POST', '/v1/admin/unseal', { json: { submission } }) };
  };
  const vaultEntries = async () =>
    (await db
      .knex('audit_events')
      .where('action', 'like', 'vault.%')
      .orderBy('seq')
      .select('action', 'actor', 'outcome', 'details')) as {
      action: string;
      actor: string;
      outcome: string;
      details: Record<string, unknown> | string;
    }[];
  const detailsOf = (d: Record<string, unknown> | string) =>
    typeof d === 'string' ? (JSON.parse(d) as Record<string, unknown>) : d;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-shares-'));
    db = await createTestDatabase();
    await migrateToLatest(db.knex);
    fx = await keysFixture(db, { policy: { propagationMs: 0 } });
    [alice, bob, carol] = await threeCustodians(fx, dir);

    // A card tokenised while the master key was still in MASTER_KEY.
    const before = await startTestService({ db, env: { ...(await testEnv()), MASTER_KEY: fx.masterKeyBase64 } });
    writer = await signToken({ scope: 'tokens:write tokens:read' });
    const created = await before.request('POST', '/v1/tokens', { token: writer, json: { pan: PAN } });
    expect(created.status, created.text).to.equal(201);
    token = created.body.token;
    shopperRef = created.body.shopperReference;
    await before.close();
  });

  after(async () => {
    for (const svc of [...services]) await svc.close();
    await db?.close();
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('when the split is run without two approvals, then it is refused and writes no share file', async () => {
    const out = path.join(dir, 'unapproved');
    const refused = await fx.run('shares', 'split', '--threshold', '2', '--all-custodians', '--out', out);
    expect(refused.code).to.equal(1);
    expect(refused.stderr).to.contain('DUAL_CONTROL_REQUIRED');
    expect(fs.existsSync(out)).to.equal(false);
    const lonely = await requestId(fx, 'split-master-key', '--threshold', '2', '--all-custodians');
    expect((await approve(fx, lonely, alice)).code).to.equal(0);
    const once = await fx.run(
      'shares',
      'split',
      '--threshold',
      '2',
      '--all-custodians',
      '--out',
      out,
      '--request',
      lonely,
    );
    expect(once.code).to.equal(1);
    expect(once.stderr).to.contain('DUAL_CONTROL_REQUIRED');
    expect(await db.knex('master_key_splits').count({ n: '*' }).first()).to.deep.include({ n: 0 } as never);
  });

  it('when two custodians approve a 2-of-3 split, then each custodian gets a 0600 file that only their key opens', async () => {
    const out = path.join(dir, 'shares');
    const id = await requestId(fx, 'split-master-key', '--threshold', '2', '--all-custodians');
    for (const who of [alice, carol]) expect((await approve(fx, id, who)).code).to.equal(0);
    const split = await fx.run(
      'shares',
      'split',
      '--threshold',
      '2',
      '--all-custodians',
      '--out',
      out,
      '--request',
      id,
    );
    expect(split.code, split.stderr).to.equal(0);
    const files = fs.readdirSync(out);
    expect(files).to.have.length(3);
    for (const who of [alice, bob, carol]) {
      const file = path.join(
        out,
        files.find((f) => f.includes(`.${who.name}.`))!,
      );
      expect(fs.statSync(file).mode & 0o777).to.equal(0o600);
      shareFile[who.name] = file;
    }
    // Bob's key does not open Alice's file.
    await openShareFile(
      fs.readFileSync(shareFile['alice']!, 'utf8'),
      custodianKey(fs.readFileSync(bob.privateKey, 'utf8')),
    ).then(
      () => expect.fail('opened with the wrong key'),
      (error: { code?: string }) => expect(error.code).to.equal('MASTER_KEY_SHARE_INVALID'),
    );
    const status = await fx.run('shares', 'status', '--json');
    expect(status.code, status.stdout).to.equal(0);
    expect(JSON.parse(status.stdout)).to.include({
      threshold: 2,
      total: 3,
      masterKeyId: fx.masterKey.keyId,
      sealVerifies: true,
    });
    // The inventory says where the key lives: M of N and who holds a share (PCI DSS 3.6.1.1, 3.6.1.2).
    const list = await fx.run('list');
    expect(list.stdout).to.match(/split msp_\S+: 2 of 3 shares, held by .*record seal verified/);
    for (const name of ['alice', 'bob', 'carol']) expect(list.stdout).to.contain(name);
    const inventory = path.join(dir, 'inventory');
    expect((await fx.run('inventory', '--out', inventory)).code).to.equal(0);
    const doc = JSON.parse(fs.readFileSync(`${inventory}.json`, 'utf8')) as {
      currentMasterKey: { split: { threshold: number; total: number; holders: string[]; sealVerified: boolean } };
    };
    expect(doc.currentMasterKey.split).to.deep.include({ threshold: 2, total: 3, sealVerified: true });
    expect(doc.currentMasterKey.split.holders).to.have.members(['alice', 'bob', 'carol']);
  });

  it('when the service starts with MASTER_KEY_SOURCE=shares, then it is sealed: /readyz 503 VAULT_SEALED, card routes 503, the balance answers', async () => {
    const svc = await start();
    const ready = await svc.request('GET', '/readyz');
    expect(ready.status).to.equal(503);
    expect(ready.body).to.include({ code: 'VAULT_SEALED' });
    expect(ready.body.checks).to.deep.equal({ database: 'up', process: 'up', masterKey: 'down' });
    expect(svc.service.keyRing.loadedGeneration).to.equal(-1); // nothing unwrapped at start
    for (const [method, p, json] of [
      ['POST', '/v1/tokens', { pan: PAN }],
      ['GET', `/v1/tokens/${token}`, undefined],
    ] as const) {
      const res = await svc.request(method, p, { token: writer, ...(json === undefined ? {} : { json }) });
      expect(res.status, `${method} ${p}`).to.equal(503);
      expect(res.body).to.include({ code: 'VAULT_SEALED' });
      expect(res.headers.get('content-type')).to.contain('application/problem+json');
    }
    const webhook = await svc.request('POST', '/v1/webhooks/stripe', { json: {} });
    expect(webhook.status, webhook.text).to.equal(503); // gateways redeliver after a 5xx
    expect(webhook.body).to.include({ code: 'VAULT_SEALED' });
    const balance = await svc.request('GET', `/v1/shoppers/${shopperRef}/balance`, {
      token: await signToken({ scope: 'loyalty:read', shopperRef, subject: 'app-user' }),
    });
    expect(balance.status, balance.text).to.equal(200);
    expect(balance.body).to.have.property('available');
    await stop(svc);
  });

  it('when one custodian submits, then it stays sealed; a duplicate, a replay and a wrong share are refused and audited; a second custodian unseals', async () => {
    const svc = await start();
    const first = await unsealAs(svc, carol);
    expect(first.response.status, first.response.text).to.equal(200);
    expect(first.response.body).to.include({ sealed: true, progress: 1, threshold: 2 });
    expect((await svc.request('POST', '/v1/tokens', { token: writer, json: { pan: PAN } })).status).to.equal(503);

    // The same custodian again (a fresh submission, and the captured one replayed): refused.
    expect((await unsealAs(svc, carol)).response.body).to.include({ code: 'UNSEAL_SHARE_DUPLICATE' });
    const replay = await svc.request('POST', '/v1/admin/unseal', { json: { submission: first.submission } });
    expect(replay.status).to.equal(409);
    expect(replay.body).to.include({ code: 'UNSEAL_SHARE_DUPLICATE' });

    // Bob submits Alice's share file opened... with his own key it cannot open; so he signs a share
    // of his that an insider swapped: here, Alice's share re-encrypted and signed by Bob.
    const status = (await svc.request('GET', '/v1/admin/unseal')).body;
    const aliceShare = await openShareFile(
      fs.readFileSync(shareFile['alice']!, 'utf8'),
      custodianKey(fs.readFileSync(alice.privateKey, 'utf8')),
    );
    const bobFile = JSON.parse(fs.readFileSync(shareFile['bob']!, 'utf8')) as Record<string, unknown>;
    const { sealTo, x25519PublicFromEd25519 } = await import('../../src/keys/master-key-sources/share-crypto.js');
    const { custodianShareContext } = await import('../../src/keys/key-shares.js');
    const bobX = (custodianKey(fs.readFileSync(bob.privateKey, 'utf8')).export({ format: 'jwk' }) as { x: string }).x;
    const forged = {
      ...bobFile,
      envelope: sealTo(
        x25519PublicFromEd25519(Buffer.from(bobX, 'base64url')),
        aliceShare.share,
        custodianShareContext(String(bobFile['splitId']), String(bobFile['keyThumbprint'])),
      ),
    };
    aliceShare.share.fill(0);
    const wrong = await unsealSubmission(
      status,
      JSON.stringify(forged),
      custodianKey(fs.readFileSync(bob.privateKey, 'utf8')),
    );
    const refused = await svc.request('POST', '/v1/admin/unseal', { json: { submission: wrong } });
    expect(refused.status, refused.text).to.equal(422);
    expect(refused.body).to.include({ code: 'UNSEAL_SHARE_REFUSED' });
    expect((await svc.request('GET', '/v1/admin/unseal')).body).to.include({ sealed: true, progress: 1 });

    // Alice, through the real `keys unseal` client: the threshold is reached.
    const printed: string[] = [];
    const io = { stdout: sink(printed), stderr: sink(printed) };
    const code = await remoteCommand(
      'unseal',
      ['--url', svc.url, '--share', shareFile['alice']!, '--key', alice.privateKey],
      io,
    );
    expect(code, printed.join('')).to.equal(0);
    expect(printed.join('')).to.contain('UNSEALED');

    const ready = await svc.request('GET', '/readyz');
    expect(ready.status, ready.text).to.equal(200);
    expect(ready.body.checks).to.include({ masterKey: 'up' });
    // The same PAN finds the card tokenised under MASTER_KEY: the same master key, rebuilt.
    const again = await svc.request('POST', '/v1/tokens', { token: writer, json: { pan: PAN } });
    expect(again.status, again.text).to.equal(200);
    expect(again.body.token).to.equal(token);
    expect((await svc.request('GET', `/v1/tokens/${token}`, { token: writer })).status).to.equal(200);
    const fresh = await svc.request('POST', '/v1/tokens', { token: writer, json: { pan: TEST_PANS.mastercard[0] } });
    expect(fresh.status, fresh.text).to.equal(201);

    // Every submission is in the audit trail with who made it, in order, then the unseal; a refusal
    // repeated by the same custodian is one entry with its count.
    const entries = await vaultEntries();
    expect(entries.map((e) => [e.action, e.actor, e.outcome])).to.deep.equal([
      ['vault.unseal.share-submitted', 'carol', 'success'],
      ['vault.unseal.share-submitted', 'carol', 'failure'],
      ['vault.unseal.share-submitted', 'bob', 'failure'],
      ['vault.unseal.share-submitted', 'alice', 'success'],
      ['vault.unsealed', 'system', 'success'],
    ]);
    expect(
      entries.map((e) => [detailsOf(e.details)['code'] ?? null, detailsOf(e.details)['count'] ?? null]),
    ).to.deep.equal([
      [null, null],
      ['UNSEAL_SHARE_DUPLICATE', 2],
      ['UNSEAL_SHARE_REFUSED', 1],
      [null, null],
      [null, null],
    ]);
    expect((await fx.run('audit', 'verify')).code).to.equal(0);

    // A captured submission replayed after the unseal: the vault is not sealed; after a seal: stale.
    expect((await svc.request('POST', '/v1/admin/unseal', { json: { submission: first.submission } })).body).to.include(
      { code: 'VAULT_NOT_SEALED' },
    );
    const sealed = await remoteCommand('seal', ['--url', svc.url, '--key', bob.privateKey], io);
    expect(sealed, printed.join('')).to.equal(0);
    expect((await svc.request('POST', '/v1/tokens', { token: writer, json: { pan: PAN } })).body).to.include({
      code: 'VAULT_SEALED',
    });
    expect((await svc.request('GET', '/readyz')).status).to.equal(503);
    const stale = await svc.request('POST', '/v1/admin/unseal', { json: { submission: first.submission } });
    expect(stale.status).to.equal(409);
    expect(stale.body).to.include({ code: 'UNSEAL_NONCE_STALE' });
    await stop(svc);
  });

  it('when shares are submitted in another order by other custodians, then it unseals; a restart seals it again', async () => {
    let svc = await start();
    for (const who of [bob, carol]) expect((await unsealAs(svc, who)).response.status).to.equal(200);
    expect((await svc.request('GET', '/readyz')).status).to.equal(200);
    expect((await svc.request('POST', '/v1/tokens', { token: writer, json: { pan: PAN } })).body.token).to.equal(token);
    await stop(svc);
    svc = await start();
    expect((await svc.request('GET', '/readyz')).body).to.include({ code: 'VAULT_SEALED' });
    expect((await svc.request('POST', '/v1/tokens', { token: writer, json: { pan: PAN } })).status).to.equal(503);
    await stop(svc);
  });

  it('when two custodians reveal their shares into 0600 files, then the key CLI rebuilds the master key from them (MASTER_KEY_SHARE_FILES)', async () => {
    const clear: string[] = [];
    for (const who of [carol, alice]) {
      const file = path.join(dir, `${who.name}.clear.json`);
      const revealed = await fx.run(
        'shares',
        'reveal',
        '--share',
        shareFile[who.name]!,
        '--key',
        who.privateKey,
        '--out',
        file,
      );
      expect(revealed.code, revealed.stderr).to.equal(0);
      expect(fs.statSync(file).mode & 0o777).to.equal(0o600);
      clear.push(file);
    }
    const wrongKey = await fx.run(
      'shares',
      'reveal',
      '--share',
      shareFile['bob']!,
      '--key',
      alice.privateKey,
      '--out',
      path.join(dir, 'x.json'),
    );
    expect(wrongKey.stderr).to.contain('MASTER_KEY_SHARE_INVALID');
    const { loadMasterKey } = await import('../../src/keys/master-key-source.js');
    const loaded = await loadMasterKey({ source: 'shares', keyId: fx.masterKey.keyId, shareFiles: clear });
    expect(loaded.source.readiness()).to.deep.equal({ ready: true });
    const wrapped = await loaded.source.wrap(Buffer.alloc(32, 9), 'aad');
    expect(await fx.masterKey.unwrap(wrapped, 'aad')).to.deep.equal(Buffer.alloc(32, 9));
    for (const file of clear) fs.rmSync(file);
  });

  it('when the key is re-split, then one without two approvals is refused, an approved one supersedes the first, the old share files are UNSEAL_SHARE_REFUSED and the new ones unseal; both splits and the refusals are audited', async () => {
    const first = (await db.knex('master_key_splits').where({ state: 'active' }).first()) as { id: string };
    const out = path.join(dir, 'resplit');
    const resplit = (...request: string[]) =>
      fx.run('shares', 'split', '--threshold', '2', '--all-custodians', '--out', out, ...request);
    const unapproved = await resplit();
    expect(unapproved.code).to.equal(1);
    expect(unapproved.stderr).to.contain('DUAL_CONTROL_REQUIRED');
    expect(fs.existsSync(out)).to.equal(false);
    const id = await requestId(fx, 'split-master-key', '--threshold', '2', '--all-custodians');
    expect((await approve(fx, id, bob)).code).to.equal(0);
    expect((await resplit('--request', id)).stderr).to.contain('DUAL_CONTROL_REQUIRED'); // one approval
    expect((await db.knex('master_key_splits').where({ state: 'active' }).first()).id).to.equal(first.id);
    expect((await approve(fx, id, carol)).code).to.equal(0);
    const done = await resplit('--request', id);
    expect(done.code, done.stderr).to.equal(0);
    const splits = (await db.knex('master_key_splits').orderBy('created_at').select('id', 'state')) as {
      id: string;
      state: string;
    }[];
    expect(splits.map((r) => r.state)).to.deep.equal(['superseded', 'active']);
    expect(splits[0]!.id).to.equal(first.id);

    const svc = await start();
    try {
      for (const who of [carol, alice]) {
        // The custodian's client refuses an old share before sending anything...
        const status = (await svc.request('GET', '/v1/admin/unseal')).body;
        const oldShare = fs.readFileSync(shareFile[who.name]!, 'utf8');
        const key = custodianKey(fs.readFileSync(who.privateKey, 'utf8'));
        const local = await unsealSubmission(status, oldShare, key).then(
          () => undefined,
          (error: { code?: string }) => error.code,
        );
        expect(local).to.equal('UNSEAL_SHARE_REFUSED');
        // ...and the instance refuses it from a client that does not check (an old or altered one).
        const submission = await unsealSubmission({ ...status, splitId: null }, oldShare, key);
        const refused = await svc.request('POST', '/v1/admin/unseal', { json: { submission } });
        expect(refused.status, refused.text).to.equal(422);
        expect(refused.body).to.include({ code: 'UNSEAL_SHARE_REFUSED' });
      }
      expect((await svc.request('GET', '/v1/admin/unseal')).body).to.include({ sealed: true, progress: 0 });
      const files = fs.readdirSync(out);
      for (const who of [alice, bob, carol])
        shareFile[who.name] = path.join(
          out,
          files.find((f) => f.includes(`.${who.name}.`))!,
        );
      for (const who of [carol, alice]) expect((await unsealAs(svc, who)).response.status).to.equal(200);
      expect((await svc.request('POST', '/v1/tokens', { token: writer, json: { pan: PAN } })).body.token).to.equal(
        token,
      );
    } finally {
      await stop(svc);
    }
    const splitEntries = (await db
      .knex('audit_events')
      .where({ action: 'master-key.split' })
      .orderBy('seq')
      .select('outcome', 'details')) as { outcome: string; details: Record<string, unknown> | string }[];
    const successes = splitEntries.filter((e) => e.outcome === 'success').map((e) => detailsOf(e.details));
    expect(successes).to.have.length(2);
    expect(successes[1]).to.include({ supersedes: first.id, requestId: id, authorisation: 'dual-control' });
    expect(splitEntries.filter((e) => e.outcome === 'denied').length).to.be.at.least(3); // the first test's two, these two
    const refusedSubmissions = (await vaultEntries()).filter(
      (e) => e.outcome === 'failure' && JSON.stringify(e.details).includes('UNSEAL_SHARE_REFUSED'),
    );
    expect(refusedSubmissions.map((e) => e.actor)).to.include.members(['carol', 'alice']);
  });

  it('when an insider with database write access swaps two holders for keys of their own and submits shares of a key they chose, then UNSEAL_KEY_MISMATCH: it stays sealed', async () => {
    const { split } = await import('shamir-secret-sharing');
    const { jwkOf } = await import('../../src/keys/custodians.js');
    const { sealTo, shareDigest, x25519PublicFromEd25519 } =
      await import('../../src/keys/master-key-sources/share-crypto.js');
    const { custodianShareContext, SHARE_FILE_TYPE } = await import('../../src/keys/key-shares.js');
    const row = (await db.knex('master_key_splits').where({ state: 'active' }).first()) as {
      id: string;
      holders: unknown;
    };
    const original = typeof row.holders === 'string' ? row.holders : JSON.stringify(row.holders);
    const holders = JSON.parse(original) as Record<string, unknown>[];
    const chosen = Uint8Array.from((await import('node:crypto')).randomBytes(32));
    const forged = await split(chosen, 2, 2);
    const mallories = ['mallory1', 'mallory2'].map((n) => ed25519(dir, n));
    const files: string[] = [];
    for (const [i, m] of mallories.entries()) {
      const pub = (await import('node:crypto')).createPublicKey(fs.readFileSync(m.publicKey, 'utf8'));
      const { jwk, thumbprint } = await jwkOf(pub);
      const share = forged[i]!;
      holders[i] = {
        ...holders[i],
        x: jwk.x,
        keyThumbprint: thumbprint,
        digest: shareDigest(row.id, thumbprint, share),
        index: share[32],
      };
      files.push(
        JSON.stringify({
          type: SHARE_FILE_TYPE,
          splitId: row.id,
          kekId: 'x',
          threshold: 2,
          total: 3,
          custodian: m.name,
          keyThumbprint: thumbprint,
          index: share[32],
          envelope: sealTo(
            x25519PublicFromEd25519(Buffer.from(String(jwk.x), 'base64url')),
            Buffer.from(share),
            custodianShareContext(row.id, thumbprint),
          ),
        }),
      );
    }
    await db
      .knex('master_key_splits')
      .where({ id: row.id })
      .update({ holders: JSON.stringify(holders) });
    const svc = await start();
    try {
      const answers = [];
      for (const [i, m] of mallories.entries()) {
        const status = (await svc.request('GET', '/v1/admin/unseal')).body;
        const submission = await unsealSubmission(
          status,
          files[i]!,
          custodianKey(fs.readFileSync(m.privateKey, 'utf8')),
        );
        answers.push(await svc.request('POST', '/v1/admin/unseal', { json: { submission } }));
      }
      expect(answers[0]!.status, answers[0]!.text).to.equal(200);
      expect(answers[1]!.status, answers[1]!.text).to.equal(409);
      expect(answers[1]!.body).to.include({ code: 'UNSEAL_KEY_MISMATCH' });
      expect((await svc.request('GET', '/v1/admin/unseal')).body).to.include({ sealed: true, progress: 0 });
      expect((await svc.request('POST', '/v1/tokens', { token: writer, json: { pan: PAN } })).status).to.equal(503);
      expect(svc.logs()).to.contain('UNSEAL_KEY_MISMATCH');
    } finally {
      await db.knex('master_key_splits').where({ id: row.id }).update({ holders: original });
      await stop(svc);
    }
  });

  it('then no share and no master-key bytes are in the database, the audit trail or the logs', async () => {
    const svc = await start();
    for (const who of [alice, bob]) expect((await unsealAs(svc, who)).response.status).to.equal(200);
    const secrets: string[] = [];
    const key = Buffer.from(fx.masterKeyBase64, 'base64');
    secrets.push(...encodings(key));
    for (const who of [alice, bob, carol]) {
      const opened = await openShareFile(
        fs.readFileSync(shareFile[who.name]!, 'utf8'),
        custodianKey(fs.readFileSync(who.privateKey, 'utf8')),
      );
      secrets.push(...encodings(opened.share), ...encodings(opened.share.subarray(0, 32)));
      opened.share.fill(0);
    }
    const dump = (await dumpEveryRow(svc)).text;
    const logs = svc.logs() + services.map((s) => s.logs()).join('\n');
    for (const secret of secrets) {
      expect(dump.includes(secret), 'a share or the key in the database').to.equal(false);
      expect(logs.includes(secret), 'a share or the key in the logs').to.equal(false);
    }
    // The scan itself finds what it looks for (it can fail): the key id is in the database.
    expect(dump).to.contain(new LocalMasterKey(key, 'x').keyId);
    await stop(svc);
  });
});

function encodings(bytes: Buffer): string[] {
  return [bytes.toString('hex'), bytes.toString('base64'), bytes.toString('base64url')];
}

function sink(into: string[]): NodeJS.WritableStream {
  return new Writable({
    write(chunk: Buffer | string, _encoding, done) {
      into.push(chunk.toString());
      done();
    },
  });
}
