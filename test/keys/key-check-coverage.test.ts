/**
 * Issue 18, the coverage guard of the write-time key check: every encrypted field set the key tooling
 * knows (src/encrypted-field-sets.ts) records its key version in a column that the database checks on
 * insert and on update (in `expectedKeyTriggers()`, which `keys status` verifies, and in pg_trigger),
 * or that is exempt with its reason in KEY_CHECK_EXEMPTIONS and in docs/key-management.md. A new field
 * set without either fails here.
 */
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import type { Knex } from 'knex';
import { projectRoot } from '../../src/config/project-root.js';
import { encryptedFieldSets } from '../../src/encrypted-field-sets.js';
import type { EncryptedFieldSet } from '../../src/keys/field-sets.js';
import { userTriggers } from '../../src/keys/key-trigger-store.js';
import { checkKeyTriggers, expectedKeyTriggers, KEY_CHECK_EXEMPTIONS } from '../../src/keys/key-version-triggers.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/**
 * The table and version column a field set counts by, read from the SQL of its own `countByVersion`
 * (every set groups its rows by the column that records the key version).
 */
async function versionColumnOf(set: EncryptedFieldSet, knex: Knex): Promise<{ table: string; column: string }> {
  const statements: string[] = [];
  const listener = (query: { sql: string }): void => {
    statements.push(query.sql);
  };
  knex.on('query', listener);
  try {
    await set.countByVersion(knex);
  } finally {
    knex.removeListener('query', listener);
  }
  const sql = statements.find((s) => / group by /i.test(s));
  const table = sql === undefined ? undefined : /\bfrom "(\w+)"/i.exec(sql)?.[1];
  const column = sql === undefined ? undefined : /\bgroup by (?:"\w+"\.)?"(\w+)"/i.exec(sql)?.[1];
  expect(table, `${set.name}: its table, from ${sql}`).to.be.a('string');
  expect(column, `${set.name}: its version column, from ${sql}`).to.be.a('string');
  return { table: table!, column: column! };
}

/** The text of a section of a Markdown file: from its heading to the next heading of any level. */
function section(file: string, heading: string): string {
  const text = fs.readFileSync(path.join(projectRoot(), file), 'utf8');
  const start = text.indexOf(heading);
  expect(start, `${file} has "${heading}"`).to.be.at.least(0);
  const next = text.slice(start + heading.length).search(/\n#+ /);
  return text.slice(start, next < 0 ? undefined : start + heading.length + next);
}

describe('the write-time key check covers every encrypted field set', function () {
  this.timeout(120_000);
  let db: TestDatabase;

  before(async () => {
    db = await createTestDatabase({ migrated: true });
  });
  after(async () => db.close());

  it('when every registered field set is compared with the key-check triggers, then its version column is checked on insert and on update (expected by keys status and present in the database), or exempt with its reason documented', async () => {
    const expected = expectedKeyTriggers();
    const installed = await userTriggers(db.knex);
    const documented = section('docs/key-management.md', '### Enforced where the row is written');
    const exemptionsUsed = new Set<string>();
    for (const set of encryptedFieldSets) {
      const { table, column } = await versionColumnOf(set, db.knex);
      const where = `${set.name} (${table}.${column})`;
      const exemption = KEY_CHECK_EXEMPTIONS.find((e) => e.table === table && e.column === column);
      if (exemption !== undefined) {
        exemptionsUsed.add(`${table}.${column}`);
        expect(exemption.reason.length, `${where}: the exemption gives its reason`).to.be.greaterThan(40);
        expect(documented, `${where}: docs/key-management.md names the exemption`).to.contain(`${table}.${column}`);
        continue;
      }
      for (const kind of ['insert', 'update']) {
        const trigger = `${table}_${column}_writable_${kind}`;
        expect(
          expected.some((e) => e.table === table && e.trigger === trigger),
          `${where}: ${trigger} is among the triggers keys status verifies (expectedKeyTriggers)`,
        ).to.equal(true);
        const row = installed.find((t) => t.table === table && t.trigger === trigger);
        expect(row, `${where}: ${trigger} is in pg_trigger`).to.not.equal(undefined);
        expect(row!.source, `${where}: ${trigger} checks ${column}`).to.contain('assert_key_version_writable');
        expect(row!.source, `${where}: ${trigger} checks ${column}`).to.contain(column);
      }
      expect(documented, `${where}: docs/key-management.md lists the checked column`).to.contain(`${table}.${column}`);
    }
    expect([...exemptionsUsed].sort(), 'every exemption names a registered field set').to.deep.equal(
      KEY_CHECK_EXEMPTIONS.map((e) => `${e.table}.${e.column}`).sort(),
    );
    // And the database holds exactly what keys status expects (present, enabled, unaltered).
    expect(await checkKeyTriggers(db.knex)).to.deep.equal([]);
  });
});
