/**
 * Two takeovers an insider with database write access tried after the dual-control rebuild, and the
 * clock they would use, each refused and audited with its code:
 *
 * - replacing both custodians: empty the register and complete, with the ordinary CLI, a genesis of
 *   two keys of her own (DUAL_CONTROL_TAMPERED: a genesis runs only as the ledger's first execution,
 *   and the register trusts only that genesis);
 * - reactivating a retired key without approvals: set its state back to `published` and let
 *   `keys rotate --apply` "resume" it (KEY_STATE_TAMPERED: only an authorised publication of a version
 *   never in use is resumed);
 * - an expired request run under a wound-back CLI clock (KEY_REQUEST_EXPIRED: the database's clock).
 */
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { CompactSign } from 'jose';
import { canonicalJson } from '../../src/audit/audit-log.js';
import { insertSealedCustodian, jwkFromX, jwkOf } from '../../src/keys/custodians.js';
import { verifyRegister } from '../../src/keys/custodian-provenance.js';
import { createRequest } from '../../src/keys/dual-control.js';
import { approveRequest } from '../../src/keys/key-approvals.js';
import { insertNewKey } from '../../src/keys/key-ring.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { approve, ed25519, genesis, requestId, type Person } from './custodians-fixture.js';
import { keysFixture, OPERATOR, type KeysFixture } from './keys-context.js';

/** Runs a command that must be refused with `code`, and checks the refusal was audited with it. */
async function refused(db: TestDatabase, fx: KeysFixture, code: string, ...argv: string[]): Promise<string> {
  const head = async () =>
    Number(((await db.knex('audit_chain_head').where({ id: 1 }).first()) as { seq: number | string }).seq);
  const before = await head();
  const res = await fx.run(...argv);
  expect(res.code, `${argv.join(' ')}: ${res.stdout}${res.stderr}`).to.equal(1);
  expect(res.stderr).to.contain(`refused: ${code}`);
  const denials = (await db
    .knex('audit_events')
    .where('seq', '>', before)
    .andWhere({ outcome: 'denied' })
    .select('details', 'actor_type')) as { details: string | { code: string }; actor_type: string }[];
  const codes = denials.map(
    (d) => (typeof d.details === 'string' ? (JSON.parse(d.details) as { code: string }) : d.details).code,
  );
  expect(codes, argv.join(' ')).to.include(code);
  expect(denials.every((d) => d.actor_type === 'operator')).to.equal(true);
  return res.stderr;
}

async function sign(payload: string, who: Person): Promise<{ jws: string; thumbprint: string }> {
  const key = createPrivateKey(fs.readFileSync(who.privateKey));
  const { thumbprint } = await jwkOf(createPublicKey(key));
  const jws = await new CompactSign(new TextEncoder().encode(payload))
    .setProtectedHeader({ alg: 'EdDSA', typ: 'loyalty-vault-key-approval+jws', kid: thumbprint })
    .sign(key);
  return { jws, thumbprint };
}

