/**
 * The reference pages under docs/reference/ are generated from the code (scripts/generate-reference.ts:
 * the configuration the code reads, the error catalogue, the metrics registered, the outbound event
 * types). A change to any of them without `npm run docs:reference` leaves a committed page stale: this
 * test renders every page again and fails naming the first line that differs.
 */
import fs from 'node:fs';
import { expect } from 'chai';
import { PAGES, renderReferencePages, configurationVariables } from '../../scripts/generate-reference.js';
import { projectPath } from '../../src/config/project-root.js';

describe('docs/reference: the pages generated from the code are up to date', function () {
  this.timeout(60_000);
  let pages: Map<string, string>;

  before(async function () {
    pages = await renderReferencePages();
  });

  for (const page of Object.keys(PAGES)) {
    it(`${page} is what npm run docs:reference writes`, function () {
      const expected = pages.get(page) as string;
      const committed = fs.existsSync(projectPath(page)) ? fs.readFileSync(projectPath(page), 'utf8') : '';
      if (committed === expected) return;
      const a = committed.split('\n');
      const b = expected.split('\n');
      const line = a.findIndex((text, i) => text !== b[i]);
      const at = line < 0 ? Math.min(a.length, b.length) : line;
      expect.fail(
        `${page} is stale (run npm run docs:reference): line ${at + 1}\n` +
          `  committed: ${a[at] ?? '(end of file)'}\n  generated: ${b[at] ?? '(end of file)'}`,
      );
    });
  }

  it('the configuration page lists variables the configuration refuses or reads', function () {
    // A seam check of the syntax-tree scan: names it must find, among them ones read in a loop (PG*),
    // with a range (integer), with allowed values (enum), and a CLI's own (process.env).
    const byName = new Map(configurationVariables().map((v) => [v.name, v]));
    expect(byName.get('PORT')).to.include({ kind: 'integer', default: '8080', min: 0, max: 65535 });
    expect(byName.get('LOG_LEVEL')?.allowed).to.include('silent');
    expect(byName.has('PGHOST')).to.equal(true);
    expect(byName.has('KEYS_OPERATOR')).to.equal(true);
    expect(byName.get('DATABASE_URL')?.rawWithoutDefault).to.equal(true);
  });
});
