/**
 * The key-shares QSA walkthrough (docs/key-management.md, section 11) run as written: every
 * `npm run keys -- …` line of its block, in order, in-process against a fresh database, with the
 * service restarted under MASTER_KEY_SOURCE=shares where the block says (S4). A line whose comment
 * says `refused: CODE` must exit 1 naming that code; every other line must exit 0. Then the trail
 * holds what the doc says to check.
 */
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { projectPath } from '../../src/config/project-root.js';
import { migrateToLatest } from '../../src/db/migrations.js';
import { registerAuditChainKeys } from '../../src/audit/audit-chain-keys.js';
import { signToken } from '../support/auth.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startTestService, testEnv, type TestService } from '../support/harness.js';
import { threeCustodians } from './custodians-fixture.js';
import { keysFixture, type KeysFixture } from './keys-context.js';

interface Step {
  readonly argv: string[];
  readonly comment: string;
  readonly label: string;
}

function walkthroughSteps(): { steps: Step[]; restartAfter: number } {
  const doc = fs.readFileSync(projectPath('docs/key-management.md'), 'utf8');
  const section = doc.slice(doc.indexOf('### Walkthrough for a QSA (key shares)'));
  const start = section.indexOf('```bash');
  const lines = section.slice(start, section.indexOf('```', start + 7)).split('\n');
  const steps: Step[] = [];
  let restartAfter = -1;
  for (const line of lines) {
    if (/^# S4 restart the service/.test(line)) restartAfter = steps.length;
    if (!line.startsWith('npm run keys -- ')) continue;
    const [command = '', comment = ''] = line.slice('npm run keys -- '.length).split(/\s#\s?/, 2);
    steps.push({ argv: command.trim().split(/\s+/), comment: comment.trim(), label: line });
  }
  return { steps, restartAfter };
}

describe("walkthrough: the master key in custodians' shares as the QSA runs it (docs/key-management.md §11)", function () {
  this.timeout(240_000);
  let db: TestDatabase;
  let fx: KeysFixture;
  let dir: string;
  let svc: TestService | undefined;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-shares-walk-'));
    db = await createTestDatabase();
    await migrateToLatest(db.knex);
    fx = await keysFixture(db, { policy: { propagationMs: 0 } });
    await threeCustodians(fx, dir); // section 6, steps 0 and 2h–2i, then carol added by request
  });
  after(async () => {
    await svc?.close();
    await db?.close();
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('when every command of the block is run in order, then each does what its comment says and the trail shows it', async () => {
    const { steps, restartAfter } = walkthroughSteps();
    expect(steps.length).to.be.greaterThan(9);
    expect(restartAfter).to.be.greaterThan(0);
    let requestIdS: string | undefined;
    let splitId: string | undefined;
    for (const [i, step] of steps.entries()) {
      if (i === restartAfter) {
        svc = await startTestService({
          db,
          env: {
            ...(await testEnv()),
            MASTER_KEY: undefined,
            MASTER_KEY_SOURCE: 'shares',
            MASTER_KEY_SHARES_KEY_ID: fx.masterKey.keyId,
          },
        });
        const ready = await svc.request('GET', '/readyz');
        expect(ready.body).to.include({ status: 503, code: 'VAULT_SEALED' });
        const tokenise = await svc.request('POST', '/v1/tokens', {
          token: await signToken({ scope: 'tokens:write' }),
          json: { pan: '4111111111111111' },
        });
        expect(tokenise.body).to.include({ status: 503, code: 'VAULT_SEALED' });
      }
      const argv = step.argv.map((arg) => {
        if (arg === 'krq_S') return requestIdS ?? arg;
        if (arg === '$SERVICE_URL') return svc?.url ?? arg;
        if (arg.endsWith('.pem')) return path.join(dir, arg);
        if (arg === 'shares' && step.argv.includes('--out')) return arg;
        if (arg.startsWith('shares/')) return path.join(dir, arg.replace('<split>', splitId ?? '<split>'));
        return arg;
      });
      const outAt = argv.indexOf('--out');
      if (outAt >= 0) argv[outAt + 1] = path.join(dir, argv[outAt + 1]!);
      if (argv[0] === 'approve') argv.push('--yes');
      // The key CLI is its own process in production; here it shares the database handle with the
      // sealed service, whose source registered itself first for the audit-chain keys: put the CLI's
      // key back in front, as its own process would have it.
      registerAuditChainKeys(db.knex, fx.masterKey);
      const res = await fx.run(...argv);
      const where = `${step.label}\n${res.stdout}${res.stderr}`;
      const refusal = /refused: ([A-Z_]+)/.exec(step.comment)?.[1];
      if (refusal === undefined) expect(res.code, where).to.equal(0);
      else {
        expect(res.code, where).to.equal(1);
        expect(res.stderr, where).to.contain(refusal);
      }
      if (step.comment.includes('prints krq_S')) requestIdS = /request (krq_[a-z2-7]+)/.exec(res.stdout)?.[1];
      if (argv[0] === 'shares' && argv[1] === 'split' && res.code === 0) {
        splitId = /split (msp_[a-z2-7]+)/.exec(res.stdout)?.[1];
        const files = fs.readdirSync(path.join(dir, 'shares'));
        expect(files, where).to.have.length(3);
        for (const f of files) expect(fs.statSync(path.join(dir, 'shares', f)).mode & 0o777).to.equal(0o600);
      }
      if (step.comment.startsWith('S5')) expect(res.stdout, where).to.contain('1 of 2; still sealed');
      if (step.comment.startsWith('S8')) expect(res.stdout, where).to.contain('UNSEALED');
      if (step.comment.startsWith('S9')) expect(res.stdout, where).to.contain(': sealed');
    }
    const trail = (await db
      .knex('audit_events')
      .whereIn('action', ['master-key.split', 'vault.unseal.share-submitted', 'vault.unsealed', 'vault.sealed'])
      .orderBy('seq')
      .select('action', 'actor', 'outcome')) as { action: string; actor: string; outcome: string }[];
    expect(trail.map((e) => `${e.action} ${e.actor} ${e.outcome}`)).to.deep.equal([
      'master-key.split test-operator denied',
      'master-key.split test-operator success',
      'vault.unseal.share-submitted carol success',
      'vault.unseal.share-submitted carol failure',
      'vault.unseal.share-submitted bob success',
      'vault.unsealed system success',
      'vault.sealed alice success',
    ]);
  });
});
