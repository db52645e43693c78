import { expect } from 'chai';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { verifyAuditExport } from '../../src/audit/audit-export.js';
import { appendAuditEvent } from '../../src/audit/audit-log.js';
import { appendMissedCardData } from './trail-support.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { keysFixture, type KeysFixture } from '../keys/keys-context.js';

describe('audit trail through the key CLI: verify, signed export, offline verification', function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let fx: KeysFixture;
  let dir: string;

  before(async () => {
    db = await createTestDatabase({ migrated: true });
    fx = await keysFixture(db);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-audit-'));
    for (let i = 0; i < 6; i++) {
      await db.knex.transaction((trx) =>
        appendAuditEvent(trx, {
          actor: `custodian-${i}`,
          actorType: 'custodian',
          action: 'key.test',
          outcome: i % 3 === 0 ? 'denied' : 'success',
          origin: 'cli:test',
          resource: `key:pan-encryption:v${i}`,
          details: { n: i },
        }),
      );
    }
  });
  after(async () => {
    await db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function exportAll(name: string): Promise<{ file: string; publicKey: string }> {
    const file = path.join(dir, name);
    const res = await fx.run(
      'audit',
      'export',
      '--from',
      '2000-01-01T00:00:00Z',
      '--to',
      '2100-01-01T00:00:00Z',
      '--out',
      file,
    );
    expect(res.code, res.stderr).to.equal(0);
    const publicKey = path.join(dir, `${name}.pub.pem`);
    expect((await fx.run('audit', 'public-key', '--out', publicKey)).code).to.equal(0);
    return { file, publicKey };
  }

  it('when the chain is intact, then audit verify says so and exits 0', async () => {
    const res = await fx.run('audit', 'verify');
    expect(res.code).to.equal(0);
    expect(res.stdout).to.match(/audit chain intact: \d+ entries/);
  });

  it('when an export is verified offline with the audit-signing public key, then it verifies and holds every entry of the period', async () => {
    const { file, publicKey } = await exportAll('all.json');
    const doc = JSON.parse(fs.readFileSync(file, 'utf8'));
    expect(doc.entries.length).to.be.greaterThanOrEqual(6);
    for (const e of doc.entries)
      expect(e).to.include.keys('actor', 'action', 'occurredAt', 'outcome', 'origin', 'resource', 'hash');
    expect(fs.readFileSync(`${file}.jws`, 'utf8').trim()).to.match(/^[\w-]+\.\.[\w-]+$/);
    const res = await fx.run('audit', 'verify-export', file, '--public-key', publicKey);
    expect(res.code, res.stdout).to.equal(0);
    expect(res.stdout).to.contain('export verifies');
    const exported = await db.knex('audit_events').where({ action: 'audit.exported' });
    expect(exported).to.have.length.greaterThanOrEqual(1);
    const recorded = exported.map((row) => (typeof row.details === 'string' ? JSON.parse(row.details) : row.details));
    const digest = createHash('sha256').update(fs.readFileSync(file)).digest('base64url');
    expect(recorded.map((d) => d.sha256)).to.include(digest);
  });

  it('when any single byte of an exported file changes, then verification fails', async () => {
    const { file, publicKey } = await exportAll('bytes.json');
    const original = fs.readFileSync(file);
    const signature = fs.readFileSync(`${file}.jws`, 'utf8');
    const pem = fs.readFileSync(publicKey, 'utf8');
    expect((await verifyAuditExport(original, signature, pem)).ok).to.equal(true);
    // The first and last 200 bytes and 800 random others (every position would take seconds on
    // this machine for no more assurance: the signature covers every byte alike).
    const positions = new Set<number>();
    for (let i = 0; i < Math.min(200, original.length); i++) positions.add(i).add(original.length - 1 - i);
    while (positions.size < Math.min(original.length, 1200)) positions.add(Math.floor(Math.random() * original.length));
    let failures = 0;
    for (const i of positions) {
      const copy = Buffer.from(original);
      copy[i] = copy[i]! ^ 0x01;
      if (!(await verifyAuditExport(copy, signature, pem)).ok) failures += 1;
    }
    expect(failures).to.equal(positions.size);
  });

  it('when the signature file or the public key is another, then verification fails', async () => {
    const { file, publicKey } = await exportAll('sig.json');
    const signature = fs.readFileSync(`${file}.jws`, 'utf8').trim();
    const [header, , sig] = signature.split('.');
    const flipped = `${header}..${sig!.slice(0, 10)}${sig![10] === 'A' ? 'B' : 'A'}${sig!.slice(11)}`;
    fs.writeFileSync(path.join(dir, 'flipped.jws'), flipped);
    const bad = await fx.run(
      'audit',
      'verify-export',
      file,
      '--public-key',
      publicKey,
      '--signature',
      path.join(dir, 'flipped.jws'),
    );
    expect(bad.code).to.equal(1);
    // The audit-signing key rotated: the new public key does not verify the old export.
    const other = await keysFixture(db, {
      masterKeyBase64: fx.masterKeyBase64,
      policy: { singleOperator: true, propagationMs: 0 },
    });
    await other.manager().rotate('audit-signing', undefined);
    const newKey = path.join(dir, 'new.pub.pem');
    expect((await other.run('audit', 'public-key', '--version', '2', '--out', newKey)).code).to.equal(0);
    const wrongKey = await fx.run('audit', 'verify-export', file, '--public-key', newKey);
    expect(wrongKey.code).to.equal(1);
    // The old export still verifies with the old version's public key, kept after rotation.
    const oldKey = path.join(dir, 'old.pub.pem');
    expect((await other.run('audit', 'public-key', '--version', '1', '--out', oldKey)).code).to.equal(0);
    expect((await fx.run('audit', 'verify-export', file, '--public-key', oldKey)).code).to.equal(0);
  });

  it('when an entry of the period is redacted, then the export still verifies offline, without that entry’s details or salt', async () => {
    const target = { seq: await appendMissedCardData(db) };
    expect((await fx.run('audit', 'redact', '--seq', String(target.seq), '--reason', 'test redaction')).code).to.equal(
      0,
    );
    const { file, publicKey } = await exportAll('redacted.json');
    const doc = JSON.parse(fs.readFileSync(file, 'utf8'));
    expect(doc.format).to.equal('loyalty-vault/audit-export/v2');
    expect(doc.chain).to.include({ ok: true });
    const exported = doc.entries.find((e: { seq: number }) => e.seq === target.seq);
    expect(exported.detailsSalt).to.equal(null);
    expect(exported.details.redacted.reason).to.equal('test redaction');
    const res = await fx.run('audit', 'verify-export', file, '--public-key', publicKey);
    expect(res.code, res.stdout).to.equal(0);
  });

  it('when an exported entry’s details are changed, then offline verification fails', async () => {
    const { file, publicKey } = await exportAll('digest.json');
    const doc = JSON.parse(fs.readFileSync(file, 'utf8'));
    const plain = doc.entries.find((e: { detailsSalt: string | null }) => e.detailsSalt !== null);
    plain.details = { forged: true };
    const edited = Buffer.from(`${JSON.stringify(doc, null, 2)}\n`);
    const verdict = await verifyAuditExport(
      edited,
      fs.readFileSync(`${file}.jws`, 'utf8'),
      fs.readFileSync(publicKey, 'utf8'),
    );
    expect(verdict.ok).to.equal(false);
  });

  it('when the period is empty or reversed, then the export is refused with AUDIT_EXPORT_INVALID and the refusal is audited', async () => {
    const file = path.join(dir, 'reversed.json');
    const res = await fx.run(
      'audit',
      'export',
      '--from',
      '2027-01-01T00:00:00Z',
      '--to',
      '2026-01-01T00:00:00Z',
      '--out',
      file,
    );
    expect(res.code).to.equal(1);
    expect(res.stderr).to.contain('AUDIT_EXPORT_INVALID');
    expect(fs.existsSync(file)).to.equal(false);
    const denied = await db.knex('audit_events').where({ action: 'audit.exported', outcome: 'denied' });
    expect(denied.map((d) => d.details.code)).to.deep.equal(['AUDIT_EXPORT_INVALID']);
  });

  // Last: these break the chain for good.
  const tamperings: [string, () => Promise<unknown>][] = [
    ['a row is edited', () => db.knex('audit_events').where({ seq: 3 }).update({ outcome: 'failure' })],
    [
      'two rows are reordered',
      async () => {
        await db.knex('audit_events').where({ seq: 2 }).update({ seq: -2 });
        await db.knex('audit_events').where({ seq: 3 }).update({ seq: 2 });
        await db.knex('audit_events').where({ seq: -2 }).update({ seq: 3 });
      },
    ],
    ['a row is deleted', () => db.knex('audit_events').where({ seq: 2 }).delete()],
  ];
  for (const [when, tamper] of tamperings) {
    it(`when ${when}, then audit verify reports the first broken link and exits 1`, async () => {
      const snapshot = await db.knex('audit_events').orderBy('seq');
      const head = await db.knex('audit_chain_head').first();
      try {
        await tamper();
        const res = await fx.run('audit', 'verify');
        expect(res.code).to.equal(1);
        expect(res.stdout).to.match(/audit chain BROKEN at entry [23]:/);
      } finally {
        await db.knex('audit_events').delete();
        await db.knex('audit_events').insert(snapshot);
        await db.knex('audit_chain_head').update(head);
      }
      expect((await fx.run('audit', 'verify')).code).to.equal(0);
    });
  }
});
