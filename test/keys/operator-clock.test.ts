/**
 * Key-state stamps and the key manager's audit entries take the database's clock, not the operator's:
 * an operator running the key CLI under a wrong clock (or `faketime`) must not post-date an activation
 * to hide an overdue key, or back-date one to shorten the backfill's settle wait.
 */
import { expect } from 'chai';
import { builtInFieldSets } from '../../src/encrypted-field-sets.js';
import { KeyManager } from '../../src/keys/key-manager.js';
import { clientCaHooks } from '../../src/mtls/client-ca-hooks.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { defaultPolicy, keysFixture, OPERATOR, type KeysFixture } from './keys-context.js';

describe("key manager: stamps on the database's clock, whatever the operator's clock says", function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let fx: KeysFixture;
  before(async () => {
    db = await createTestDatabase({ migrated: true });
    fx = await keysFixture(db, { policy: { singleOperator: true, propagationMs: 0 } });
  });
  after(async () => db.close());

  it("when the operator clock is years off, then activation, retirement and their audit entries (a refusal's too) carry the database time", async () => {
    const skewed = new KeyManager({
      knex: db.knex,
      ring: fx.ring,
      masterKey: fx.masterKey,
      registry: builtInFieldSets,
      clientCa: clientCaHooks,
      policy: defaultPolicy({ singleOperator: true, propagationMs: 0 }),
      actor: OPERATOR,
      now: () => new Date('2001-01-01T00:00:00Z'),
    });
    const before = Date.now();
    await skewed.rotate('audit-signing', undefined);
    await skewed.retire('audit-signing', 1, undefined);
    // A refusal is audited too (destruction takes two custodians' approvals): on the same clock.
    const refused = await skewed.destroy('audit-signing', 1, undefined).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(refused, 'destroy without approvals is refused').to.not.equal(undefined);
    const after = Date.now();
    const within = (at: Date | string | null, what: string): void => {
      const t = new Date(at as string).getTime();
      expect(t, what).to.be.within(before - 5_000, after + 5_000);
    };
    const rows = (await db.knex('data_keys').where({ purpose: 'audit-signing' }).orderBy('version')) as {
      version: number;
      activated_at: Date | null;
      retired_at: Date | null;
    }[];
    within(rows[1]?.activated_at ?? null, 'v2 activated_at');
    within(rows[0]?.retired_at ?? null, 'v1 retired_at');
    const entries = (await db
      .knex('audit_events')
      .whereIn('action', ['key.activated', 'key.retired', 'key.destroy'])
      .select('action', 'outcome', 'occurred_at')) as { action: string; outcome: string; occurred_at: Date }[];
    expect(entries.map((e) => `${e.action} ${e.outcome}`)).to.have.members([
      'key.activated success',
      'key.retired success',
      'key.destroy denied',
    ]);
    for (const e of entries) within(e.occurred_at, e.action);
  });
});