describe('custody takeovers by a database writer', function () {
  this.timeout(180_000);
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-takeover-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  describe('replacing both custodians with a second genesis', () => {
    let db: TestDatabase;
    let fx: KeysFixture;
    let alice: Person;
    let bob: Person;
    let mallory: Person;
    let molly: Person;
    const forged = 'krq_forgedgenesis2';

    before(async () => {
      db = await createTestDatabase({ migrated: true });
      fx = await keysFixture(db, { policy: { propagationMs: 0 } });
      [alice, bob, mallory, molly] = ['alice', 'bob', 'mallory', 'molly'].map((n) => ed25519(dir, n)) as [
        Person,
        Person,
        Person,
        Person,
      ];
      await genesis(fx, alice, bob);
    });
    after(async () => {
      await db.close();
    });

    it('when she empties the register and completes a genesis of her own keys with the CLI, then it is refused with DUAL_CONTROL_TAMPERED, audited, and nobody is registered', async () => {
      // SQL only: a genesis request naming two keys she holds, signed by both, the register emptied.
      const params: Record<string, string> = {};
      for (const [which, who] of [
        ['first', mallory],
        ['second', molly],
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
      const stored = (await db.knex('key_requests').first('payload')) as { payload: string };
      const deployment = (JSON.parse(stored.payload) as { deployment: string }).deployment;
      const payload = canonicalJson({
        type: 'loyalty-vault/key-request/v2',
        id: forged,
        operation: 'genesis',
        params,
        description: 'x',
        requestedBy: 'mallory',
        createdAt: now.toISOString(),
        expiresAt: expires.toISOString(),
        deployment,
      });
      await db.knex('key_requests').insert({
        id: forged,
        operation: 'genesis',
        params: JSON.stringify(params),
        payload,
        description: 'x',
        state: 'pending',
        requested_by: 'mallory',
        origin: 'psql',
        created_at: now,
        expires_at: expires,
      });
      for (const who of [mallory, molly]) {
        const { jws, thumbprint } = await sign(payload, who);
        await db
          .knex('key_approvals')
          .insert({ request_id: forged, key_thumbprint: thumbprint, jws, approved_at: now });
      }
      await db.knex('key_approvals').update({ custodian_id: null });
      await db.knex('key_custodians').delete();

      const stderr = await refused(db, fx, 'DUAL_CONTROL_TAMPERED', 'custodian', 'genesis', '--request', forged);
      expect(stderr).to.contain('A genesis is on record');
      expect(await db.knex('key_custodians')).to.have.length(0);
      const geneses = await db.knex('audit_events').where({ action: 'key.custodian.genesis', outcome: 'success' });
      expect(geneses).to.have.length(1);
      // With nobody registered, nothing can be requested: fail closed.
      await refused(db, fx, 'CUSTODIANS_TOO_FEW', 'request', 'rotate', '--purpose', 'identifier-mac');
    });

    it('when she also holds the master key and seals rows for her genesis herself, then nobody is trusted: requests are refused with DUAL_CONTROL_TAMPERED, audited', async () => {
      for (const who of [mallory, molly]) {
        const { jwk, thumbprint } = await jwkOf(createPublicKey(fs.readFileSync(who.publicKey)));
        const key = await jwkFromX(String(jwk.x));
        await db.knex.transaction((trx) =>
          insertSealedCustodian(
            trx,
            fx.ctx.masterKey,
            {
              id: `cus_${who.name}forged`,
              name: who.name,
              jwk: key!.jwk,
              thumbprint,
              authorisedBy: forged,
              registeredBy: 'mallory',
            },
            new Date(),
          ),
        );
      }
      const verdict = await verifyRegister(db.knex, fx.ctx.masterKey);
      expect(verdict.trusted.size).to.equal(0);
      expect(verdict.tampered).to.contain('not the first execution in the sealed ledger');
      await refused(db, fx, 'DUAL_CONTROL_TAMPERED', 'request', 'rotate', '--purpose', 'identifier-mac');
      const list = await fx.run('custodian', 'list');
      expect(list.stdout).to.contain('UNVERIFIED');
    });
  });

  describe('a genesis whose audit entry was tampered with', () => {
    let db: TestDatabase;
    let fx: KeysFixture;

    before(async () => {
      db = await createTestDatabase({ migrated: true });
      fx = await keysFixture(db, { policy: { propagationMs: 0 } });
      const [carol, dave] = ['carol', 'dave'].map((n) => ed25519(dir, n)) as [Person, Person];
      await genesis(fx, carol, dave);
    });
    after(async () => {
      await db.close();
    });

    it('when the key.custodian.genesis entry is edited, then the register trusts nobody and requests are refused with DUAL_CONTROL_TAMPERED', async () => {
      expect((await verifyRegister(db.knex, fx.ctx.masterKey)).trusted.size).to.equal(2);
      const entry = (await db
        .knex('audit_events')
        .where({ action: 'key.custodian.genesis', outcome: 'success' })
        .first('seq', 'actor')) as { seq: number; actor: string };
      await db.knex('audit_events').where({ seq: entry.seq }).update({ actor: 'someone-else' });
      const verdict = await verifyRegister(db.knex, fx.ctx.masterKey);
      expect([verdict.trusted.size, verdict.tampered]).to.deep.equal([
        0,
        'The custodian register does not verify: the audit entry of the genesis does not verify. Nobody is trusted until it is restored.',
      ]);
      await refused(db, fx, 'DUAL_CONTROL_TAMPERED', 'request', 'rotate', '--purpose', 'identifier-mac');
      await db.knex('audit_events').where({ seq: entry.seq }).update({ actor: entry.actor });
      expect((await verifyRegister(db.knex, fx.ctx.masterKey)).trusted.size).to.equal(2);
    });
  });

  describe('reactivating a key version through the resume path', () => {
    let db: TestDatabase;
    let dev: KeysFixture;
    let prod: KeysFixture;

    const states = async (): Promise<string[]> =>
      (
        (await db.knex('data_keys').where({ purpose: 'identifier-mac' }).orderBy('version')) as {
          version: number;
          state: string;
        }[]
      ).map((r) => `v${r.version} ${r.state}`);

    /** A rotation interrupted after its publication (the process dies before it activates). */
    async function interruptedRotation(fx: KeysFixture, requestId: string | undefined): Promise<void> {
      const dies = (message: string): void => {
        if (message.startsWith('published ')) throw new Error('killed after publishing');
      };
      await fx
        .manager()
        .rotate('identifier-mac', requestId, dies)
        .then(
          () => expect.fail('the rotation was not interrupted'),
          (error: Error) => expect(error.message).to.equal('killed after publishing'),
        );
    }

    before(async () => {
      db = await createTestDatabase({ migrated: true });
      dev = await keysFixture(db, { policy: { propagationMs: 0, singleOperator: true } });
      prod = await keysFixture(db, {
        policy: { propagationMs: 0, production: true },
        masterKeyBase64: dev.masterKeyBase64,
      });
    });
    after(async () => {
      await db.close();
    });

    it('when a retired version is set back to published and rotate --apply runs without a request, then it is refused with KEY_STATE_TAMPERED, audited, and stays inactive', async () => {
      expect((await dev.run('rotate', '--purpose', 'identifier-mac', '--apply')).code).to.equal(0);
      const retired = await dev.run('retire', '--purpose', 'identifier-mac', '--version', '1', '--apply');
      expect(retired.code, retired.stderr).to.equal(0);
      await refused(db, prod, 'DUAL_CONTROL_REQUIRED', 'rotate', '--purpose', 'identifier-mac', '--apply');

      await db.knex('data_keys').where({ purpose: 'identifier-mac', version: 1 }).update({ state: 'published' });
      await refused(db, prod, 'KEY_STATE_TAMPERED', 'rotate', '--purpose', 'identifier-mac', '--apply');
      // Development mode is no way round it either.
      await refused(db, dev, 'KEY_STATE_TAMPERED', 'rotate', '--purpose', 'identifier-mac', '--apply');
      expect(await states()).to.deep.equal(['v1 published', 'v2 active']);
      await db.knex('data_keys').where({ purpose: 'identifier-mac', version: 1 }).update({ state: 'retired' });
    });

    it('when the active (newest) version is set back to published with its times cleared, then its recorded activation refuses the resume with KEY_STATE_TAMPERED', async () => {
      await db
        .knex('data_keys')
        .where({ purpose: 'identifier-mac', version: 2 })
        .update({ state: 'published', activated_at: null });
      const stderr = await refused(db, dev, 'KEY_STATE_TAMPERED', 'rotate', '--purpose', 'identifier-mac', '--apply');
      expect(stderr).to.contain('the audit trail records key.activated');
      await db
        .knex('data_keys')
        .where({ purpose: 'identifier-mac', version: 2 })
        .update({ state: 'active', activated_at: new Date() });
    });

    it('when a holder of the master key inserts a published version herself, then it has no authorised publication and is refused with KEY_STATE_TAMPERED', async () => {
      await db.knex.transaction((trx) =>
        insertNewKey(trx, prod.ctx.masterKey, 'identifier-mac', 3, 'published', OPERATOR),
      );
      const stderr = await refused(db, prod, 'KEY_STATE_TAMPERED', 'rotate', '--purpose', 'identifier-mac', '--apply');
      expect(stderr).to.contain('0 key.published entries');
      expect(await states()).to.deep.equal(['v1 retired', 'v2 active', 'v3 published']);
      await db.knex('data_keys').where({ purpose: 'identifier-mac', version: 3 }).delete();
    });

    it('when a development (single-operator) publication is resumed in production, then it is refused with KEY_STATE_TAMPERED; in development it resumes', async () => {
      await interruptedRotation(dev, undefined);
      expect(await states()).to.deep.equal(['v1 retired', 'v2 active', 'v3 published']);
      const stderr = await refused(db, prod, 'KEY_STATE_TAMPERED', 'rotate', '--purpose', 'identifier-mac', '--apply');
      expect(stderr).to.contain('single-operator mode');
      const resumed = await dev.run('rotate', '--purpose', 'identifier-mac', '--apply');
      expect(resumed.code, resumed.stderr).to.equal(0);
      expect(await states()).to.deep.equal(['v1 retired', 'v2 decrypt-only', 'v3 active']);
    });

    it('when a dual-control rotation is interrupted after publishing, then rotate --apply resumes it without a new request', async () => {
      const [erin, frank] = ['erin', 'frank'].map((n) => ed25519(dir, n)) as [Person, Person];
      await genesis(prod, erin, frank);
      const id = await requestId(prod, 'rotate', '--purpose', 'identifier-mac');
      for (const who of [erin, frank]) expect((await approve(prod, id, who)).code).to.equal(0);
      await interruptedRotation(prod, id);
      expect((await states()).at(-1)).to.equal('v4 published');
      const resumed = await prod.run('rotate', '--purpose', 'identifier-mac', '--apply');
      expect(resumed.code, resumed.stderr).to.equal(0);
      expect(resumed.stdout).to.contain('resuming');
      expect((await states()).slice(-2)).to.deep.equal(['v3 decrypt-only', 'v4 active']);
    });
  });

  describe('the clock that decides expiry', () => {
    let db: TestDatabase;
    let fx: KeysFixture;
    let gina: Person;
    let hal: Person;

    before(async () => {
      db = await createTestDatabase({ migrated: true });
      fx = await keysFixture(db, { policy: { propagationMs: 0 } });
      [gina, hal] = ['gina', 'hal'].map((n) => ed25519(dir, n)) as [Person, Person];
      await genesis(fx, gina, hal);
    });
    after(async () => {
      await db.close();
    });

    it('when a request is made and approved, then its times are the database clock', async () => {
      const id = await requestId(fx, 'rotate', '--purpose', 'identifier-mac');
      const [{ now }] = ((await db.knex.raw('select clock_timestamp() as now')) as { rows: [{ now: Date }] }).rows;
      const row = (await db.knex('key_requests').where({ id }).first('payload')) as { payload: string };
      const payload = JSON.parse(row.payload) as { createdAt: string; expiresAt: string };
      expect(new Date(now).getTime() - Date.parse(payload.createdAt)).to.be.within(0, 60_000);
      expect(Date.parse(payload.expiresAt) - Date.parse(payload.createdAt)).to.equal(24 * 3600 * 1000);
    });

    it('when a request expired by the database clock is run with the CLI process clock wound back, then it is refused with KEY_REQUEST_EXPIRED, audited', async function () {
      // Embedded PGlite runs inside the process that opened it and reads that process's clock: there
      // the database clock is the owner's (the service's, when the CLI reaches it over its socket).
      if (db.url === undefined) this.skip();
      const past = new Date(Date.now() - 25 * 3600 * 1000);
      const ctx = { actor: fx.ctx.actor, masterKey: fx.ctx.masterKey };
      const toVersion = (await fx.manager().planRotation('identifier-mac')).toVersion;
      const created = await createRequest(
        db.knex,
        { operation: 'rotate', params: { purpose: 'identifier-mac', toVersion }, description: 'old' },
        ctx,
        past,
      );
      for (const who of [gina, hal]) {
        await approveRequest(db.knex, created.id, fs.readFileSync(who.privateKey, 'utf8'), created.digest, ctx, past);
      }
      // The insider runs the CLI under a clock two days behind: every Date of this process reads then.
      const RealDate = Date;
      const wound = RealDate.now() - 48 * 3600 * 1000;
      class WoundBack extends RealDate {
        constructor(...args: unknown[]) {
          if (args.length === 0) super(wound);
          else super(...(args as [string | number]));
        }
        static override now(): number {
          return wound;
        }
      }
      globalThis.Date = WoundBack as DateConstructor;
      try {
        expect(new Date().getTime()).to.equal(wound);
        await refused(
          db,
          fx,
          'KEY_REQUEST_EXPIRED',
          'rotate',
          '--purpose',
          'identifier-mac',
          '--apply',
          '--request',
          created.id,
        );
      } finally {
        globalThis.Date = RealDate;
      }
      expect(await db.knex('key_request_executions').where({ request_id: created.id })).to.have.length(0);
    });
  });
});
