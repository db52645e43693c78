/**
 * Card data and the audit trail, acting as the insider (an operator at the key CLI, a database
 * writer): a card number typed where an id belongs is masked in the columns the MAC covers (which can
 * never be redacted) and the refusal is still recorded; and one operator cannot erase dual-control
 * evidence with `keys audit redact`, which only removes card data. Real database, real CLI paths.
 */
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { appendAuditEvent, verifyAuditChain } from '../../src/audit/audit-log.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { ed25519, genesis } from '../keys/custodians-fixture.js';
import { keysFixture, type KeysFixture } from '../keys/keys-context.js';

const PAN_DIGITS = /4111\s?1111\s?1111\s?1111|5555\s?5555\s?5555\s?4444/;

describe('audit trail: card data typed by an operator, and redaction of evidence', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let fx: KeysFixture;
  let dir: string;

  before(async () => {
    db = await createTestDatabase({ migrated: true });
    fx = await keysFixture(db);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-card-audit-'));
    await genesis(fx, ed25519(dir, 'alice'), ed25519(dir, 'bob'));
  });
  after(async () => {
    await db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const stored = async () => JSON.stringify(await db.knex('audit_events'));

  it('when a card number is typed as a request id (request show, approve), then the refusal is recorded with it masked to the last four in resource and details, and the chain verifies', async () => {
    const before = Number(((await db.knex('audit_events').max('seq as m').first()) as { m: number }).m);
    const alice = ed25519(dir, 'alice-2');
    expect((await fx.run('request', 'show', '4111 1111 1111 1111')).code).to.equal(1);
    expect((await fx.run('approve', '4111111111111111', '--key', alice.privateKey, '--yes')).code).to.equal(1);
    expect((await fx.run('request', 'show', '{"x":"5555555555554444"}')).code).to.equal(1);
    const refusals = (await db.knex('audit_events').where('seq', '>', before).where({ outcome: 'denied' })) as {
      resource: string;
    }[];
    expect(refusals.length).to.be.at.least(3);
    expect(refusals.map((r) => r.resource).join(' ')).to.contain('[PAN …1111]');
    expect(await stored()).to.not.match(PAN_DIGITS);
    expect((await verifyAuditChain(db.knex)).ok).to.equal(true);
  });

  it('when card data is put in actor, origin or action by the code, then it is masked; in success details it is still refused', async () => {
    const event = await db.knex.transaction((trx) =>
      appendAuditEvent(trx, {
        actor: 'op 4111 1111 1111 1111',
        actorType: 'operator',
        action: 'card.detokenised',
        outcome: 'success',
        origin: 'cli:5555555555554444',
        resource: 'tok_x',
      }),
    );
    expect(event.actor).to.equal('op [PAN …1111]');
    expect(event.origin).to.equal('cli:[PAN …4444]');
    let thrown: unknown;
    await db.knex
      .transaction((trx) =>
        appendAuditEvent(trx, {
          actor: 'op',
          actorType: 'operator',
          action: 'card.detokenised',
          outcome: 'success',
          origin: 'cli',
          resource: 'tok_x',
          details: { note: '4111111111111111' },
        }),
      )
      .catch((error: unknown) => (thrown = error));
    expect(String(thrown)).to.contain('refusing to write a PAN-like value');
    expect(await stored()).to.not.match(PAN_DIGITS);
  });

  for (const action of [
    'key.custodian.genesis',
    'key.request.executed',
    'key.custodian.registered',
    'key.request.refused',
    'audit.verified',
  ]) {
    it(`when one operator redacts a ${action} entry, then it is refused with AUDIT_REDACTION_INVALID, audited, and the entry is whole`, async () => {
      if (action === 'audit.verified') expect((await fx.run('audit', 'verify')).code).to.equal(0);
      if (action === 'key.request.refused') expect((await fx.run('request', 'show', 'req_nope')).code).to.equal(1);
      const target = (await db.knex('audit_events').where({ action }).orderBy('seq').first()) as
        { seq: number; details: unknown; details_salt: string | null } | undefined;
      expect(target, action).to.not.equal(undefined);
      const res = await fx.run('audit', 'redact', '--seq', String(target!.seq), '--reason', 'tidy up');
      expect(res.code).to.equal(1);
      expect(res.stderr).to.contain('AUDIT_REDACTION_INVALID');
      const after = await db.knex('audit_events').where({ seq: target!.seq }).first();
      expect(after.details_salt).to.equal(target!.details_salt);
      expect(after.details).to.deep.equal(target!.details);
      const denied = await db
        .knex('audit_events')
        .where({ action: 'audit.entry-redacted', outcome: 'denied', resource: `audit:${target!.seq}` });
      expect(denied).to.have.length(1);
      expect((await verifyAuditChain(db.knex)).ok).to.equal(true);
    });
  }
});
