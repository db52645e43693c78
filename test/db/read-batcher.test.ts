import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { VaultService } from '../../src/cards/vault-service.js';
import { ReadBatcher } from '../../src/db/read-batcher.js';
import { KeyRing } from '../../src/keys/key-ring.js';
import { LocalMasterKey } from '../../src/keys/master-key-source.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { generatePans } from '../support/pans.js';

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('read batcher (coalesced lookups)', () => {
  /** A run function whose queries finish only when the test says so. */
  function gated() {
    const queries: number[][] = [];
    const gates: (() => void)[] = [];
    const run = async (keys: readonly number[]): Promise<number[]> => {
      queries.push([...keys]);
      await new Promise<void>((resolve) => gates.push(resolve));
      if (keys.includes(13)) throw new Error('query failed');
      return keys.map((k) => k * 10);
    };
    return { run, queries, gates };
  }

  it('when the service is quiet, then a load runs at once, alone', async () => {
    const g = gated();
    const batcher = new ReadBatcher(g.run, { concurrency: 1, maxBatch: 64 });
    const one = batcher.load(1);
    expect(g.queries).to.deep.equal([[1]]);
    g.gates.splice(0).forEach((open) => open());
    expect(await one).to.equal(10);
  });

  it('when loads arrive while the queries in flight are running, then the next query takes them all, each answered with its own result', async () => {
    const g = gated();
    const batcher = new ReadBatcher(g.run, { concurrency: 2, maxBatch: 4 });
    const loads = [1, 2, 3, 4, 5, 6, 7, 8].map((k) => batcher.load(k));
    // Two start at once; the six others wait, then go four and two.
    expect(g.queries).to.deep.equal([[1], [2]]);
    g.gates.splice(0).forEach((open) => open());
    await tick();
    expect(g.queries.slice(2)).to.deep.equal([
      [3, 4, 5, 6],
      [7, 8],
    ]);
    g.gates.splice(0).forEach((open) => open());
    expect(await Promise.all(loads)).to.deep.equal([10, 20, 30, 40, 50, 60, 70, 80]);
  });

  it('when a query fails, then only the loads it carried fail, and the batcher goes on', async () => {
    const g = gated();
    const batcher = new ReadBatcher(g.run, { concurrency: 1, maxBatch: 64 });
    const first = batcher.load(1);
    const bad = [batcher.load(12), batcher.load(13)];
    g.gates.splice(0).forEach((open) => open());
    expect(await first).to.equal(10);
    await tick();
    g.gates.splice(0).forEach((open) => open());
    for (const load of bad) {
      await load.then(
        () => expect.fail('should have failed'),
        (error: Error) => expect(error.message).to.equal('query failed'),
      );
    }
    const after = batcher.load(2);
    g.gates.splice(0).forEach((open) => open());
    await tick();
    g.gates.splice(0).forEach((open) => open());
    expect(await after).to.equal(20);
  });

  describe('card lookups through the vault, on the database', () => {
    let db: TestDatabase;
    let vault: VaultService;
    let lookupStatements: number;

    before(async () => {
      db = await createTestDatabase({ migrated: true });
      const ring = new KeyRing(db.knex, new LocalMasterKey(randomBytes(32), 'test'), 60_000);
      await ring.ensureInitialKeys('test');
      vault = new VaultService(db.knex, ring, { detokenise: { enabled: false, perMinute: 1 }, lookupConcurrency: 1 });
      db.knex.on('query', (q: { sql: string }) => {
        if (/^select .* from "identifier_fingerprints"/i.test(q.sql)) lookupStatements += 1;
      });
    });
    after(async () => db.close());

    it('when 60 cards are tokenised at once, 40 known and 20 new, then each gets what a lookup alone gives, in a few statements', async () => {
      const known = generatePans(40);
      const fresh = generatePans(20, '510510');
      const tokens = new Map<string, string>();
      for (const pan of known) tokens.set(pan, (await vault.tokenise({ kind: 'pan', pan })).card.token);
      lookupStatements = 0;
      const all = [...known, ...fresh];
      const results = await Promise.all(all.map((pan) => vault.tokenise({ kind: 'pan', pan })));
      results.forEach((r, i) => {
        const pan = all[i] as string;
        if (tokens.has(pan))
          expect({ token: r.card.token, created: r.created }).to.deep.equal({ token: tokens.get(pan), created: false });
        else expect(r.created, `${i}`).to.equal(true);
      });
      expect(new Set(results.map((r) => r.card.token)).size).to.equal(60);
      // One statement for the first, one for the 59 that arrived meanwhile: far fewer than 60.
      expect(lookupStatements).to.be.within(2, 5);
      // Looked up again, alone, every card is what the batched lookups said.
      for (const [i, pan] of all.entries()) {
        expect((await vault.tokenise({ kind: 'pan', pan })).card.token).to.equal(results[i]!.card.token);
      }
    });
  });
});
