/**
 * Every refusal of every key command is in the audit trail (issue 17, docs/key-management.md §4 and
 * §5), and single-operator mode ends when the first two custodians are registered. Run in-process
 * against the file's own database (PGlite or PostgreSQL), as the person running the CLI would.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { verifyAuditChain } from '../../src/audit/audit-log.js';
import { LocalMasterKey, MasterKeySet } from '../../src/keys/master-key-source.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { approve, ed25519, genesis, requestId, type Person } from './custodians-fixture.js';
import { keysFixture, OPERATOR, type KeysFixture } from './keys-context.js';

interface Entry {
  seq: number;
  action: string;
  actor: string;
  actor_type: string;
  outcome: string;
  resource: string;
  details: Record<string, unknown> | string;
}

describe('key commands: every refusal audited; no single operator once custodians exist', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let fx: KeysFixture;
  let lone: KeysFixture;
  let dir: string;
  let alice: Person;
  let bob: Person;

  const newest = async (): Promise<Entry> => (await db.knex('audit_events').orderBy('seq', 'desc').first()) as Entry;
  const denied = async (): Promise<Entry[]> =>
    (await db.knex('audit_events').where({ outcome: 'denied' }).orderBy('seq')) as Entry[];
  const detailsOf = (e: Entry): Record<string, unknown> =>
    typeof e.details === 'string' ? (JSON.parse(e.details) as Record<string, unknown>) : e.details;

  /** The command is refused with `code`, exactly one denied entry is added, and it is returned. */
  async function refusedOnce(on: KeysFixture, code: string, ...argv: string[]): Promise<Entry> {
    const before = (await denied()).length;
    const res = await on.run(...argv);
    expect(res.code, res.stderr).to.equal(1);
    expect(res.stderr).to.contain(code);
    expect(res.stderr).to.not.contain('could not be audited');
    const after = await denied();
    expect(after.length, 'one denied entry per refusal').to.equal(before + 1);
    const entry = after.at(-1)!;
    expect(entry.seq).to.equal((await newest()).seq);
    expect(entry).to.deep.include({ outcome: 'denied', actor: OPERATOR.actor, actor_type: 'operator' });
    expect(detailsOf(entry)['code']).to.equal(code);
    // No secret material: not the master key, not a custodian's private key, no PEM at all.
    const text = JSON.stringify(entry);
    expect(text).to.not.contain(fx.masterKeyBase64);
    for (const who of [alice, bob]) {
      const body = fs.readFileSync(who.privateKey, 'utf8').split('\n')[1]!;
      expect(text).to.not.contain(body);
    }
    expect(text).to.not.contain('PRIVATE KEY');
    return entry;
  }

  before(async () => {
    db = await createTestDatabase({ migrated: true });
    fx = await keysFixture(db, { policy: { propagationMs: 0 } });
    lone = await keysFixture(db, {
      policy: { propagationMs: 0, singleOperator: true },
      masterKeyBase64: fx.masterKeyBase64,
    });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-refusals-'));
    [alice, bob] = ['alice', 'bob'].map((n) => ed25519(dir, n)) as [Person, Person];
  });
  after(async () => {
    await db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('when no custodian is registered yet, then single-operator mode rotates and retires alone (a development installation)', async () => {
    const rotated = await lone.run('rotate', '--purpose', 'audit-signing', '--apply');
    expect(rotated.code, rotated.stderr).to.equal(0);
    const retired = await lone.run('retire', '--purpose', 'audit-signing', '--version', '1', '--apply');
    expect(retired.code, retired.stderr).to.equal(0);
    const again = await lone.run('rotate', '--purpose', 'audit-signing', '--apply'); // v2 decrypt-only
    expect(again.code, again.stderr).to.equal(0);
    await genesis(fx, alice, bob);
  });

  it('when the genesis of the first two custodians is on record, then a lone operator with KEYS_SINGLE_OPERATOR cannot rotate, retire or split, and each refusal is audited', async () => {
    const rotate = await refusedOnce(
      lone,
      'SINGLE_OPERATOR_REFUSED',
      'rotate',
      '--purpose',
      'identifier-mac',
      '--apply',
    );
    expect(rotate.action).to.equal('key.rotate');
    expect(
      (await db.knex('data_keys').where({ purpose: 'identifier-mac' }).select('version')).map((r) => r.version),
    ).to.deep.equal([1]);
    // A master-key rotation to a key of the operator's own (the old one kept as previous) alike.
    const rotating = await keysFixture(db, {
      policy: { propagationMs: 0, singleOperator: true },
      source: new MasterKeySet(new LocalMasterKey(randomBytes(32), 'a key of her own'), [lone.masterKey]),
    });
    await refusedOnce(rotating, 'SINGLE_OPERATOR_REFUSED', 'rotate', '--purpose', 'master', '--apply');
    expect(
      await db.knex('data_keys').whereNot({ kek_id: fx.masterKey.keyId }).whereNotNull('wrapped_key'),
    ).to.have.length(0);
    await refusedOnce(
      lone,
      'SINGLE_OPERATOR_REFUSED',
      'retire',
      '--purpose',
      'audit-signing',
      '--version',
      '2',
      '--apply',
    );
    const out = path.join(dir, 'lone-split');
    const split = await refusedOnce(
      lone,
      'SINGLE_OPERATOR_REFUSED',
      'shares',
      'split',
      '--threshold',
      '2',
      '--all-custodians',
      '--out',
      out,
    );
    expect(split.action).to.equal('master-key.split');
    expect(fs.existsSync(out)).to.equal(false);
    expect(await db.knex('master_key_splits').count({ n: '*' }).first()).to.deep.include({ n: 0 } as never);
  });

  it('when a split names someone who is not a custodian, then keys shares split and keys request split-master-key refuse with MASTER_KEY_SPLIT_INVALID, audited', async () => {
    const id = await requestId(fx, 'split-master-key', '--threshold', '2', '--all-custodians');
    for (const who of [alice, bob]) expect((await approve(fx, id, who)).code).to.equal(0);
    const out = path.join(dir, 'split');
    const args = ['--threshold', '2', '--custodian', 'alice', '--custodian', 'mallory', '--out', out, '--request', id];
    const shares = await refusedOnce(fx, 'MASTER_KEY_SPLIT_INVALID', 'shares', 'split', ...args);
    expect(shares.action).to.equal('key.shares.refused');
    expect(shares.resource).to.equal('command:shares split --threshold');
    expect(detailsOf(shares)['reason']).to.contain('mallory is not a registered custodian');
    expect(fs.existsSync(out)).to.equal(false);

    const request = await refusedOnce(
      fx,
      'MASTER_KEY_SPLIT_INVALID',
      'request',
      'split-master-key',
      '--threshold',
      '2',
      '--custodian',
      'mallory',
    );
    expect(request.action).to.equal('key.request.refused');
    expect(request.resource).to.equal('command:request split-master-key --threshold');
  });

  it('when the dual-control ledger is tampered with, then keys shares split refuses with DUAL_CONTROL_TAMPERED before anything else, audited', async () => {
    const head = (await db.knex('dual_control_ledger').first()) as { chain: string };
    await db.knex('dual_control_ledger').update({ chain: 'f'.repeat(64) });
    try {
      const entry = await refusedOnce(
        fx,
        'DUAL_CONTROL_TAMPERED',
        'shares',
        'split',
        '--threshold',
        '2',
        '--all-custodians',
        '--out',
        path.join(dir, 'tampered'),
      );
      expect(entry.action).to.equal('key.shares.refused');
    } finally {
      await db.knex('dual_control_ledger').update({ chain: head.chain });
    }
  });

  it('when a service already audited its refusal, then the CLI does not audit it twice', async () => {
    const entry = await refusedOnce(fx, 'DUAL_CONTROL_REQUIRED', 'rotate', '--purpose', 'identifier-mac', '--apply');
    expect(entry.action).to.equal('key.rotate');
    expect((await verifyAuditChain(db.knex)).ok).to.equal(true);
  });
});
