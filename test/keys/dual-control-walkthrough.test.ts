/**
 * The dual-control part of the QSA walkthrough (docs/key-management.md, section 6, steps 0 and 2) is
 * run as written: every `npm run keys -- …` line of those steps, in order, in-process against a fresh
 * database. A line whose comment says `refused: CODE` must exit 1 with that code and leave a denied
 * audit entry carrying it; every other line must succeed. The requirement map's "demonstrated by"
 * column points at these lines, so the map is checked by this test, not argued.
 */
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { verifyAuditChain } from '../../src/audit/audit-log.js';
import { projectPath } from '../../src/config/project-root.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { ed25519 } from './custodians-fixture.js';
import { keysFixture, type KeysFixture } from './keys-context.js';

interface Step {
  readonly argv: string[];
  readonly comment: string;
}

/** The keys commands of walkthrough steps 0 and 2, each with its comment (inline and continued). */
function walkthroughSteps(): Step[] {
  const doc = fs.readFileSync(projectPath('docs/key-management.md'), 'utf8');
  const block = doc.slice(doc.indexOf('## 6. Walkthrough'));
  const lines = block.slice(block.indexOf('```bash'), block.indexOf('```', block.indexOf('```bash') + 7)).split('\n');
  const steps: { argv: string[]; comment: string }[] = [];
  let section = '';
  for (const line of lines) {
    const heading = /^# (\d)\./.exec(line);
    if (heading !== null) section = heading[1]!;
    if (section !== '0' && section !== '2') continue;
    if (line.startsWith('npm run keys -- ')) {
      const [command = '', comment = ''] = line.slice('npm run keys -- '.length).split(/\s#\s?/, 2);
      steps.push({ argv: command.trim().split(/\s+/), comment });
    } else if (/^\s+#/.test(line) && steps.length > 0) {
      const last = steps.at(-1)!;
      last.comment = `${last.comment} ${line.trim().slice(1).trim()}`;
    }
  }
  return steps;
}

describe('walkthrough: dual control as the QSA runs it (docs/key-management.md, steps 0 and 2)', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let fx: KeysFixture;
  let dir: string;

  before(async () => {
    db = await createTestDatabase({ migrated: true });
    fx = await keysFixture(db, { policy: { propagationMs: 0 } });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-walkthrough-'));
    for (const who of ['alice', 'bob', 'mallory', 'carol']) ed25519(dir, who); // step 0a (openssl genpkey)
  });
  after(async () => {
    await db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('when every command of steps 0 and 2 is run in order, then each does what its comment says, and each refusal is audited with its code', async () => {
    const steps = walkthroughSteps();
    expect(steps.length).to.be.greaterThan(15);
    const ids = new Map<string, string>();
    const refusals: string[] = [];
    for (const step of steps) {
      const argv = step.argv.map((arg) => {
        if (arg.endsWith('.pem')) return path.join(dir, arg);
        const placeholder = /^krq_([A-Z])$/.exec(arg);
        return placeholder === null ? arg : (ids.get(placeholder[1]!) ?? arg);
      });
      if (argv[0] === 'approve') argv.push('--yes'); // no terminal here: the documented script form
      const before = Number((await db.knex('audit_chain_head').where({ id: 1 }).first()).seq);
      const res = await fx.run(...argv);
      const refusal = /refused: ([A-Z_]+)/.exec(step.comment)?.[1];
      const label = `${step.argv.join(' ')}  # ${step.comment}\n${res.stdout}${res.stderr}`;
      if (refusal === undefined) {
        expect(res.code, label).to.equal(0);
      } else {
        expect(res.code, label).to.equal(1);
        expect(res.stderr, label).to.contain(`refused: ${refusal}`);
        const denied = (await db.knex('audit_events').where('seq', '>', before).andWhere({ outcome: 'denied' })) as {
          details: string | { code: string };
        }[];
        const codes = denied.map(
          (d) => (typeof d.details === 'string' ? (JSON.parse(d.details) as { code: string }) : d.details).code,
        );
        expect(codes, label).to.include(refusal);
        refusals.push(refusal);
      }
      const printed = /krq_([A-Z])\b/.exec(step.comment);
      if (argv[0] === 'request' && printed !== null && !ids.has(printed[1]!)) {
        const id = /request (krq_[a-z2-7]+)/.exec(res.stdout)?.[1];
        expect(id, label).to.be.a('string');
        ids.set(printed[1]!, id!);
      }
    }
    expect(refusals).to.include.members([
      'CUSTODIANS_TOO_FEW',
      'DUAL_CONTROL_REQUIRED',
      'KEY_REQUEST_MISMATCH',
      'KEY_REQUEST_NOT_PENDING',
    ]);
    expect((await db.knex('data_keys').where({ purpose: 'pan-encryption', state: 'active' }).first()).version).to.equal(
      2,
    );
    expect(((await db.knex('key_custodians').orderBy('name')) as { name: string }[]).map((c) => c.name)).to.deep.equal([
      'alice',
      'bob',
      'carol',
    ]);
    expect((await verifyAuditChain(db.knex)).ok).to.equal(true);
  });
});
