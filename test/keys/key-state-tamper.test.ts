/**
 * An insider with write access to the database changes a key version's state or stamps: `keys audit
 * verify` and `keys status` compare every row with the keyed audit trail's key entries and name it
 * (src/keys/key-state-reconciliation.ts). A full untampered lifecycle verifies clean.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LocalMasterKey, MasterKeySet } from '../../src/keys/master-key-source.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { approve, ed25519, genesis, requestId, type Person } from './custodians-fixture.js';
import { keysFixture, type KeysFixture } from './keys-context.js';

describe('key states changed in the database (keys audit verify, keys status)', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let fx: KeysFixture;
  let dir: string;

  const ok = async (...argv: string[]) => {
    const res = await fx.run(...argv);
    expect(res.code, `${argv.join(' ')}: ${res.stderr}${res.stdout}`).to.equal(0);
    return res;
  };

  // One lifecycle for the file: pan-encryption v1..v4 (v4 active, v3 decrypt-only, v2 retired, v1
  // destroyed), a client CA, a master-key rotation that rewraps every key, custodians.
  before(async () => {
    db = await createTestDatabase({ migrated: true });
    const dev = await keysFixture(db, { policy: { singleOperator: true, propagationMs: 0 } });
    fx = dev;
    for (let i = 0; i < 3; i++) await ok('rotate', '--purpose', 'pan-encryption', '--apply');
    await ok('retire', '--purpose', 'pan-encryption', '--version', '1', '--apply');
    await ok('retire', '--purpose', 'pan-encryption', '--version', '2', '--apply');
    await ok('mtls', 'init-ca');
    const newKek = new LocalMasterKey(randomBytes(32), 'new test master key');
    fx = await keysFixture(db, {
      source: new MasterKeySet(newKek, [dev.masterKey]),
      policy: { singleOperator: true, propagationMs: 0 },
    });
    await ok('rotate', '--purpose', 'master', '--apply');
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-keystate-'));
    const [alice, bob] = ['alice', 'bob'].map((n) => ed25519(dir, n)) as [Person, Person];
    await genesis(fx, alice, bob);
    const id = await requestId(fx, 'destroy', '--purpose', 'pan-encryption', '--version', '1');
    for (const who of [alice, bob]) expect((await approve(fx, id, who)).code).to.equal(0);
    await ok('destroy', '--purpose', 'pan-encryption', '--version', '1', '--apply', '--request', id);
    const states = await db.knex('data_keys').where({ purpose: 'pan-encryption' }).orderBy('version').pluck('state');
    expect(states).to.deep.equal(['destroyed', 'retired', 'decrypt-only', 'active']);
  });
  after(async () => {
    await db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const pan = (version: number) => db.knex('data_keys').where({ purpose: 'pan-encryption', version });

  async function lastVerified(): Promise<{ outcome: string; details: Record<string, unknown> }> {
    const row = await db.knex('audit_events').where({ action: 'audit.verified' }).orderBy('seq', 'desc').first();
    return { outcome: row.outcome, details: typeof row.details === 'string' ? JSON.parse(row.details) : row.details };
  }

  /** verify and status both flag `key` naming it; returns verify's output. */
  async function flagged(key: string): Promise<string> {
    const verify = await fx.run('audit', 'verify');
    expect(verify.code, verify.stdout).to.equal(1);
    expect(verify.stdout).to.contain(`KEY STATE TAMPERED ${key}`);
    const recorded = await lastVerified();
    expect(recorded.outcome).to.equal('failure');
    // The finding names it unless a broken chain is the finding; the key states are recorded either way.
    expect(JSON.stringify(recorded.details['keyStates'])).to.contain(key.replace(' ', ':'));
    if (!verify.stdout.includes('audit chain BROKEN')) expect(String(recorded.details['finding'])).to.contain(key);
    const status = await fx.run('status');
    expect(status.code, status.stdout).to.equal(1);
    expect(status.stdout).to.contain(`PROBLEM key-state-tampered: ${key}`);
    return verify.stdout;
  }

  /** Runs `change` as the insider, then puts the rows back as they were. */
  async function tampered(versions: number[], change: () => Promise<unknown>, check: () => Promise<unknown>) {
    const saved = await db.knex('data_keys').where({ purpose: 'pan-encryption' }).whereIn('version', versions);
    await change();
    try {
      await check();
    } finally {
      await db.knex.transaction(async (trx) => {
        // Free the one active slot first (data_keys_one_active), then restore every row.
        await trx('data_keys').where({ purpose: 'pan-encryption' }).whereIn('version', versions).update({
          state: 'retired',
        });
        for (const row of saved) {
          await trx('data_keys').where({ purpose: row.purpose, version: row.version }).update(row);
        }
      });
    }
  }

  it('when nothing was changed outside the key CLI (publish, activate, retire, destroy, a CA, a master-key rotation), then verify and status find nothing and verify records success', async () => {
    const verify = await ok('audit', 'verify');
    expect(verify.stdout).to.contain('key states agree with the audit trail');
    expect((await lastVerified()).outcome).to.equal('success');
    const status = await ok('status');
    expect(status.stdout).not.to.contain('key-state-tampered');
  });

  it('when an insider sets a retired, not destroyed, version back to published, then verify exits 1 naming it and records the finding, and status flags it', async () => {
    await tampered(
      [2],
      () => pan(2).update({ state: 'published', retired_at: null }),
      async () => {
        const out = await flagged('pan-encryption v2');
        expect(out).to.contain('the row says published but the audit trail says retired');
        const recorded = await lastVerified();
        const [finding] = recorded.details['keyStates'] as Record<string, unknown>[];
        expect(finding).to.include({ key: 'pan-encryption:v2', rowState: 'published', trailState: 'retired' });
        expect(finding?.['problem']).to.contain('retired_at is empty but the trail records it');
      },
    );
    await ok('audit', 'verify'); // restored: clean again
  });

  it('when an insider makes a retired version the active one, then it is flagged', async () => {
    await tampered(
      [2, 4],
      () =>
        db.knex.transaction(async (trx) => {
          await trx('data_keys').where({ purpose: 'pan-encryption', version: 4 }).update({ state: 'decrypt-only' });
          await trx('data_keys').where({ purpose: 'pan-encryption', version: 2 }).update({ state: 'active' });
        }),
      async () => {
        const out = await flagged('pan-encryption v2');
        expect(out).to.contain('pan-encryption v2: the row says active but the audit trail says retired');
        expect(out).to.contain('pan-encryption v4: the row says decrypt-only but the audit trail says active');
      },
    );
  });

  it('when an insider post-dates the active version’s activation (hiding an overdue key), or stamps a retirement on it, then it is flagged', async () => {
    const later = new Date(Date.now() + 300 * 86_400_000);
    await tampered(
      [4],
      () => pan(4).update({ activated_at: later }),
      async () => expect(await flagged('pan-encryption v4')).to.contain('activated_at'),
    );
    await tampered(
      [4],
      () => pan(4).update({ retired_at: new Date() }),
      async () => expect(await flagged('pan-encryption v4')).to.contain('retired_at is set but no intact entry'),
    );
  });

  it('when an insider inserts a version no key command created, then it is flagged', async () => {
    const v3 = await pan(3).first();
    await db.knex('data_keys').insert({ ...v3, version: 9, state: 'published', activated_at: null });
    try {
      expect(await flagged('pan-encryption v9')).to.contain('no intact key.created entry');
    } finally {
      await pan(9).delete();
    }
  });

  it('when an insider alters the key.retired entry’s details, then the entry is not counted and the row is flagged', async () => {
    const entry = await db
      .knex('audit_events')
      .where({ action: 'key.retired', resource: 'key:pan-encryption:v2', outcome: 'success' })
      .first();
    const details = typeof entry.details === 'string' ? JSON.parse(entry.details) : entry.details;
    await db
      .knex('audit_events')
      .where({ seq: entry.seq })
      .update({ details: JSON.stringify({ ...details, note: 'x' }) });
    try {
      const out = await flagged('pan-encryption v2');
      expect(out).to.contain(`its key.retired entry ${entry.seq} does not verify`);
      expect(out).to.contain('the row says retired but the audit trail says decrypt-only');
    } finally {
      await db
        .knex('audit_events')
        .where({ seq: entry.seq })
        .update({ details: JSON.stringify(details) });
    }
    await ok('audit', 'verify');
  });

  // Last: a deleted entry breaks the chain for good.
  it('when an insider deletes the key.retired entry of a version set back to published, then verify fails on the chain and on the key state', async () => {
    await pan(2).update({ state: 'published', retired_at: null });
    await db.knex('audit_events').where({ action: 'key.retired', resource: 'key:pan-encryption:v2' }).delete();
    const verify = await fx.run('audit', 'verify');
    expect(verify.code).to.equal(1);
    expect(verify.stdout).to.contain('audit chain BROKEN');
    // Without its key.retired entry the trail says decrypt-only: the row still contradicts it.
    expect(verify.stdout).to.contain(
      'KEY STATE TAMPERED pan-encryption v2: the row says published but the audit trail says decrypt-only',
    );
    expect((await lastVerified()).outcome).to.equal('failure');
  });
});
