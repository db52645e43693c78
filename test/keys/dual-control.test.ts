import { expect } from 'chai';
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CompactSign } from 'jose';
import { verifyAuditChain } from '../../src/audit/audit-log.js';
import { ConfigError, loadConfig } from '../../src/config/config.js';
import { KeyManager } from '../../src/keys/key-manager.js';
import { builtInFieldSets } from '../../src/encrypted-field-sets.js';
import { clientCaHooks } from '../../src/mtls/client-ca-hooks.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { approve as approveAs, ed25519, genesis, requestId, type Person } from './custodians-fixture.js';
import { defaultPolicy, keysFixture, OPERATOR, type KeysFixture } from './keys-context.js';

describe('dual control: custodians, requests and signed approvals', function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let fx: KeysFixture;
  let dir: string;
  let alice: Person;
  let bob: Person;
  let mallory: Person;

  // One database for the file (PGlite start-up and migrations take seconds): tests never depend on
  // each other's effects except the last, which destroys the key the refusal cases left intact.
  before(async () => {
    db = await createTestDatabase({ migrated: true });
    fx = await keysFixture(db, { policy: { propagationMs: 0 } });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-custodians-'));
    [alice, bob, mallory] = ['alice', 'bob', 'mallory'].map((n) => ed25519(dir, n)) as [Person, Person, Person];
    // Single-operator mode, before custodians exist (refused once their genesis is on record).
    await retiredAuditKey();
    await genesis(fx, alice, bob);
  });
  after(async () => {
    await db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const request = (...args: string[]): Promise<string> => requestId(fx, ...args);
  const approve = (id: string, who: Person) => approveAs(fx, id, who);

  /** audit-signing v1 retired (no rows to move), set up in single-operator mode. */
  async function retiredAuditKey(): Promise<void> {
    const dev = new KeyManager({
      knex: db.knex,
      ring: fx.ring,
      masterKey: fx.masterKey,
      registry: builtInFieldSets,
      clientCa: clientCaHooks,
      policy: defaultPolicy({ singleOperator: true, propagationMs: 0 }),
      actor: OPERATOR,
    });
    await dev.rotate('audit-signing', undefined);
    await dev.retire('audit-signing', 1, undefined);
  }

  const denials = async (action: string): Promise<number> =>
    (await db.knex('audit_events').where({ action, outcome: 'denied' })).length;

  async function keyState(): Promise<{ state: string; wrapped: boolean }> {
    const row = await db.knex('data_keys').where({ purpose: 'audit-signing', version: 1 }).first();
    return { state: row.state, wrapped: row.wrapped_key !== null };
  }

  it('when a custodian is registered, then the acknowledgement is required, recorded and audited, and only Ed25519 keys are accepted', async () => {
    const carol = ed25519(dir, 'carol');
    const noAck = await fx.run('custodian', 'add', '--name', 'carol', '--public-key', carol.publicKey);
    expect(noAck.code).to.equal(1);
    expect(noAck.stderr).to.contain('CUSTODIAN_INVALID');
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'pem', type: 'spki' });
    fs.writeFileSync(path.join(dir, 'rsa.pem'), rsa);
    const wrongType = await fx.run(
      'custodian',
      'add',
      '--name',
      'carol',
      '--public-key',
      path.join(dir, 'rsa.pem'),
      '--acknowledge',
    );
    expect(wrongType.stderr).to.contain('CUSTODIAN_INVALID');
    const sameKey = await fx.run(
      'custodian',
      'add',
      '--name',
      'alice-again',
      '--public-key',
      alice.publicKey,
      '--acknowledge',
    );
    expect(sameKey.stderr).to.contain('CUSTODIAN_EXISTS');
    const rows = await db.knex('key_custodians').orderBy('name');
    expect(rows.map((r) => r.name)).to.not.include.members(['carol', 'alice-again']);
    expect(rows[0].acknowledgement).to.contain('PCI DSS 3.7.8');
    const audited = await db.knex('audit_events').where({ action: 'key.custodian.registered', outcome: 'success' });
    expect(audited.length).to.be.greaterThanOrEqual(2);
    expect(JSON.stringify(audited[0].details)).to.contain('acknowledgement');
  });

  it('when a third custodian is added, then it needs a request approved by two existing custodians', async () => {
    const dave = ed25519(dir, 'dave');
    const denied = await denials('key.custodian.registered');
    const alone = await fx.run('custodian', 'add', '--name', 'dave', '--public-key', dave.publicKey, '--acknowledge');
    expect(alone.code).to.equal(1);
    expect(alone.stderr).to.contain('DUAL_CONTROL_REQUIRED');
    expect(await denials('key.custodian.registered')).to.equal(denied + 1);
    const id = await request('add-custodian', '--name', 'dave', '--public-key', dave.publicKey);
    await approve(id, alice);
    // A request names the key: approving dave does not let another key in under his name.
    const eve = ed25519(dir, 'eve');
    const swapped = await fx.run(
      'custodian',
      'add',
      '--name',
      'dave',
      '--public-key',
      eve.publicKey,
      '--acknowledge',
      '--request',
      id,
    );
    expect(swapped.stderr).to.contain('KEY_REQUEST_MISMATCH');
    await approve(id, bob);
    const added = await fx.run(
      'custodian',
      'add',
      '--name',
      'dave',
      '--public-key',
      dave.publicKey,
      '--acknowledge',
      '--request',
      id,
    );
    expect(added.code, added.stderr).to.equal(0);
    expect((await db.knex('key_custodians').orderBy('name')).map((r) => r.name)).to.deep.equal([
      'alice',
      'bob',
      'dave',
    ]);
  });

  it('when rotate --apply is run without an approved request, then it is refused, nothing changes, and the refusal is audited', async () => {
    const denied = await denials('key.rotate');
    const res = await fx.run('rotate', '--purpose', 'identifier-mac', '--apply');
    expect(res.code).to.equal(1);
    expect(res.stderr).to.contain('DUAL_CONTROL_REQUIRED');
    expect(await db.knex('data_keys').where({ purpose: 'identifier-mac' })).to.have.length(1);
    expect(await denials('key.rotate')).to.equal(denied + 1);
  });

  it('when two distinct custodians approve a rotation request, then it runs once, with both signatures in the audit trail', async () => {
    const id = await request('rotate', '--purpose', 'pan-encryption');
    expect((await approve(id, alice)).code).to.equal(0);
    expect((await approve(id, bob)).code).to.equal(0);
    const res = await fx.run('rotate', '--purpose', 'pan-encryption', '--apply', '--request', id);
    expect(res.code, res.stderr).to.equal(0);
    expect((await db.knex('data_keys').where({ purpose: 'pan-encryption', version: 2 }).first()).state).to.equal(
      'active',
    );
    const published = await db
      .knex('audit_events')
      .where({ action: 'key.published', resource: 'key:pan-encryption:v2' })
      .first();
    const details = typeof published.details === 'string' ? JSON.parse(published.details) : published.details;
    expect(details.requestId).to.equal(id);
    expect(details.approvals.map((a: { custodian: string }) => a.custodian)).to.deep.equal(['alice', 'bob']);
    expect(details.approvals[0].jws).to.match(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    const again = await fx.run('rotate', '--purpose', 'pan-encryption', '--apply', '--request', id);
    expect(again.stderr).to.contain('KEY_REQUEST_NOT_PENDING');
    expect(await db.knex('data_keys').where({ purpose: 'pan-encryption' })).to.have.length(2);
  });

  const refusals: [string, () => Promise<string | undefined>, string][] = [
    ['without any request', () => Promise.resolve(undefined), 'DUAL_CONTROL_REQUIRED'],
    [
      'with one approval',
      async () => {
        const id = await request('destroy', '--purpose', 'audit-signing', '--version', '1');
        await approve(id, alice);
        return id;
      },
      'DUAL_CONTROL_REQUIRED',
    ],
    [
      'with the same custodian approving twice',
      async () => {
        const id = await request('destroy', '--purpose', 'audit-signing', '--version', '1');
        expect((await approve(id, alice)).code).to.equal(0);
        const denied = await denials('key.request.approved');
        const twice = await approve(id, alice);
        expect(twice.stderr).to.contain('APPROVAL_DUPLICATE');
        expect(await denials('key.request.approved')).to.equal(denied + 1);
        return id;
      },
      'DUAL_CONTROL_REQUIRED',
    ],
    [
      'with an approval by an unregistered key',
      async () => {
        const id = await request('destroy', '--purpose', 'audit-signing', '--version', '1');
        await approve(id, alice);
        const outsider = await approve(id, mallory);
        expect(outsider.stderr).to.contain('APPROVAL_INVALID');
        return id;
      },
      'DUAL_CONTROL_REQUIRED',
    ],
    [
      "with a forged signature recorded under a custodian's name",
      async () => {
        const id = await request('destroy', '--purpose', 'audit-signing', '--version', '1');
        await approve(id, alice);
        const { payload } = await db.knex('key_requests').where({ id }).first();
        const forged = await new CompactSign(new TextEncoder().encode(payload))
          .setProtectedHeader({ alg: 'EdDSA', typ: 'loyalty-vault-key-approval+jws' })
          .sign((await import('node:crypto')).createPrivateKey(fs.readFileSync(mallory.privateKey)));
        const bobRow = await db.knex('key_custodians').where({ name: 'bob' }).first();
        await db.knex('key_approvals').insert({
          request_id: id,
          custodian_id: bobRow.id,
          key_thumbprint: bobRow.key_thumbprint,
          jws: forged,
          approved_at: new Date(),
        });
        return id;
      },
      'APPROVAL_INVALID',
    ],
    [
      'with a signature made over a different request',
      async () => {
        const other = await request('destroy', '--purpose', 'audit-signing', '--version', '1');
        await approve(other, bob);
        const id = await request('destroy', '--purpose', 'audit-signing', '--version', '1');
        await approve(id, alice);
        const moved = await db.knex('key_approvals').where({ request_id: other }).first();
        await db.knex('key_approvals').insert({ ...moved, request_id: id });
        return id;
      },
      'KEY_REQUEST_TAMPERED',
    ],
    [
      'with a request approved for another key version',
      async () => {
        const id = await request('destroy', '--purpose', 'audit-signing', '--version', '2');
        await approve(id, alice);
        await approve(id, bob);
        return id;
      },
      'KEY_REQUEST_MISMATCH',
    ],
  ];

  for (const [when, setUp, code] of refusals) {
    it(`when destroy is attempted ${when}, then it is refused with ${code} and the key material is intact`, async () => {
      const denied = await denials('key.destroy');
      const id = await setUp();
      const res = await fx.run(
        'destroy',
        '--purpose',
        'audit-signing',
        '--version',
        '1',
        '--apply',
        ...(id === undefined ? [] : ['--request', id]),
      );
      expect(res.code).to.equal(1);
      expect(res.stderr).to.contain(code);
      expect(await keyState()).to.deep.equal({ state: 'retired', wrapped: true });
      expect(await denials('key.destroy')).to.equal(denied + 1);
      expect((await verifyAuditChain(db.knex)).ok).to.equal(true);
    });
  }

  it('when an active version is asked to be destroyed, then it is refused even with approvals', async () => {
    const id = await request('destroy', '--purpose', 'identifier-mac', '--version', '1');
    await approve(id, alice);
    await approve(id, bob);
    const res = await fx.run('destroy', '--purpose', 'identifier-mac', '--version', '1', '--apply', '--request', id);
    expect(res.stderr).to.contain('KEY_OPERATION_INVALID');
    expect((await db.knex('data_keys').where({ purpose: 'identifier-mac', version: 1 }).first()).state).to.equal(
      'active',
    );
  });

  it('when single-operator mode is configured in production, then start-up and the operation refuse it', async () => {
    let failure: unknown;
    try {
      loadConfig({ NODE_ENV: 'production', KEYS_SINGLE_OPERATOR: 'true' });
    } catch (error) {
      failure = error;
    }
    expect(failure).to.be.instanceOf(ConfigError);
    expect((failure as ConfigError).problems.join('\n')).to.contain('KEYS_SINGLE_OPERATOR is for development only');
    const prod = new KeyManager({
      knex: db.knex,
      ring: fx.ring,
      masterKey: fx.masterKey,
      registry: builtInFieldSets,
      clientCa: clientCaHooks,
      policy: defaultPolicy({ singleOperator: true, production: true, propagationMs: 0 }),
      actor: OPERATOR,
    });
    let refused: unknown;
    try {
      await prod.rotate('identifier-mac', undefined);
    } catch (error) {
      refused = error;
    }
    expect((refused as { code?: string }).code).to.equal('SINGLE_OPERATOR_REFUSED');
  });

  // Last: destroys the key that every refusal above left intact.
  it('when destroy has two valid approvals from distinct custodians, then the wrapped material is wiped, irreversibly, with the signatures audited', async () => {
    const plan = await fx.run('destroy', '--purpose', 'audit-signing', '--version', '1');
    expect(plan.stdout).to.contain('IRREVERSIBLE');
    expect(await keyState()).to.deep.equal({ state: 'retired', wrapped: true });
    const id = await request('destroy', '--purpose', 'audit-signing', '--version', '1');
    await approve(id, bob);
    await approve(id, alice);
    const res = await fx.run('destroy', '--purpose', 'audit-signing', '--version', '1', '--apply', '--request', id);
    expect(res.code, res.stderr).to.equal(0);
    expect(await keyState()).to.deep.equal({ state: 'destroyed', wrapped: false });
    const entry = await db.knex('audit_events').where({ action: 'key.destroyed' }).first();
    const details = typeof entry.details === 'string' ? JSON.parse(entry.details) : entry.details;
    expect(details.irreversible).to.equal(true);
    expect(details.approvals).to.have.length(2);
  });
});
