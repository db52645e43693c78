/**
 * Security review of the key-shares unseal (issue 19), as the attackers of the threat model:
 * - an insider with database write access and a network attacker who captured submissions, replaying
 *   them after an unseal attempt failed;
 * - an unauthenticated caller flooding the unseal journal so that custodians' own refusals never
 *   reach the audit trail, or naming a custodian's key to have the trail blame them;
 * - an unauthenticated caller of the seal endpoint writing to the audit trail at will;
 * - the sealed gate: what it lets through must answer without a 5xx.
 * Real database (PGlite or PostgreSQL), the real service over HTTP, the real custodian client.
 */
import { expect } from 'chai';
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { CompactSign } from 'jose';
import { loadApiSpec } from '../../src/http/openapi.js';
import { jwkOf } from '../../src/keys/custodians.js';
import { OPERATIONS_SERVED_SEALED } from '../../src/keys/sealed-operations.js';
import { custodianKey, unsealSubmission } from '../../src/keys/unseal-client.js';
import { UNSEAL_JWS_TYP, UNSEAL_PAYLOAD_TYPE, SEAL_JWS_TYP, SEAL_PAYLOAD_TYPE } from '../../src/keys/unseal.js';
import { signToken } from '../support/auth.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { approve, ed25519, requestId, threeCustodians, type Person } from './custodians-fixture.js';
import { keysFixture, type KeysFixture } from './keys-context.js';

