import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { VaultService } from '../../src/cards/vault-service.js';
import { signToken } from '../support/auth.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startTestService, testEnv } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { keysFixture, type KeysFixture } from './keys-context.js';

const DAY_MS = 86_400_000;

describe('key inventory and cryptoperiods', function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let fx: KeysFixture;
  let dir: string;
  const masterKeyBase64 = randomBytes(32).toString('base64');

  before(async () => {
    db = await createTestDatabase({ migrated: true });
    fx = await keysFixture(db, { masterKeyBase64 });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-inventory-'));
    const vault = new VaultService(db.knex, fx.ring, { detokenise: { enabled: false, perMinute: 1 } });
    for (const pan of generatePans(3)) await vault.tokenise({ kind: 'pan', pan });
    await vault.tokenise({ kind: 'par', par: 'V0010013816180398947592732139' });
  });
  after(async () => {
    await db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('when keys are listed as JSON, then every version shows algorithm, strength, state, dates, cryptoperiod and rows protected', async () => {
    const res = await fx.run('list', '--json');
    expect(res.code).to.equal(0);
    const keys = JSON.parse(res.stdout) as Record<string, unknown>[];
    expect(keys.map((k) => [k['purpose'], k['version'], k['state'], k['algorithm'], k['strengthBits']])).to.deep.equal([
      ['audit-signing', 1, 'active', 'Ed25519', 128],
      ['identifier-mac', 1, 'active', 'HMAC-SHA256', 256],
      ['pan-encryption', 1, 'active', 'AES-256-GCM', 256],
      ['subscription-secret', 1, 'active', 'AES-256-GCM', 256],
    ]);
    const pan = keys.find((k) => k['purpose'] === 'pan-encryption')!;
    expect(pan['rows']).to.deep.equal({
      'cards.pan': 3,
      'card_identifiers.value': 1,
      'loyalty_accounts.email': 0,
      'event_subscription_secrets.legacy_secret': 0,
    });
    expect(keys.find((k) => k['purpose'] === 'identifier-mac')!['rows']).to.deep.equal({ identifier_fingerprints: 4 });
    expect(pan).to.include.keys(
      'createdAt',
      'activatedAt',
      'retiredAt',
      'cryptoperiodDays',
      'daysLeft',
      'expiresAt',
      'kekId',
    );
    expect(pan['cryptoperiodDays']).to.equal(365);
    const table = await fx.run('list');
    expect(table.stdout).to.match(/pan-encryption\s+1\s+active\s+AES-256-GCM\s+256/);
  });

  it('when the inventory is written, then a JSON and a Markdown report hold keys, key stores and master keys', async () => {
    const res = await fx.run('inventory', '--out', path.join(dir, 'inventory'));
    expect(res.code, res.stderr).to.equal(0);
    const json = JSON.parse(fs.readFileSync(path.join(dir, 'inventory.json'), 'utf8'));
    expect(json.keys).to.have.length(4);
    expect(json.keyStores.map((s: { name: string }) => s.name)).to.include('master key source');
    expect(json.masterKeys[0].kekId).to.equal(fx.masterKey.keyId);
    const md = fs.readFileSync(path.join(dir, 'inventory.md'), 'utf8');
    expect(md).to.contain('PCI DSS 3.6.1.1').and.contain('| pan-encryption | 1 | AES-256-GCM | 256 bits | active');
    expect(md).to.contain('| subscription-secret | 1 | AES-256-GCM | 256 bits | active');
  });

  it('when a key is past its cryptoperiod, then status names it and exits 1; the service warns at start-up and exposes it as a metric', async () => {
    expect((await fx.run('status')).code).to.equal(0);
    await db
      .knex('data_keys')
      .where({ purpose: 'pan-encryption', version: 1 })
      .update({ activated_at: new Date(Date.now() - 400 * DAY_MS) });
    const res = await fx.run('status');
    expect(res.code).to.equal(1);
    expect(res.stdout).to.match(/OVERDUE pan-encryption v1 \(active\): cryptoperiod 365 days/);
    expect(res.stdout).to.match(/ok\s+identifier-mac v1/);

    const svc = await startTestService({ db, env: await testEnv({ MASTER_KEY: masterKeyBase64 }) });
    try {
      expect(svc.logs()).to.contain('key pan-encryption v1 is past its cryptoperiod of 365 days');
      const metrics = await svc.request('GET', '/metrics', { token: await signToken({ scope: 'metrics:read' }) });
      expect(metrics.text).to.contain('key_cryptoperiod_overdue{purpose="pan-encryption",version="1"} 1');
      expect(metrics.text).to.contain('key_cryptoperiod_overdue{purpose="identifier-mac",version="1"} 0');
      const left = /key_cryptoperiod_remaining_seconds\{purpose="pan-encryption",version="1"\} (-?\d+)/.exec(
        metrics.text,
      );
      expect(Number(left?.[1]) / 86_400).to.be.within(-36.5, -34.5);
    } finally {
      await svc.close();
    }
  });

  it('when the configured cryptoperiod is shorter than the recorded one, then the shorter applies', async () => {
    const strict = await keysFixture(db, {
      masterKeyBase64,
      policy: {
        cryptoperiodDays: {
          'pan-encryption': 365,
          'identifier-mac': 30,
          'audit-signing': 730,
          'mtls-client-ca': 730,
          'subscription-secret': 365,
        },
      },
    });
    await db
      .knex('data_keys')
      .where({ purpose: 'identifier-mac', version: 1 })
      .update({ activated_at: new Date(Date.now() - 31 * DAY_MS) });
    const res = await strict.run('status', '--json');
    expect(res.code).to.equal(1);
    const status = JSON.parse(res.stdout);
    expect(status.overdue.map((k: { purpose: string }) => k.purpose)).to.include('identifier-mac');
  });
});
