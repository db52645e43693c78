/**
 * The audit trail against a database writer without key material (design.md, threat model): every
 * edit, deletion, insertion, truncation, head re-pointing and hand redaction is detected with a
 * finding that says what happened, and `keys audit verify` exits 1. What the keyed chain alone cannot
 * see (an older, genuinely sealed head row put back after truncation) is shown here too, and caught
 * by a signed checkpoint.
 */
import { expect } from 'chai';
import { CompactSign } from 'jose';
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { detailsDigest, legacyHash, LEGACY_GENESIS_HASH, rowToEvent } from '../../src/audit/audit-chain.js';
import type { AuditRow } from '../../src/audit/audit-store.js';
import { publicKeyThumbprint } from '../../src/audit/audit-export.js';
import { auditEntryIntact, verifyAuditChain } from '../../src/audit/audit-log.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { keysFixture, type KeysFixture } from '../keys/keys-context.js';
import { appendMissedCardData, appendN, recordKeyCreations, resetTrail } from './trail-support.js';

describe('audit trail against an insider with database write access', function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let fx: KeysFixture;
  let dir: string;

  before(async () => {
    db = await createTestDatabase({ migrated: true });
    fx = await keysFixture(db);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-insider-'));
  });
  after(async () => {
    await db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  beforeEach(async () => {
    await resetTrail(db);
    // Entry 1 is the chain key's creation, entries 2 to 6 are key rotations.
    await appendN(db, 5);
  });

  const entry = (seq: number) => db.knex('audit_events').where({ seq });

  /** The audit-signing key's thumbprint, as the assessor pinned it out of band (`audit public-key`). */
  let pin: string | undefined;
  async function pinned(): Promise<string> {
    if (pin === undefined) {
      const res = await fx.run('audit', 'public-key');
      pin = /thumbprint \(RFC 7638[^:]*\): (\S+)/.exec(res.stdout)?.[1];
      expect(pin, res.stdout).to.be.a('string');
    }
    return pin!;
  }

  async function expectDetected(finding: RegExp, seq?: number): Promise<void> {
    const verdict = await verifyAuditChain(db.knex);
    expect(verdict.ok, JSON.stringify(verdict)).to.equal(false);
    if (!verdict.ok) {
      expect(verdict.reason).to.match(finding);
      if (seq !== undefined) expect(verdict.brokenAtSeq).to.equal(seq);
    }
    const res = await fx.run('audit', 'verify');
    expect(res.code, res.stdout + res.stderr).to.equal(1);
    expect(res.stdout).to.match(/audit chain BROKEN at entry \d+: /);
    expect(res.stdout, res.stdout).to.not.contain('could not be recorded');
    // The detection is itself evidence: the newest entry records who verified and what was found.
    const newest = (await db.knex('audit_events').orderBy('seq', 'desc').first()) as AuditRow;
    const recorded = rowToEvent(newest);
    expect(recorded).to.deep.include({
      action: 'audit.verified',
      outcome: 'failure',
      actorType: 'operator',
      resource: 'audit:chain',
    });
    expect(recorded.details['finding']).to.be.a('string').and.to.match(finding);
    const printed = /audit chain BROKEN at entry \d+: (.*) \(\d+ entries verified before it\)/.exec(res.stdout)?.[1];
    expect(recorded.details['finding']).to.equal(printed);
  }

  async function checkpoint(name: string): Promise<string> {
    const file = path.join(dir, name);
    const res = await fx.run('audit', 'checkpoint', '--out', file);
    expect(res.code, res.stderr).to.equal(0);
    return file;
  }

  const columnEdits: [string, () => Promise<Record<string, unknown>>, RegExp][] = [
    ['occurred_at', () => Promise.resolve({ occurred_at: new Date('2020-01-01T00:00:00Z') }), /MAC/],
    ['actor', () => Promise.resolve({ actor: 'someone-else' }), /MAC/],
    ['actor_type', () => Promise.resolve({ actor_type: 'system' }), /MAC/],
    ['action', () => Promise.resolve({ action: 'key.destroyed' }), /MAC/],
    ['outcome', () => Promise.resolve({ outcome: 'failure' }), /MAC/],
    ['origin', () => Promise.resolve({ origin: 'elsewhere' }), /MAC/],
    ['resource', () => Promise.resolve({ resource: 'key:identifier-mac:v9' }), /MAC/],
    ['id', () => Promise.resolve({ id: 'aud_forged' }), /MAC/],
    [
      'details',
      () => Promise.resolve({ details: JSON.stringify({ rows: 0 }) }),
      /has details that do not match their digest \(edited\)/,
    ],
    ['details_digest', async () => ({ details_digest: (await entry(4).first()).details_digest }), /digest/],
    ['details_salt', async () => ({ details_salt: (await entry(4).first()).details_salt }), /digest/],
    ['key_version', () => Promise.resolve({ key_version: 2 }), /audit-chain key v2/],
    ['prev_hash', async () => ({ prev_hash: (await entry(1).first()).hash }), /does not link/],
    ['hash', async () => ({ hash: (await entry(4).first()).hash }), /MAC/],
  ];
  for (const [column, change, finding] of columnEdits) {
    it(`when ${column} of an entry is edited, then verify reports entry 3 and exits 1`, async () => {
      await entry(3).update(await change());
      await expectDetected(finding, 3);
    });
  }

  it('when details are edited and their digest recomputed with the visible salt, then the MAC still gives it away', async () => {
    const row = await entry(3).first();
    const forged = { rows: 0, nested: { a: [1, 2], b: 1 } };
    await entry(3).update({ details: JSON.stringify(forged), details_digest: detailsDigest(row.details_salt, forged) });
    await expectDetected(/does not match its MAC/, 3);
  });

  it('when one entry is checked on its own, then an intact one passes and an edited one fails', async () => {
    expect(await auditEntryIntact(db.knex, 3)).to.equal(true);
    await entry(3).update({ outcome: 'denied' });
    expect(await auditEntryIntact(db.knex, 3)).to.equal(false);
    expect(await auditEntryIntact(db.knex, 99)).to.equal(false);
  });

  it('when an entry in the middle is deleted, then verify reports it missing', async () => {
    await entry(3).delete();
    await expectDetected(/entry 3 is missing/, 3);
  });

  it('when two entries are swapped, then verify reports the first', async () => {
    await entry(2).update({ seq: -2 });
    await entry(3).update({ seq: 2 });
    await entry(-2).update({ seq: 3 });
    await expectDetected(/MAC|link/, 2);
  });

  it('when a forged entry is appended with a made-up MAC and the head re-pointed, then verify reports the forgery', async () => {
    const last = await entry(6).first();
    await db.knex('audit_events').insert({
      ...last,
      seq: 7,
      id: 'aud_forgedforgedforgedforge',
      actor: 'insider',
      prev_hash: last.hash,
      hash: 'A'.repeat(43),
    });
    await db.knex('audit_chain_head').update({ seq: 7, hash: 'A'.repeat(43) });
    await expectDetected(/entry 7 does not match its MAC/, 7);
  });

  it('when the tail is deleted and the head re-pointed at the new last entry, then the head seal gives it away, and the next append records it for good', async () => {
    const fourth = await entry(4).first();
    await db.knex('audit_events').where('seq', '>', 4).delete();
    await db.knex('audit_chain_head').update({ seq: 4, hash: fourth.hash });
    const before = await verifyAuditChain(db.knex);
    expect(before).to.deep.include({
      ok: false,
      reason: 'the chain head seal does not verify (the head was rewritten without the key)',
    });
    // The service keeps working, but does not seal over the tampered head: it records it first.
    await appendN(db, 1);
    const recorded = await entry(5).first();
    expect(recorded.action).to.equal('audit.chain-head-invalid');
    expect(recorded.details).to.deep.include({ headSeq: 4, reason: 'the head seal does not verify' });
    await expectDetected(/found the chain head tampered with/, 5);
  });

  it('when the active audit-chain key is demoted, then the service goes on under a new key version, recorded, and the trail still verifies', async () => {
    await db.knex('audit_chain_keys').update({ state: 'verify-only' });
    await appendN(db, 1);
    const versions = await db.knex('audit_chain_keys').orderBy('version');
    expect(versions.map((k) => [k.version, k.state])).to.deep.equal([
      [1, 'verify-only'],
      [2, 'active'],
    ]);
    expect((await entry(7).first()).action).to.equal('audit.chain-key.created');
    expect((await entry(8).first()).key_version).to.equal(2);
    expect(await verifyAuditChain(db.knex)).to.deep.include({ ok: true, headSeq: 8 });
    await db.knex('audit_chain_keys').where({ version: 2 }).delete();
    await db.knex('audit_chain_keys').where({ version: 1 }).update({ state: 'active' });
  });

  /** The insider, SQL only: rewrites the trail as a plain SHA-256 chain, the way it was before keying. */
  async function rewriteAsPlainChain(): Promise<void> {
    await entry(6).delete(); // drop the tail
    await entry(3).update({ actor: 'someone-else', resource: 'key:pan-encryption:v9' }); // rewrite
    const rows = (await db.knex('audit_events').orderBy('seq')) as AuditRow[];
    let prev = LEGACY_GENESIS_HASH;
    for (const row of rows) {
      const e = rowToEvent(row);
      const hash = legacyHash({
        seq: e.seq,
        id: e.id,
        occurredAt: e.occurredAt,
        actor: e.actor,
        actorType: e.actorType,
        action: e.action,
        outcome: e.outcome,
        origin: e.origin,
        resource: e.resource,
        details: e.details,
        prevHash: prev,
      });
      await entry(row.seq).update({
        key_version: null,
        details_digest: null,
        details_salt: null,
        prev_hash: prev,
        hash,
      });
      prev = hash;
    }
    await db
      .knex('audit_chain_head')
      .where({ id: 1 })
      .update({ seq: rows.at(-1)!.seq, hash: prev, mac: null, key_version: null, legacy_verdict: null });
  }

  for (const [how, hideKeys] of [
    ['demoted to verify-only', () => db.knex('audit_chain_keys').update({ state: 'verify-only' })],
    ['deleted', () => db.knex('audit_chain_keys').delete()],
  ] as const) {
    it(`when the trail is rewritten as a plain chain and the chain key ${how}, then the next append does not convert it: it records the invalid head, and verify exits 1`, async () => {
      const savedKeys = (await db.knex('audit_chain_keys').orderBy('version')) as Record<string, unknown>[];
      await rewriteAsPlainChain();
      await hideKeys();
      try {
        const res = await fx.run('audit', 'verify');
        expect(res.code, res.stdout).to.equal(1);
        expect(res.stdout).to.match(/audit chain BROKEN at entry 1: entry 1 is not keyed/);
        expect(await db.knex('audit_events').where({ action: 'audit.chain-converted' })).to.have.length(0);
        const recorded = await db.knex('audit_events').where({ action: 'audit.chain-head-invalid' }).first();
        expect(recorded.details.reason).to.match(
          /the plain chain was not converted: (audit-chain key v1 exists|entry 1 is dated after)/,
        );
        // The rewritten entries stay unkeyed: nothing re-chained them.
        expect(await db.knex('audit_events').where('seq', '<=', 5).whereNotNull('key_version')).to.have.length(0);
      } finally {
        await db.knex('audit_chain_keys').delete();
        await db.knex('audit_chain_keys').insert(savedKeys);
      }
    });
  }

  it('when the active key is demoted over an edited chain, then the new key version does not seal over it: the append records the finding', async () => {
    await entry(2).update({ actor: 'someone-else' });
    await db.knex('audit_chain_keys').update({ state: 'verify-only' });
    await appendN(db, 1);
    const recorded = await db.knex('audit_events').where({ action: 'audit.chain-head-invalid' }).first();
    expect(recorded.details.reason).to.match(
      /the active audit-chain key was gone and the chain does not verify: entry 2/,
    );
    expect((await verifyAuditChain(db.knex)).ok).to.equal(false);
    await db.knex('audit_chain_keys').where('version', '>', 1).delete();
    await db.knex('audit_chain_keys').where({ version: 1 }).update({ state: 'active' });
  });

  it('when the head is reset to an empty chain over existing entries, then verify reports it', async () => {
    await db.knex('audit_chain_head').update({ seq: 0, hash: 'genesis', mac: null, key_version: null });
    // verify reports it; the CLI's first append records the reset (after entry 6, linked to it) and
    // reports that, instead of failing on a second entry 1 and recording nothing.
    await expectDetected(
      /the chain head names entry 0, the last entry is 6|the head was reset to an empty chain over 6 entries/,
    );
    const invalid = await db.knex('audit_events').where({ action: 'audit.chain-head-invalid' }).first();
    expect(invalid.seq).to.equal(7);
  });

  it('when the tail is deleted and an older, genuinely sealed head row put back, then only a checkpoint kept outside the database catches it', async () => {
    // The insider copies the head row while the trail ends at entry 4 …
    await resetTrail(db);
    await appendN(db, 3);
    const olderHead = await db.knex('audit_chain_head').first();
    await appendN(db, 2);
    const saved = await checkpoint('before-truncation.jws');
    // … and later deletes everything after it and puts that row back.
    await db.knex('audit_events').where('seq', '>', 4).delete();
    await db.knex('audit_chain_head').update(olderHead);
    // The keyed chain alone cannot tell this from a trail that ended at entry 4 (documented limit).
    expect(await verifyAuditChain(db.knex)).to.deep.include({ ok: true, headSeq: 4 });
    const res = await fx.run('audit', 'verify', '--checkpoint', saved, '--public-key-thumbprint', await pinned());
    expect(res.code).to.equal(1);
    expect(res.stdout).to.contain(
      'audit chain does NOT extend the checkpoint: the trail ends at entry 4 but the checkpoint of',
    );
    expect(res.stdout).to.contain('names entry 6: entries 5 to 6 were removed (truncated)');
  });

  it('when the trail is rewritten from the start, even through the service itself, then the checkpoint shows the past changed', async () => {
    const saved = await checkpoint('before-rewrite.jws');
    await resetTrail(db);
    await appendN(db, 10);
    expect((await verifyAuditChain(db.knex)).ok).to.equal(true);
    const res = await fx.run('audit', 'verify', '--checkpoint', saved, '--public-key-thumbprint', await pinned());
    expect(res.code).to.equal(1);
    expect(res.stdout).to.match(
      /entry 6 is not the entry the checkpoint of .* signed: the trail up to it was rewritten/,
    );
  });

  it('when the trail extends a checkpoint, then verify --checkpoint passes with the auditor’s own public key; a checkpoint edited by one byte fails', async () => {
    const saved = await checkpoint('good.jws');
    await recordKeyCreations(db); // the trail was reset under the keys: verify also reconciles them
    await appendN(db, 3);
    const pub = path.join(dir, 'audit.pub.pem');
    expect((await fx.run('audit', 'public-key', '--out', pub)).code).to.equal(0);
    const ok = await fx.run('audit', 'verify', '--checkpoint', saved, '--public-key', pub);
    expect(ok.code, ok.stdout).to.equal(0);
    expect(ok.stdout).to.match(/audit chain intact and extends the checkpoint of .* \(entry 6\)/);
    const [h, p, s] = fs.readFileSync(saved, 'utf8').trim().split('.');
    const claims = JSON.parse(Buffer.from(p!, 'base64url').toString());
    const edited = path.join(dir, 'edited.jws');
    fs.writeFileSync(edited, `${h}.${Buffer.from(JSON.stringify({ ...claims, seq: 2 })).toString('base64url')}.${s}`);
    const bad = await fx.run('audit', 'verify', '--checkpoint', edited, '--public-key', pub);
    expect(bad.code).to.equal(1);
    expect(bad.stdout).to.contain('the checkpoint signature does not verify');
  });

  it('when a database writer plants their own audit-signing public key and forges a checkpoint, then it fails against the pinned thumbprint, and no checkpoint is verified with a key from the database alone', async () => {
    await recordKeyCreations(db);
    const pin = await pinned();
    const saved = await checkpoint('genuine.jws');
    // ---- the insider: their own Ed25519 key in data_keys, a checkpoint of a rewritten trail signed with it
    const planted = generateKeyPairSync('ed25519');
    const plantedPem = planted.publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const row = await db.knex('data_keys').where({ purpose: 'audit-signing', state: 'active' }).first();
    await db
      .knex('data_keys')
      .where({ purpose: 'audit-signing', version: row.version })
      .update({ public_key_pem: plantedPem });
    try {
      const kid = await publicKeyThumbprint(planted.publicKey);
      const claims = JSON.parse(Buffer.from(fs.readFileSync(saved, 'utf8').split('.')[1]!, 'base64url').toString());
      const forged = await new CompactSign(
        Buffer.from(JSON.stringify({ ...claims, signingKey: { ...claims.signingKey, kid } })),
      )
        .setProtectedHeader({ alg: 'EdDSA', typ: 'loyalty-vault-audit-checkpoint+jws', kid })
        .sign(planted.privateKey);
      const file = path.join(dir, 'forged.jws');
      fs.writeFileSync(file, forged);
      const unpinned = await fx.run('audit', 'verify', '--checkpoint', file);
      expect(unpinned.code).to.equal(2);
      expect(unpinned.stderr).to.contain('--public-key-thumbprint');
      const res = await fx.run('audit', 'verify', '--checkpoint', file, '--public-key-thumbprint', pin);
      expect(res.code).to.equal(1);
      expect(res.stdout).to.contain(`not by the pinned audit-signing key ${pin}`);
      // The genuine checkpoint, under the pin, no longer finds its key in the database: refused too.
      const genuine = await fx.run('audit', 'verify', '--checkpoint', saved, '--public-key-thumbprint', pin);
      expect(genuine.code).to.equal(1);
      expect(genuine.stdout).to.contain(`no audit-signing public key in the database has the pinned thumbprint`);
      // public-key prints what the database holds, with its thumbprint: compared with the pin, it differs.
      expect((await fx.run('audit', 'public-key')).stdout).to.contain(
        `thumbprint (RFC 7638, the checkpoints' and exports' kid): ${kid}`,
      );
    } finally {
      await db
        .knex('data_keys')
        .where({ purpose: 'audit-signing', version: row.version })
        .update({ public_key_pem: row.public_key_pem });
    }
    const ok = await fx.run('audit', 'verify', '--checkpoint', saved, '--public-key-thumbprint', pin);
    expect(ok.code, ok.stdout).to.equal(0);
  });

  it('when a checkpoint is asked of a broken trail, then it is refused, nothing is written, and the refusal is audited', async () => {
    await entry(2).update({ actor: 'x' });
    const file = path.join(dir, 'refused.jws');
    const res = await fx.run('audit', 'checkpoint', '--out', file);
    expect(res.code).to.equal(1);
    expect(res.stderr).to.contain('AUDIT_CHAIN_BROKEN');
    expect(fs.existsSync(file)).to.equal(false);
    const denied = await db.knex('audit_events').where({ action: 'audit.checkpointed', outcome: 'denied' });
    expect(denied).to.have.length(1);
    expect(denied[0].details.code).to.equal('AUDIT_CHAIN_BROKEN');
  });

  describe('redaction', () => {
    it('when an entry holding card data (a detector missed it) is redacted through the CLI, then its details are a tombstone, the salt is gone, the redaction is an entry, and the chain verifies', async () => {
      const seq = await appendMissedCardData(db);
      const before = await entry(seq).first();
      const res = await fx.run('audit', 'redact', '--seq', String(seq), '--reason', 'INC-42: card data in a note');
      expect(res.code, res.stderr).to.equal(0);
      const after = await entry(seq).first();
      expect(after.details_salt).to.equal(null);
      expect(after.details_digest).to.equal(before.details_digest);
      expect(after.hash).to.equal(before.hash);
      expect(JSON.stringify(await db.knex('audit_events'))).to.not.contain('4111');
      const redaction = await db
        .knex('audit_events')
        .where({ action: 'audit.entry-redacted', outcome: 'success' })
        .first();
      expect(redaction.actor).to.equal('test-operator');
      expect(redaction.details).to.deep.include({ seq, entryId: before.id, reason: 'INC-42: card data in a note' });
      expect(after.details).to.deep.equal({
        redacted: { bySeq: redaction.seq, at: after.details.redacted.at, reason: 'INC-42: card data in a note' },
      });
      expect(await verifyAuditChain(db.knex)).to.deep.include({ ok: true, redacted: 1 });
      expect((await fx.run('audit', 'verify')).stdout).to.contain('1 redacted entry');
    });

    it('when details are removed by hand (tombstone, salt cleared), then verify reports a hand redaction', async () => {
      await entry(3).update({
        details: JSON.stringify({ redacted: { bySeq: null, at: new Date().toISOString(), reason: 'x' } }),
        details_salt: null,
      });
      await expectDetected(/removed by hand/, 3);
    });

    it('when a hand redaction names an entry that is not its redaction, then verify reports it', async () => {
      const missed = await appendMissedCardData(db);
      expect((await fx.run('audit', 'redact', '--seq', String(missed), '--reason', 'a proper one')).code).to.equal(0);
      const proper = await db.knex('audit_events').where({ action: 'audit.entry-redacted' }).first();
      for (const bySeq of [5, proper.seq]) {
        await entry(4).update({
          details: JSON.stringify({ redacted: { bySeq, at: new Date().toISOString(), reason: 'x' } }),
          details_salt: null,
        });
        const verdict = await verifyAuditChain(db.knex);
        expect(verdict).to.deep.include({ ok: false, brokenAtSeq: 4 });
        if (!verdict.ok)
          expect(verdict.reason).to.match(/entry 4 is redacted, but entry \d+ is not the redaction of it/);
      }
      expect((await fx.run('audit', 'verify')).code).to.equal(1);
    });

    it('when only the salt is cleared, then verify reports it', async () => {
      await entry(3).update({ details_salt: null });
      await expectDetected(/removed by hand/, 3);
    });

    const refusals: [string, string[], string, () => Promise<unknown>][] = [
      [
        'the entry was edited (a redaction would launder it)',
        ['--seq', '7', '--reason', 'cover-up'],
        'AUDIT_CHAIN_BROKEN',
        async () => {
          await appendMissedCardData(db);
          // An edit past the database's card-data guard, by a writer allowed to skip triggers.
          await db.knex.transaction(async (trx) => {
            await trx.raw('set local session_replication_role = replica');
            await trx('audit_events')
              .where({ seq: 7 })
              .update({ details: JSON.stringify({ reason: 'refund to 5555 5555 5555 4444' }) });
          });
        },
      ],
      [
        'the entry holds no card data (redaction removes card data, not evidence)',
        ['--seq', '3', '--reason', 'tidy up'],
        'AUDIT_REDACTION_INVALID',
        () => Promise.resolve(),
      ],
      [
        'the entry is dual-control evidence, even with card data in it',
        ['--seq', '7', '--reason', 'card data in it'],
        'AUDIT_REDACTION_INVALID',
        () => appendMissedCardData(db, 'key.request.executed'),
      ],
      [
        'the reason holds a PAN',
        ['--seq', '3', '--reason', 'card 4111 1111 1111 1111'],
        'AUDIT_REDACTION_INVALID',
        () => Promise.resolve(),
      ],
      [
        'the entry does not exist',
        ['--seq', '999', '--reason', 'nothing there'],
        'AUDIT_REDACTION_INVALID',
        () => Promise.resolve(),
      ],
      [
        'the entry is itself a redaction',
        ['--seq', '8', '--reason', 'hide the redaction'],
        'AUDIT_REDACTION_INVALID',
        async () => {
          await appendMissedCardData(db);
          expect((await fx.run('audit', 'redact', '--seq', '7', '--reason', 'first')).code).to.equal(0);
        },
      ],
    ];
    for (const [when, args, code, setup] of refusals) {
      it(`when ${when}, then the redaction is refused with ${code} and the refusal is audited`, async () => {
        await setup();
        const res = await fx.run('audit', 'redact', ...args);
        expect(res.code).to.equal(1);
        expect(res.stderr).to.contain(code);
        const denied = await db.knex('audit_events').where({ action: 'audit.entry-redacted', outcome: 'denied' });
        expect(denied).to.have.length(1);
        expect(denied[0].details.code).to.equal(code);
        expect(JSON.stringify(denied)).to.not.contain('4111');
      });
    }
  });
});