describe('key shares under attack (review of issue 19)', function () {
  this.timeout(240_000);
  let db: TestDatabase;
  let fx: KeysFixture;
  let dir: string;
  let alice: Person;
  let bob: Person;
  let carol: Person;
  const shareFile: Record<string, string> = {};
  const services: TestService[] = [];

  const start = async (): Promise<TestService> => {
    const svc = await startTestService({
      db,
      env: {
        ...(await testEnv()),
        MASTER_KEY: undefined,
        MASTER_KEY_SOURCE: 'shares',
        MASTER_KEY_SHARES_KEY_ID: fx.masterKey.keyId,
      },
    });
    services.push(svc);
    return svc;
  };
  const stop = async (svc: TestService): Promise<void> => {
    services.splice(services.indexOf(svc), 1);
    await svc.close();
  };
  const submissionOf = async (svc: TestService, who: Person): Promise<string> =>
    unsealSubmission(
      (await svc.request('GET', '/v1/admin/unseal')).body,
      fs.readFileSync(shareFile[who.name]!, 'utf8'),
      custodianKey(fs.readFileSync(who.privateKey, 'utf8')),
    );
  const post = (svc: TestService, submission: string) =>
    svc.request('POST', '/v1/admin/unseal', { json: { submission } });
  const seal = async (svc: TestService, who: Person) => {
    const { sealRequest } = await import('../../src/keys/unseal-client.js');
    const status = (await svc.request('GET', '/v1/admin/unseal')).body;
    const request = await sealRequest(status, custodianKey(fs.readFileSync(who.privateKey, 'utf8')));
    return svc.request('POST', '/v1/admin/seal', { json: { request } });
  };
  const vaultEntries = async (afterSeq = 0) =>
    (
      (await db
        .knex('audit_events')
        .where('action', 'like', 'vault.%')
        .andWhere('seq', '>', afterSeq)
        .orderBy('seq')
        .select('action', 'actor', 'outcome', 'details')) as {
        action: string;
        actor: string;
        outcome: string;
        details: Record<string, unknown> | string;
      }[]
    ).map((e) => ({ ...e, details: typeof e.details === 'string' ? JSON.parse(e.details) : e.details }));
  const auditCount = async () =>
    Number(((await db.knex('audit_events').count({ n: '*' }).first()) as { n: unknown }).n);

  /** A compact JWS by a key that is no custodian's, naming `kid` (anyone can make one). */
  const strangerJws = async (kid: string, typ: string, payload: Record<string, unknown>): Promise<string> => {
    const { privateKey } = generateKeyPairSync('ed25519');
    return new CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
      .setProtectedHeader({ alg: 'EdDSA', typ, kid })
      .sign(privateKey);
  };
  const thumbprintOf = async (who: Person) =>
    (await jwkOf((await import('node:crypto')).createPublicKey(fs.readFileSync(who.publicKey, 'utf8')))).thumbprint;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-shares-review-'));
    db = await createTestDatabase({ migrated: true });
    fx = await keysFixture(db, { policy: { propagationMs: 0 } });
    [alice, bob, carol] = await threeCustodians(fx, dir);
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
    for (const f of fs.readdirSync(out)) shareFile[f.split('.')[1]!] = path.join(out, f);
  });

  after(async () => {
    for (const svc of [...services]) await svc.close();
    await db?.close();
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('when an unseal attempt fails its checks, then the submissions captured during it cannot be replayed to unseal later (the nonce moves on)', async () => {
    // The insider alters a field that only the split's seal covers: the attempt is refused after the rebuild.
    const row = (await db.knex('master_key_splits').where({ state: 'active' }).first()) as {
      id: string;
      holders: unknown;
    };
    const original = typeof row.holders === 'string' ? row.holders : JSON.stringify(row.holders);
    const altered = (JSON.parse(original) as Record<string, unknown>[]).map((h) =>
      h['name'] === 'carol' ? { ...h, name: 'carol2' } : h,
    );
    await db
      .knex('master_key_splits')
      .where({ id: row.id })
      .update({ holders: JSON.stringify(altered) });
    const svc = await start();
    try {
      const captured = [await submissionOf(svc, alice), await submissionOf(svc, bob)];
      expect((await post(svc, captured[0]!)).status).to.equal(200);
      const failed = await post(svc, captured[1]!);
      expect(failed.body).to.include({ code: 'UNSEAL_KEY_MISMATCH' });
      // The insider puts the record back; the network attacker replays what alice and bob sent.
      await db.knex('master_key_splits').where({ id: row.id }).update({ holders: original });
      const replays = [await post(svc, captured[0]!), await post(svc, captured[1]!)];
      expect(
        replays.map((r) => r.body.code),
        'a replayed submission of a failed attempt',
      ).to.deep.equal(['UNSEAL_NONCE_STALE', 'UNSEAL_NONCE_STALE']);
      expect((await svc.request('GET', '/v1/admin/unseal')).body).to.include({ sealed: true });
      expect((await svc.request('GET', '/readyz')).status).to.equal(503);
    } finally {
      await db.knex('master_key_splits').where({ id: row.id }).update({ holders: original });
      await stop(svc);
    }
  });

  it('when a stranger submits once with a card-number-like key id, then the custodians can still unseal (nothing unauthenticated reaches the audit details)', async () => {
    const svc = await start();
    try {
      const kid = `4111111111111111${'a'.repeat(27)}`; // 43 base64url characters, like a thumbprint
      const junk = await strangerJws(kid, UNSEAL_JWS_TYP, { type: 'x' });
      expect((await post(svc, junk)).status).to.equal(401);
      expect((await post(svc, await submissionOf(svc, carol))).status).to.equal(200);
      const last = await post(svc, await submissionOf(svc, bob));
      expect(last.status, last.text).to.equal(200);
      expect(last.body).to.include({ sealed: false });
      expect((await svc.request('GET', '/readyz')).status).to.equal(200);
      expect(svc.logs()).not.to.contain('4111111111111111');
    } finally {
      await stop(svc);
    }
  });

  it("when an insider gives bob's holder slot to a share of their own with alice's x coordinate, then the unseal is refused UNSEAL_KEY_MISMATCH (audited, new nonce), never a 500", async () => {
    const { shareDigest, sealTo, x25519PublicFromEd25519 } =
      await import('../../src/keys/master-key-sources/share-crypto.js');
    const { custodianShareContext, SHARE_FILE_TYPE } = await import('../../src/keys/key-shares.js');
    const row = (await db.knex('master_key_splits').where({ state: 'active' }).first()) as {
      id: string;
      holders: unknown;
    };
    const original = typeof row.holders === 'string' ? row.holders : JSON.stringify(row.holders);
    const holders = JSON.parse(original) as Record<string, unknown>[];
    const aliceIndex = Number(holders.find((h) => h['name'] === 'alice')!['index']);
    const mallory = ed25519(dir, 'mallory-x');
    const pub = (await import('node:crypto')).createPublicKey(fs.readFileSync(mallory.publicKey, 'utf8'));
    const { jwk, thumbprint } = await jwkOf(pub);
    const crafted = new Uint8Array(33).fill(7);
    crafted[32] = aliceIndex;
    const at = holders.findIndex((h) => h['name'] === 'bob');
    holders[at] = {
      ...holders[at],
      x: jwk.x,
      keyThumbprint: thumbprint,
      digest: shareDigest(row.id, thumbprint, crafted),
      index: aliceIndex,
    };
    const file = JSON.stringify({
      type: SHARE_FILE_TYPE,
      splitId: row.id,
      kekId: 'x',
      threshold: 2,
      total: 3,
      custodian: 'mallory-x',
      keyThumbprint: thumbprint,
      index: aliceIndex,
      envelope: sealTo(
        x25519PublicFromEd25519(Buffer.from(String(jwk.x), 'base64url')),
        Buffer.from(crafted),
        custodianShareContext(row.id, thumbprint),
      ),
    });
    await db
      .knex('master_key_splits')
      .where({ id: row.id })
      .update({ holders: JSON.stringify(holders) });
    const svc = await start();
    try {
      const status = (await svc.request('GET', '/v1/admin/unseal')).body;
      const forged = await unsealSubmission(status, file, custodianKey(fs.readFileSync(mallory.privateKey, 'utf8')));
      expect((await post(svc, forged)).status).to.equal(200);
      const last = await post(svc, await submissionOf(svc, alice));
      expect([last.status, last.body.code], last.text).to.deep.equal([409, 'UNSEAL_KEY_MISMATCH']);
      const after = (await svc.request('GET', '/v1/admin/unseal')).body;
      expect(after).to.include({ sealed: true, progress: 0 });
      expect(after.nonce).not.to.equal(status.nonce);
    } finally {
      await db.knex('master_key_splits').where({ id: row.id }).update({ holders: original });
      await stop(svc);
    }
  });

  it("when anyone floods the unseal endpoint or names a custodian's key, then custodians' own refusals still reach the trail and nobody is blamed for a submission they did not sign", async () => {
    const svc = await start();
    try {
      const since = Number(((await db.knex('audit_events').max({ seq: 'seq' }).first()) as { seq: unknown }).seq);
      const status = (await svc.request('GET', '/v1/admin/unseal')).body;
      const aliceKid = await thumbprintOf(alice);
      // A forged submission naming alice's key (anyone can make one): must not read as alice's.
      const blame = await strangerJws(aliceKid, UNSEAL_JWS_TYP, {
        type: UNSEAL_PAYLOAD_TYPE,
        nonce: status.nonce,
        splitId: status.splitId,
        share: { epk: 'AA', iv: 'AA', ct: 'AA', tag: 'AA' },
      });
      expect((await post(svc, blame)).body).to.include({ code: 'UNSEAL_SUBMISSION_INVALID' });
      // 250 unsigned submissions by strangers (more than the journal holds).
      for (let i = 0; i < 250; i += 1) {
        const junk = await strangerJws(`k${String(i).padStart(42, '0')}`, UNSEAL_JWS_TYP, { type: 'x' });
        expect((await post(svc, junk)).status).to.equal(401);
      }
      // Carol submits, then submits again (her own refusal), then bob completes the unseal.
      const carolFirst = await post(svc, await submissionOf(svc, carol));
      expect(carolFirst.status, carolFirst.text + svc.logs().slice(-3000)).to.equal(200);
      expect((await post(svc, await submissionOf(svc, carol))).body).to.include({ code: 'UNSEAL_SHARE_DUPLICATE' });
      const bobs = await post(svc, await submissionOf(svc, bob));
      expect(
        bobs.status,
        svc
          .logs()
          .split('\n')
          .filter((l) => /error|warn/i.test(l))
          .join('\n')
          .slice(-2500),
      ).to.equal(200);
      expect((await svc.request('GET', '/readyz')).status).to.equal(200);

      const entries = await vaultEntries(since);
      const custodians = entries.filter((e) => e.action === 'vault.unseal.share-submitted' && e.actor !== 'unknown');
      expect(
        custodians.map((e) => [e.actor, e.outcome, e.details['code'] ?? null]),
        "the custodians' submissions in the trail",
      ).to.deep.equal([
        ['carol', 'success', null],
        ['carol', 'failure', 'UNSEAL_SHARE_DUPLICATE'],
        ['bob', 'success', null],
      ]);
      // The strangers are in the trail too, but as strangers, and not one entry each.
      const strangers = entries.filter((e) => e.action === 'vault.unseal.share-submitted' && e.actor === 'unknown');
      expect(strangers.length).to.be.greaterThan(0).and.lessThan(10);
      const counted = strangers.reduce((n, e) => n + Number(e.details['count'] ?? 1), 0);
      expect(counted, 'every stranger submission counted').to.equal(251);
      expect((await fx.run('audit', 'verify')).code).to.equal(0);
    } finally {
      await stop(svc);
    }
  });

  it('when anyone posts unsigned seal requests, then they do not write to the audit trail; a custodian can still seal', async () => {
    const svc = await start();
    try {
      for (const who of [alice, carol]) expect((await post(svc, await submissionOf(svc, who))).status).to.equal(200);
      const before = await auditCount();
      const status = (await svc.request('GET', '/v1/admin/unseal')).body;
      for (let i = 0; i < 20; i += 1) {
        const request = await strangerJws(await thumbprintOf(bob), SEAL_JWS_TYP, {
          type: SEAL_PAYLOAD_TYPE,
          nonce: status.nonce,
        });
        const refused = await svc.request('POST', '/v1/admin/seal', { json: { request } });
        expect(refused.status).to.equal(401);
        expect(refused.body).to.include({ code: 'UNSEAL_SUBMISSION_INVALID' });
      }
      expect(await auditCount(), 'audit entries written by unauthenticated seal requests').to.equal(before);
      expect((await svc.request('GET', '/readyz')).status).to.equal(200);
      // A custodian's genuine seal request made for another nonce, captured and replayed: audited once.
      const { sealRequest } = await import('../../src/keys/unseal-client.js');
      const stale = await sealRequest(
        { ...status, nonce: 'an-earlier-nonce' },
        custodianKey(fs.readFileSync(carol.privateKey, 'utf8')),
      );
      for (let i = 0; i < 10; i += 1) {
        const refused = await svc.request('POST', '/v1/admin/seal', { json: { request: stale } });
        expect(refused.body).to.include({ code: 'UNSEAL_NONCE_STALE' });
      }
      expect(await auditCount(), 'a replayed stale seal request is audited once').to.equal(before + 1);
      const sealed = await seal(svc, bob);
      expect(sealed.status, sealed.text).to.equal(200);
      expect(sealed.body).to.include({ sealed: true });
      const last = (await vaultEntries()).at(-1)!;
      expect([last.action, last.actor, last.outcome]).to.deep.equal(['vault.sealed', 'bob', 'success']);
    } finally {
      await stop(svc);
    }
  });

  it('when someone between the custodian and the instance hands out a key of their own, then keys unseal --instance-key sends nothing; the instance logs the fingerprint to compare', async () => {
    const { remoteCommand } = await import('../../src/cli/keys-shares.js');
    const { instanceKeyFingerprint } = await import('../../src/keys/unseal.js');
    const { openEnvelope } = await import('../../src/keys/master-key-sources/share-crypto.js');
    const { decodeProtectedHeader } = await import('jose');
    const svc = await start();
    try {
      const real = (await svc.request('GET', '/v1/admin/unseal')).body;
      const genuine = instanceKeyFingerprint(real.instanceKey);
      expect(svc.logs(), 'the instance logs its key fingerprint').to.contain(genuine);
      // The man in the middle: rewrites the status to carry its own X25519 key, keeps what is posted.
      const mitm = generateKeyPairSync('x25519');
      const mitmKey = Buffer.from(String((mitm.publicKey.export({ format: 'jwk' }) as { x: string }).x), 'base64url');
      const posted: string[] = [];
      const proxy: typeof fetch = async (input, init) => {
        const response = await fetch(input, init);
        if (init?.method === 'POST') {
          posted.push(typeof init.body === 'string' ? init.body : '');
          return response;
        }
        const status = (await response.json()) as Record<string, unknown>;
        return new Response(JSON.stringify({ ...status, instanceKey: mitmKey.toString('base64url') }), {
          status: response.status,
          headers: { 'content-type': 'application/json' },
        });
      };
      const printed: string[] = [];
      const io = { stdout: sink(printed), stderr: sink(printed) };
      const args = ['--url', svc.url, '--share', shareFile['alice']!, '--key', alice.privateKey];
      const pinnedRun = await remoteCommand('unseal', [...args, '--instance-key', genuine], io, proxy);
      expect(pinnedRun, printed.join('')).to.equal(1);
      expect(printed.join('')).to.contain(instanceKeyFingerprint(mitmKey.toString('base64url')));
      expect(posted, 'nothing sent to a key that is not the pinned one').to.deep.equal([]);
      // Without the pin the share goes to the attacker's key (what the printed fingerprint warns of).
      expect(await remoteCommand('unseal', args, io, proxy)).to.equal(1);
      const submission = (JSON.parse(posted[0]!) as { submission: string }).submission;
      const payload = JSON.parse(Buffer.from(submission.split('.')[1]!, 'base64url').toString('utf8')) as {
        nonce: string;
        share: { epk: string; iv: string; ct: string; tag: string };
      };
      const { instanceShareContext } = await import('../../src/keys/unseal.js');
      const opened = openEnvelope(
        mitm.privateKey,
        payload.share,
        instanceShareContext(payload.nonce, String(decodeProtectedHeader(submission).kid)),
      );
      expect(opened.length, 'the attacker holds the share: hence the fingerprint check').to.equal(33);
      opened.fill(0);
      // With the genuine key pinned and no one in between, the share goes through; the pin here is in
      // the form written down before fingerprints carried `SHA256:` (the same digest).
      const legacyPin = `--instance-key=${genuine.slice('SHA256:'.length)}`;
      expect(await remoteCommand('unseal', [...args, legacyPin], io)).to.equal(0);
    } finally {
      await stop(svc);
    }
  });

  it('when a pinned fingerprint has a digest starting with "-", then keys unseal reads it as the value of --instance-key, not as an option', async () => {
    // One digest in 64 starts with '-': before the SHA256: prefix such a pin was refused by the
    // option parser (`--instance-key` argument is ambiguous), and a CI run failed on it.
    const { remoteCommand } = await import('../../src/cli/keys-shares.js');
    const { instanceKeyFingerprint } = await import('../../src/keys/unseal.js');
    const { createHash } = await import('node:crypto');
    const instanceKey = (): string => generateKeyPairSync('x25519').publicKey.export({ format: 'jwk' }).x as string;
    let pinnedKey = instanceKey();
    while (!createHash('sha256').update(Buffer.from(pinnedKey, 'base64url')).digest('base64url').startsWith('-')) {
      pinnedKey = instanceKey();
    }
    const pinned = instanceKeyFingerprint(pinnedKey);
    expect(pinned).to.match(/^SHA256:-[A-Za-z0-9_-]{21}$/);
    const other = instanceKey();
    const posted: string[] = [];
    const http = (_url: string | URL | Request, init?: RequestInit): Promise<Response> => {
      if (typeof init?.body === 'string') posted.push(init.body);
      const status = { sealed: true, nonce: 'n', instanceKey: other, progress: 0, threshold: 2 };
      return Promise.resolve(
        new Response(JSON.stringify(status), { status: 200, headers: { 'content-type': 'application/json' } }),
      );
    };
    const printed: string[] = [];
    const io = { stdout: sink(printed), stderr: sink(printed) };
    const args = ['--url', 'http://127.0.0.1:9', '--share', shareFile['alice']!, '--key', alice.privateKey];
    expect(await remoteCommand('unseal', [...args, '--instance-key', pinned], io, http)).to.equal(1);
    expect(printed.join('')).to.contain(`is not one given by --instance-key`);
    expect(posted).to.deep.equal([]);
  });

  it('when MASTER_KEY_SHARE_FILES (key CLI only) is left in the service environment, then the service refuses to start instead of unsealing itself with no custodian and no audit entry', async () => {
    const clear: string[] = [];
    for (const who of [alice, bob]) {
      const file = path.join(dir, `${who.name}.service-clear.json`);
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
      clear.push(file);
    }
    const before = await auditCount();
    let svc: TestService | undefined;
    try {
      svc = await startTestService({
        db,
        env: {
          ...(await testEnv()),
          MASTER_KEY: undefined,
          MASTER_KEY_SOURCE: 'shares',
          MASTER_KEY_SHARES_KEY_ID: fx.masterKey.keyId,
          MASTER_KEY_SHARE_FILES: clear.join(','),
        },
      });
      const ready = await svc.request('GET', '/readyz');
      expect.fail(`the service started (readyz ${ready.status}) from cleartext share files`);
    } catch (error) {
      if ((error as Error).name === 'AssertionError') throw error;
      expect((error as Error).message).to.contain('MASTER_KEY_SHARE_FILES');
    } finally {
      await svc?.close();
      for (const file of clear) fs.rmSync(file, { force: true });
    }
    expect(await auditCount()).to.equal(before);
  });

  it('when sealed, then every operation the gate lets through answers without a 5xx, and every other one is 503 VAULT_SEALED', async () => {
    const svc = await start();
    try {
      const spec = loadApiSpec();
      const scopes = [...new Set(spec.operations.flatMap((o) => o.security.flatMap((s) => s.scopes)))];
      const bearer = await signToken({ scope: scopes.join(' ') });
      const fill = (template: string) => template.replace(/\{[^}]+\}/g, 'abc_0000000000000000000000');
      for (const op of spec.operations) {
        if (op.method !== 'get') continue;
        const res = await svc.request('GET', fill(op.pathTemplate), { token: bearer });
        if (OPERATIONS_SERVED_SEALED.has(op.operationId)) {
          if (op.operationId === 'getReadiness') expect(res.status).to.equal(503);
          else expect(res.status, `${op.operationId}: ${res.text}`).to.be.lessThan(500);
        } else {
          expect([res.status, res.body?.code], op.operationId).to.deep.equal([503, 'VAULT_SEALED']);
        }
      }
      expect(svc.logs()).not.to.match(/"level":50/);
    } finally {
      await stop(svc);
    }
  });
});

function sink(into: string[]): NodeJS.WritableStream {
  return new Writable({
    write(chunk: Buffer | string, _encoding, done) {
      into.push(chunk.toString());
      done();
    },
  });
}
