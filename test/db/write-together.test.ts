import { expect } from 'chai';
import type { Knex } from 'knex';
import { updateRowsPart } from '../../src/db/update-rows.js';
import { MAX_BINDINGS, partOf, writeInFewStatements, writeTogether } from '../../src/db/write-together.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/** Several writes as one statement: what they see of each other, and the bind-parameter limit. */
describe('writes sent together', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let knex: Knex;
  const statements: string[] = [];

  before(async () => {
    db = await createTestDatabase();
    knex = db.knex;
    await knex.raw('create table wt_parent (id text primary key, n integer not null)');
    await knex.raw('create table wt_child (id text primary key, parent_id text not null references wt_parent (id))');
    knex.on('query', (q: { sql: string }) => statements.push(q.sql));
  });
  after(async () => db.close());

  it('when a row refers to one inserted by another part, then the foreign key holds (checked at the end)', async () => {
    statements.length = 0;
    await knex.transaction((trx) =>
      writeTogether(trx, [
        partOf(trx('wt_child').insert({ id: 'c1', parent_id: 'p1' })),
        partOf(trx('wt_parent').insert({ id: 'p1', n: 1 })),
      ]),
    );
    expect(statements.filter((s) => s.startsWith('with '))).to.have.length(1);
    expect(await knex('wt_child').where({ id: 'c1' }).first()).to.deep.equal({ id: 'c1', parent_id: 'p1' });
  });

  it('when a part is gated on what a named part returned, then only the rows it let through are written', async () => {
    await knex('wt_parent').insert({ id: 'p2', n: 2 });
    const returned = await knex.transaction((trx) =>
      writeTogether<{ id: string }>(
        trx,
        [
          partOf(
            trx('wt_parent')
              .insert([
                { id: 'p2', n: 20 },
                { id: 'p3', n: 3 },
              ])
              .onConflict('id')
              .ignore()
              .returning('id'),
            'fresh',
          ),
          updateRowsPart('wt_parent', 'id', { n: 'integer' }, [{ id: 'p2', n: 99 }], {
            sql: 't.id in (select id from fresh) or t.id in (?)',
            bindings: ['none'],
          }),
        ],
        'select id from fresh',
      ),
    );
    expect(returned).to.deep.equal([{ id: 'p3' }]);
    // p2 already existed: not returned, so its update was held back.
    expect((await knex('wt_parent').where({ id: 'p2' }).first()).n).to.equal(2);
  });

  it('when one statement would pass the bind-parameter limit, then nothing is sent and the error says why', async () => {
    const rows = Array.from({ length: 33_000 }, (_, i) => ({ id: `over${i}`, n: i }));
    statements.length = 0;
    let failure: unknown;
    try {
      await writeTogether(knex, [partOf(knex('wt_parent').insert(rows))]);
    } catch (error) {
      failure = error;
    }
    expect(String(failure)).to.match(/66000 parameters in one statement; PostgreSQL takes at most 65535/);
    expect(statements).to.deep.equal([]);
  });

  it('when the parts together pass the bind-parameter limit, then they go in several statements and all land', async () => {
    const rows = (prefix: string, count: number) =>
      Array.from({ length: count }, (_, i) => ({ id: `${prefix}${i}`, n: i }));
    // Three parts of 2 × 15,000 parameters: 90,000 in all, more than one statement may carry.
    const parts = ['a', 'b', 'c'].map((prefix) => partOf(knex('wt_parent').insert(rows(prefix, 15_000))));
    expect(parts.reduce((n, p) => n + p.bindings.length, 0)).to.be.above(MAX_BINDINGS);
    statements.length = 0;
    await knex.transaction((trx) => writeInFewStatements(trx, parts));
    expect(statements.filter((s) => s.startsWith('with '))).to.have.length(2);
    const [count] = (await knex('wt_parent').whereRaw("id ~ '^[abc][0-9]'").count({ n: '*' })) as { n: unknown }[];
    expect(Number(count?.n)).to.equal(45_000);
  });
});
