/**
 * Dual control against an insider: someone who runs the key CLI, can write every table of the
 * database, and holds ONE custodian key (mallory) or none. Every attempt below is refused or detected,
 * and the refusal is in the audit trail with its code.
 */
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { CompactSign } from 'jose';
import type { JWK } from 'jose';
import { canonicalJson, verifyAuditChain } from '../../src/audit/audit-log.js';
import { insertSealedCustodian, jwkOf } from '../../src/keys/custodians.js';
import { createRequest } from '../../src/keys/dual-control.js';
import { approveRequest } from '../../src/keys/key-approvals.js';
import { LocalMasterKey, MasterKeySet } from '../../src/keys/master-key-source.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { approve, ed25519, genesis, requestId, type Person } from './custodians-fixture.js';
import { keysFixture, type KeysFixture } from './keys-context.js';

interface Denial {
  action: string;
  code: string;
  actor_type: string;
}

describe('dual control against an insider with database write access and one custodian key', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let fx: KeysFixture;
  let dir: string;
  let alice: Person;
  let bob: Person;
  let mallory: Person;
  let mallory2: Person;

  before(async () => {
    db = await createTestDatabase({ migrated: true });
    fx = await keysFixture(db, { policy: { propagationMs: 0 } });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-insider-'));
    [alice, bob, mallory, mallory2] = ['alice', 'bob', 'mallory', 'mallory2'].map((n) => ed25519(dir, n)) as [
      Person,
      Person,
      Person,
      Person,
    ];
  });
  after(async () => {
    await db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** The denials recorded since `seq`, with their codes. */
  async function deniedSince(seq: number): Promise<Denial[]> {
    const rows = (await db
      .knex('audit_events')
      .where('seq', '>', seq)
      .andWhere({ outcome: 'denied' })
      .orderBy('seq')) as {
      action: string;
      actor_type: string;
      details: string | { code: string };
    }[];
    return rows.map((r) => ({
      action: r.action,
      actor_type: r.actor_type,
      code: (typeof r.details === 'string' ? (JSON.parse(r.details) as { code: string }) : r.details).code,
    }));
  }
  const headSeq = async (): Promise<number> =>
    Number(((await db.knex('audit_chain_head').where({ id: 1 }).first()) as { seq: number | string }).seq);

  /** Runs a command that must be refused with `code`, and checks the refusal was audited with it. */
  async function refused(code: string, ...argv: string[]): Promise<string> {
    const before = await headSeq();
    const res = await fx.run(...argv);
    expect(res.code, `${argv.join(' ')}: ${res.stdout}${res.stderr}`).to.equal(1);
    expect(res.stderr).to.contain(`refused: ${code}`);
    const denials = await deniedSince(before);
    expect(
      denials.map((d) => d.code),
      argv.join(' '),
    ).to.include(code);
    expect(denials.every((d) => d.actor_type === 'operator')).to.equal(true);
    return res.stdout;
  }

  const custodianNames = async (): Promise<string[]> =>
    ((await db.knex('key_custodians').whereNotNull('seal').orderBy('name')) as { name: string }[]).map((r) => r.name);

  describe('before the first two custodians exist', () => {
    it('when a request is made with no custodian registered, then it is refused with CUSTODIANS_TOO_FEW, audited', async () => {
      await refused('CUSTODIANS_TOO_FEW', 'request', 'rotate', '--purpose', 'identifier-mac');
      expect(await db.knex('key_requests')).to.have.length(0);
    });

    it('when one person inserts a custodian row directly, then it is no custodian: not counted, flagged, and its approvals refused', async () => {
      // mallory copies the shape of a real row, with her own key, without the master key to seal it.
      const { createPublicKey } = await import('node:crypto');
      const { calculateJwkThumbprint } = await import('jose');
      const full = createPublicKey(fs.readFileSync(mallory.publicKey)).export({ format: 'jwk' });
      const jwk = { crv: full.crv, kty: full.kty, x: full.x } as JWK;
      for (const [id, name] of [
        ['cus_forged1', 'mallory'],
        ['cus_forged2', 'mallory-too'],
      ] as const) {
        await db.knex('key_custodians').insert({
          id,
          name,
          public_key_jwk: JSON.stringify(jwk),
          key_thumbprint: name === 'mallory' ? await calculateJwkThumbprint(jwk, 'sha256') : `x${id}`,
          acknowledgement: 'I accept',
          acknowledged_at: new Date(),
          registered_by: 'mallory',
          created_at: new Date(),
          seal: randomBytes(60),
        });
      }
      await refused('CUSTODIANS_TOO_FEW', 'request', 'rotate', '--purpose', 'identifier-mac');
      const list = await fx.run('custodian', 'list');
      expect(list.stdout.match(/NOT SEALED/g)).to.have.length(2);
      await db.knex('key_custodians').whereIn('id', ['cus_forged1', 'cus_forged2']).delete();
    });

    it('when the genesis names one key twice, then it is refused with CUSTODIAN_INVALID, audited', async () => {
      const copy = path.join(dir, 'mallory-copy.pub.pem');
      fs.copyFileSync(mallory.publicKey, copy);
      await refused(
        'CUSTODIAN_INVALID',
        'request',
        'genesis',
        '--name',
        'mallory',
        '--public-key',
        mallory.publicKey,
        '--name',
        'molly',
        '--public-key',
        copy,
      );
    });

    it('when the genesis names another person but only one signs, then it is refused and registers nobody', async () => {
      const id = await requestId(
        fx,
        'genesis',
        '--name',
        'mallory',
        '--public-key',
        mallory.publicKey,
        '--name',
        'alice',
        '--public-key',
        alice.publicKey,
      );
      expect((await approve(fx, id, mallory)).code).to.equal(0);
      // Nobody else's key signs for alice: bob is not named, mallory cannot sign twice.
      const asBob = await approve(fx, id, bob);
      expect(asBob.stderr).to.contain('APPROVAL_INVALID');
      expect((await approve(fx, id, mallory)).stderr).to.contain('APPROVAL_DUPLICATE');
      await refused('DUAL_CONTROL_REQUIRED', 'custodian', 'genesis', '--request', id);
      expect(await custodianNames()).to.deep.equal([]);
    });

    it('when the genesis is completed by both named people, then both are registered with their signatures as evidence, and a second genesis is refused', async () => {
      const id = await genesis(fx, alice, bob);
      expect(await custodianNames()).to.deep.equal(['alice', 'bob']);
      const registered = (await db
        .knex('audit_events')
        .where({ action: 'key.custodian.registered', outcome: 'success' })
        .orderBy('seq')) as { actor: string; actor_type: string; details: string | Record<string, unknown> }[];
      expect(registered.map((r) => [r.actor, r.actor_type])).to.deep.equal([
        ['alice', 'custodian'],
        ['bob', 'custodian'],
      ]);
      for (const r of registered) {
        const details = typeof r.details === 'string' ? (JSON.parse(r.details) as Record<string, unknown>) : r.details;
        expect(details['proofOfPossession']).to.match(/^[\w-]+\.[\w-]+\.[\w-]+$/);
        expect(details['requestId']).to.equal(id);
      }
      await refused(
        'CUSTODIAN_INVALID',
        'request',
        'genesis',
        '--name',
        'mallory',
        '--public-key',
        mallory.publicKey,
        '--name',
        'molly',
        '--public-key',
        mallory2.publicKey,
      );
      // Even with every custodian row deleted, the sealed ledger remembers the genesis.
      const saved = await db.knex('key_custodians');
      await db.knex('key_approvals').update({ custodian_id: null });
      await db.knex('key_custodians').delete();
      await refused(
        'CUSTODIAN_INVALID',
        'request',
        'genesis',
        '--name',
        'mallory',
        '--public-key',
        mallory.publicKey,
        '--name',
        'molly',
        '--public-key',
        mallory2.publicKey,
      );
      // ... and with the ledger reset to empty too, the audit trail does.
      const ledger = await db.knex('dual_control_ledger').first();
      const executions = await db.knex('key_request_executions');
      await db.knex('key_request_executions').delete();
      await db.knex('dual_control_ledger').update({ seq: 0, chain: '0'.repeat(64), seal: null });
      await refused(
        'DUAL_CONTROL_TAMPERED',
        'request',
        'genesis',
        '--name',
        'mallory',
        '--public-key',
        mallory.publicKey,
        '--name',
        'molly',
        '--public-key',
        mallory2.publicKey,
      );
      await db.knex('key_request_executions').insert(executions);
      await db.knex('dual_control_ledger').update(ledger);
      await db.knex('key_custodians').insert(saved);
      expect(await custodianNames()).to.deep.equal(['alice', 'bob']);
    });
  });

  describe('with alice and bob as custodians', () => {
    /** A rotation request both approved: harmless, the kind mallory can get approved. */
    async function approvedRotation(): Promise<string> {
      const id = await requestId(fx, 'rotate', '--purpose', 'audit-signing');
      expect((await approve(fx, id, alice)).code).to.equal(0);
      expect((await approve(fx, id, bob)).code).to.equal(0);
      return id;
    }
    const addMallory = (id: string) =>
      [
        'custodian',
        'add',
        '--name',
        'mallory',
        '--public-key',
        mallory.publicKey,
        '--acknowledge',
        '--request',
        id,
      ] as const;

    it('when the operation and params of an approved rotation are swapped for an add-custodian of her key, then it is refused as tampered and mallory is no custodian', async () => {
      const harmless = await approvedRotation();
      const hers = await requestId(fx, 'add-custodian', '--name', 'mallory', '--public-key', mallory.publicKey);
      const [a, b] = await Promise.all([harmless, hers].map((id) => db.knex('key_requests').where({ id }).first()));
      await db.knex('key_requests').where({ id: harmless }).update({ operation: b.operation, params: b.params });
      await db.knex('key_requests').where({ id: hers }).update({ operation: a.operation, params: a.params });
      await refused('KEY_REQUEST_TAMPERED', ...addMallory(harmless));
      // Her own request now names the rotation, and nobody approved it.
      await refused('DUAL_CONTROL_REQUIRED', ...addMallory(hers));
      expect(await custodianNames()).to.deep.equal(['alice', 'bob']);
      const shown = await fx.run('request', 'show', harmless);
      expect(shown.code).to.equal(1);
      expect(shown.stdout).to.contain('TAMPERED: the operation column says add-custodian, the payload rotate');
    });

    it('when the payload columns are swapped too, then the approvals still sign the rotation: refused, and no custodian approves the swapped text', async () => {
      const harmless = await approvedRotation();
      const hers = await requestId(fx, 'add-custodian', '--name', 'mallory', '--public-key', mallory.publicKey);
      const [a, b] = await Promise.all([harmless, hers].map((id) => db.knex('key_requests').where({ id }).first()));
      const swap = (r: typeof a) => ({
        operation: r.operation,
        params: r.params,
        payload: r.payload,
        expires_at: r.expires_at,
      });
      await db.knex('key_requests').where({ id: harmless }).update(swap(b));
      await db.knex('key_requests').where({ id: hers }).update(swap(a));
      await refused('KEY_REQUEST_TAMPERED', ...addMallory(harmless));
      // Her own request now carries the rotation's text: a custodian asked to approve it is warned.
      await refused('KEY_REQUEST_TAMPERED', 'approve', hers, '--key', alice.privateKey, '--yes');
      expect(await custodianNames()).to.deep.equal(['alice', 'bob']);
    });

    it('when the approvals of an approved request are copied onto hers, then they sign another request id: refused', async () => {
      const harmless = await approvedRotation();
      const hers = await requestId(fx, 'add-custodian', '--name', 'mallory', '--public-key', mallory.publicKey);
      const approvals = await db.knex('key_approvals').where({ request_id: harmless });
      await db
        .knex('key_approvals')
        .insert(approvals.map((a: Record<string, unknown>) => ({ ...a, request_id: hers })));
      await refused('KEY_REQUEST_TAMPERED', ...addMallory(hers));
      expect(await custodianNames()).to.deep.equal(['alice', 'bob']);
    });

    it('when mallory approves with her key, unregistered or on an edited custodian row, then it is refused with APPROVAL_INVALID, audited', async () => {
      const hers = await requestId(fx, 'add-custodian', '--name', 'mallory', '--public-key', mallory.publicKey);
      await refused('APPROVAL_INVALID', 'approve', hers, '--key', mallory.privateKey, '--yes');
      // She rewrites bob's row to hold her key: the seal no longer matches, the row is no custodian.
      const bobRow = await db.knex('key_custodians').where({ name: 'bob' }).first();
      const { createPublicKey } = await import('node:crypto');
      const { calculateJwkThumbprint } = await import('jose');
      const full = createPublicKey(fs.readFileSync(mallory.publicKey)).export({ format: 'jwk' });
      const jwk = { crv: full.crv, kty: full.kty, x: full.x } as JWK;
      await db
        .knex('key_custodians')
        .where({ id: bobRow.id })
        .update({ public_key_jwk: JSON.stringify(jwk), key_thumbprint: await calculateJwkThumbprint(jwk, 'sha256') });
      expect((await approve(fx, hers, alice)).code).to.equal(0);
      await refused('APPROVAL_INVALID', 'approve', hers, '--key', mallory.privateKey, '--yes');
      await refused('CUSTODIANS_TOO_FEW', 'request', 'rotate', '--purpose', 'identifier-mac');
      await db.knex('key_custodians').where({ id: bobRow.id }).update(bobRow);
      expect(await custodianNames()).to.deep.equal(['alice', 'bob']);
    });

    describe('replaying an executed request', () => {
      let carol: Person;
      let executed: string;
      let snapshot: { ledger: Record<string, unknown>; executions: Record<string, unknown>[] };

      before(async () => {
        carol = ed25519(dir, 'carol');
        executed = await requestId(fx, 'add-custodian', '--name', 'carol', '--public-key', carol.publicKey);
        await approve(fx, executed, alice);
        await approve(fx, executed, bob);
        // What mallory saved before the execution: the ledger as it was (validly sealed).
        snapshot = {
          ledger: await db.knex('dual_control_ledger').first(),
          executions: await db.knex('key_request_executions'),
        };
        const added = await fx.run(...addCarol());
        expect(added.code, added.stderr).to.equal(0);
      });

      const addCarol = () =>
        [
          'custodian',
          'add',
          '--name',
          'carol',
          '--public-key',
          carol.publicKey,
          '--acknowledge',
          '--request',
          executed,
        ] as const;

      /** Removes carol (as the insider would, to run the request again), tampers, then restores. */
      async function replayAfter(tamper: () => Promise<void>, code: string): Promise<void> {
        const carolRow = await db.knex('key_custodians').where({ name: 'carol' }).first();
        const ledger = await db.knex('dual_control_ledger').first();
        const executions = await db.knex('key_request_executions');
        await db.knex('key_custodians').where({ name: 'carol' }).delete();
        await db.knex('key_requests').where({ id: executed }).update({ state: 'pending', executed_at: null });
        await tamper();
        await refused(code, ...addCarol());
        expect(await db.knex('key_custodians').where({ name: 'carol' })).to.have.length(0);
        await db.knex('key_request_executions').delete();
        await db.knex('key_request_executions').insert(executions);
        await db.knex('dual_control_ledger').update(ledger);
        await db.knex('key_custodians').insert(carolRow);
      }

      it('when its row is reset to pending, then the sealed ledger knows it ran: KEY_REQUEST_NOT_PENDING', async () => {
        await replayAfter(() => Promise.resolve(), 'KEY_REQUEST_NOT_PENDING');
      });

      it('when its execution is deleted as well, then the ledger no longer ends at its sealed head: DUAL_CONTROL_TAMPERED', async () => {
        await replayAfter(async () => {
          await db.knex('key_request_executions').where({ request_id: executed }).delete();
        }, 'DUAL_CONTROL_TAMPERED');
      });

      it('when the ledger is rolled back to a validly sealed state from before the execution, then the audit trail still records it: DUAL_CONTROL_TAMPERED', async () => {
        await replayAfter(async () => {
          await db.knex('key_request_executions').delete();
          await db.knex('key_request_executions').insert(snapshot.executions);
          await db.knex('dual_control_ledger').update(snapshot.ledger);
        }, 'DUAL_CONTROL_TAMPERED');
      });

      it("when another request's execution is relabelled as this one's, then the chain breaks: DUAL_CONTROL_TAMPERED", async () => {
        await replayAfter(async () => {
          await db.knex('key_request_executions').where({ request_id: executed }).update({ request_id: 'krq_other' });
        }, 'DUAL_CONTROL_TAMPERED');
      });

      it('when the ledger was only inspected and restored, then the chain and the audit trail verify', async () => {
        expect(await custodianNames()).to.deep.equal(['alice', 'bob', 'carol']);
        expect((await verifyAuditChain(db.knex)).ok).to.equal(true);
      });
    });

    it('when a request made under another master key (another deployment) is run, then it is refused as tampered', async () => {
      const id = await approvedRotation();
      const other = new LocalMasterKey(randomBytes(32), 'another deployment');
      const elsewhere = await keysFixture(db, {
        policy: { propagationMs: 0 },
        source: new MasterKeySet(other, [fx.masterKey]),
      });
      const res = await elsewhere.run('rotate', '--purpose', 'audit-signing', '--apply', '--request', id);
      expect(res.stderr).to.contain('KEY_REQUEST_TAMPERED');
      expect(res.stderr).to.contain('another deployment');
    });

    it('when a custodian approves, then the payload and its SHA-256 are shown, and nothing is signed without a yes', async () => {
      const id = await requestId(fx, 'rotate', '--purpose', 'identifier-mac');
      const shown = await fx.run('request', 'show', id);
      expect(shown.code, shown.stderr).to.equal(0);
      const digest = /SHA-256: ([0-9a-f]{64})/.exec(shown.stdout)?.[1];
      expect(digest).to.be.a('string');
      await refused('APPROVAL_NOT_CONFIRMED', 'approve', id, '--key', alice.privateKey);
      const questions: string[] = [];
      const declined = await fx.runAt(
        (q) => {
          questions.push(q);
          return Promise.resolve(false);
        },
        'approve',
        id,
        '--key',
        alice.privateKey,
      );
      expect(declined.code).to.equal(1);
      expect(declined.stdout).to.contain(`SHA-256: ${digest}`);
      expect(declined.stdout).to.contain('"operation":"rotate"');
      expect(questions[0]).to.contain(digest!.slice(0, 16));
      await refused(
        'KEY_REQUEST_MISMATCH',
        'approve',
        id,
        '--key',
        alice.privateKey,
        '--yes',
        '--digest',
        'ab'.repeat(32),
      );
      expect(await db.knex('key_approvals').where({ request_id: id })).to.have.length(0);
      const accepted = await fx.runAt(
        () => Promise.resolve(true),
        'approve',
        id,
        '--key',
        alice.privateKey,
        '--digest',
        digest!,
      );
      expect(accepted.code, accepted.stderr).to.equal(0);
      const entry = await db
        .knex('audit_events')
        .where({ action: 'key.request.approved', outcome: 'success' })
        .orderBy('seq', 'desc')
        .first();
      expect([entry.actor, entry.actor_type]).to.deep.equal(['alice', 'custodian']);
      const list = await fx.run('request', 'list');
      expect(list.stdout).to.match(new RegExp(`${id}\\s+pending\\s+rotate .*approvals 1/2 \\(alice\\)`));
    });

    it('when an approved request has expired, then it is refused with KEY_REQUEST_EXPIRED, audited', async () => {
      const past = new Date(Date.now() - 25 * 3600 * 1000);
      const plan = await fx.manager().planRotation('identifier-mac');
      const ctx = { actor: fx.ctx.actor, masterKey: fx.ctx.masterKey };
      const created = await createRequest(
        db.knex,
        { operation: 'rotate', params: { purpose: 'identifier-mac', toVersion: plan.toVersion }, description: 'old' },
        ctx,
        past,
      );
      for (const who of [alice, bob]) {
        await approveRequest(db.knex, created.id, fs.readFileSync(who.privateKey, 'utf8'), created.digest, ctx, past);
      }
      await refused('KEY_REQUEST_EXPIRED', 'rotate', '--purpose', 'identifier-mac', '--apply', '--request', created.id);
      await refused('KEY_REQUEST_EXPIRED', 'approve', created.id, '--key', alice.privateKey, '--yes');
    });

    it('when the request to show does not exist, then the refusal is audited too', async () => {
      await refused('KEY_REQUEST_NOT_FOUND', 'request', 'show', 'krq_nosuchrequest');
    });
  });

  // Mocha runs a suite's own tests before its child suites: these come last.
  describe('an insider who also holds the master key (the CLI needs it)', () => {
    /** Signs a v2 payload as the CLI would, with a key she holds. */
    async function sign(payload: string, who: Person): Promise<{ jws: string; thumbprint: string }> {
      const key = createPrivateKey(fs.readFileSync(who.privateKey));
      const { thumbprint } = await jwkOf(createPublicKey(key));
      const jws = await new CompactSign(new TextEncoder().encode(payload))
        .setProtectedHeader({ alg: 'EdDSA', typ: 'loyalty-vault-key-approval+jws', kid: thumbprint })
        .sign(key);
      return { jws, thumbprint };
    }

    /** Writes a custodian row with a valid seal: what the master key allows without any approval. */
    async function sealedRow(who: Person, id: string, authorisedBy: string): Promise<void> {
      const { jwk, thumbprint } = await jwkOf(createPublicKey(fs.readFileSync(who.publicKey)));
      await db.knex.transaction((trx) =>
        insertSealedCustodian(
          trx,
          fx.masterKey,
          { id, name: who.name, jwk, thumbprint, authorisedBy, registeredBy: 'mallory' },
          new Date(),
        ),
      );
    }

    it('when she seals a custodian row of her own, then its registration has no two signatures behind it: flagged, and her approvals refused', async () => {
      await sealedRow(mallory, 'cus_sealedbymallory', 'krq_nosuchrequest');
      const list = await fx.run('custodian', 'list');
      expect(list.stdout).to.match(/mallory .*UNVERIFIED: not a custodian/);
      const hers = await requestId(fx, 'add-custodian', '--name', 'mallory2', '--public-key', mallory2.publicKey);
      await refused('APPROVAL_INVALID', 'approve', hers, '--key', mallory.privateKey, '--yes');
      await db.knex('key_custodians').where({ id: 'cus_sealedbymallory' }).delete();
    });

    it('when she writes a second genesis of two keys she holds, then no custodian is trusted any more: every request is refused (DUAL_CONTROL_TAMPERED) until it is removed', async () => {
      const id = 'krq_forgedgenesis';
      const params: Record<string, string> = {};
      for (const [which, who] of [
        ['first', mallory],
        ['second', mallory2],
      ] as const) {
        const { jwk, thumbprint } = await jwkOf(createPublicKey(fs.readFileSync(who.publicKey)));
        Object.assign(params, {
          [`${which}Name`]: who.name,
          [`${which}Key`]: thumbprint,
          [`${which}PublicKey`]: jwk.x,
        });
      }
      const now = new Date();
      const expires = new Date(now.getTime() + 3600_000);
      const payload = canonicalJson({
        type: 'loyalty-vault/key-request/v2',
        id,
        operation: 'genesis',
        params,
        description: 'forged',
        requestedBy: 'mallory',
        createdAt: now.toISOString(),
        expiresAt: expires.toISOString(),
        deployment: fx.masterKey.keyId,
      });
      await db.knex('key_requests').insert({
        id,
        operation: 'genesis',
        params: JSON.stringify(params),
        payload,
        description: 'forged',
        state: 'executed',
        requested_by: 'mallory',
        origin: 'psql',
        created_at: now,
        expires_at: expires,
      });
      for (const who of [mallory, mallory2]) {
        const { jws, thumbprint } = await sign(payload, who);
        await db.knex('key_approvals').insert({ request_id: id, key_thumbprint: thumbprint, jws, approved_at: now });
      }
      await sealedRow(mallory, 'cus_forged_m1', id);
      await sealedRow(mallory2, 'cus_forged_m2', id);
      await refused('DUAL_CONTROL_TAMPERED', 'request', 'rotate', '--purpose', 'identifier-mac');
      expect((await fx.run('custodian', 'list')).stdout).to.contain('more than one genesis is on record');
      await db.knex('key_custodians').whereIn('id', ['cus_forged_m1', 'cus_forged_m2']).delete();
      await db.knex('key_approvals').where({ request_id: id }).delete();
      await db.knex('key_requests').where({ id }).delete();
      expect(await requestId(fx, 'rotate', '--purpose', 'identifier-mac')).to.match(/^krq_/);
    });

    it('when the master key is rotated, then the register and the ledger are resealed and keep working under the new key alone', async () => {
      const next = randomBytes(32);
      const during = await keysFixture(db, {
        policy: { propagationMs: 0 },
        source: new MasterKeySet(new LocalMasterKey(next, 'next master key'), [fx.masterKey]),
      });
      // Custodians exist: the master-key rotation is dual-controlled too (single-operator mode is refused).
      const master = await requestId(during, 'rotate', '--purpose', 'master');
      expect((await approve(during, master, alice)).code).to.equal(0);
      expect((await approve(during, master, bob)).code).to.equal(0);
      const rotated = await during.run('rotate', '--purpose', 'master', '--apply', '--request', master);
      expect(rotated.code, rotated.stderr).to.equal(0);
      const after = await keysFixture(db, { policy: { propagationMs: 0 }, masterKeyBase64: next.toString('base64') });
      const list = await after.run('custodian', 'list');
      expect(list.stdout).to.not.match(/NOT SEALED|UNVERIFIED/);
      const id = await requestId(after, 'rotate', '--purpose', 'identifier-mac');
      expect((await approve(after, id, alice)).code).to.equal(0);
      expect((await approve(after, id, bob)).code).to.equal(0);
      const res = await after.run('rotate', '--purpose', 'identifier-mac', '--apply', '--request', id);
      expect(res.code, res.stderr).to.equal(0);
    });
  });
});
