/**
 * `keys hsm init` refused because the token already holds the label: the token refuses before the key
 * CLI opens its database (a first installation may name the key it creates), and the refusal is still
 * audited (`key.hsm.refused`, actor type operator, the code), in the database the CLI then opens. Real
 * processes (`src/cli/keys.ts`) against a SoftHSM2 token; the embedded store in a folder of its own, or
 * the file's PostgreSQL database.
 */
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AuditEvent } from '../../src/audit/audit-log.js';
import { createTestDatabase, usingPostgres, type TestDatabase } from '../support/database.js';
import { runNodeCli } from '../support/service-process.js';
import { createSoftHsmToken, type SoftHsmToken } from '../support/softhsm.js';

describe('keys hsm init refused by the token: audited like every refusal', function () {
  this.timeout(180_000);
  let token: SoftHsmToken;
  let db: TestDatabase | undefined;
  let dir: string;
  let env: Record<string, string>;
  const keys = (...args: string[]) => runNodeCli('src/cli/keys.ts', args, env);

  before(async () => {
    token = createSoftHsmToken('lv-hsmref');
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-hsm-refusal-'));
    const where: Record<string, string> = {};
    if (usingPostgres) {
      db = await createTestDatabase();
      where['DATABASE_URL'] = db.url!;
      where['ALLOW_DEVELOPMENT_DEFAULTS'] = 'true';
    } else {
      where['DATA_DIR'] = path.join(dir, 'data');
    }
    const source = Object.fromEntries(
      Object.entries(token.env('lv-kek-refusal')).filter((e): e is [string, string] => e[1] !== undefined),
    );
    env = {
      NODE_ENV: 'development',
      LOG_LEVEL: 'warn',
      SOFTHSM2_CONF: process.env['SOFTHSM2_CONF'] ?? '',
      KEYS_OPERATOR: 'hsm-operator',
      ...source,
      ...where,
    };
  });
  after(async () => {
    await db?.close();
    token?.remove();
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('when the label exists, then hsm init exits 1 with KEY_OPERATION_INVALID and the trail holds key.hsm.refused by the operator, with no key material', async () => {
    const created = await keys('hsm', 'init');
    expect(created.code, created.stderr).to.equal(0);
    expect(created.stdout).to.contain('never extractable');

    const again = await keys('hsm', 'init');
    expect(again.code, again.stdout + again.stderr).to.equal(1);
    expect(again.stderr).to.contain('KEY_OPERATION_INVALID');
    expect(again.stderr).to.not.contain('could not be audited');

    const out = path.join(dir, 'audit.json');
    const exported = await keys(
      'audit',
      'export',
      '--from',
      '2000-01-01T00:00:00Z',
      '--to',
      '2100-01-01T00:00:00Z',
      '--out',
      out,
    );
    expect(exported.code, exported.stderr).to.equal(0);
    const entries = (JSON.parse(fs.readFileSync(out, 'utf8')) as { entries: AuditEvent[] }).entries;
    expect(entries.filter((e) => e.action === 'master-key.created-in-token')).to.have.length(1);
    const refused = entries.filter((e) => e.action === 'key.hsm.refused');
    expect(refused).to.have.length(1);
    expect(refused[0]).to.deep.include({
      actor: 'hsm-operator',
      actorType: 'operator',
      outcome: 'denied',
      resource: 'command:hsm init',
    });
    expect(refused[0]!.details['code']).to.equal('KEY_OPERATION_INVALID');
    expect(String(refused[0]!.details['reason'])).to.contain('already holds an object labelled "lv-kek-refusal"');
    const pin = fs.readFileSync(token.pinFile, 'utf8').trim();
    expect(JSON.stringify(refused[0])).to.not.contain(pin);
  });
});
