import { expect } from 'chai';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { verifyAuditChain } from '../../src/audit/audit-log.js';
import { decryptValue, panAad } from '../../src/crypto/field-crypto.js';
import { VaultService } from '../../src/cards/vault-service.js';
import { projectRoot } from '../../src/config/project-root.js';
import { KeyRing, type KeyPurpose } from '../../src/keys/key-ring.js';
import { createTestDatabase, usingPostgres, type TestDatabase } from '../support/database.js';
import { runLiveTraffic, type KnownCard, type TrafficStats } from '../support/live-traffic.js';
import { generatePans, panPattern } from '../support/pans.js';
import { keysFixture, type KeysFixture } from './keys-context.js';

const vaultOptions = { detokenise: { enabled: false, perMinute: 1 } };

function letters(n: number): string {
  const alphabet = 'ABCDEFGHJKLMNPQRSTUVWXYZ';
  return Array.from(randomBytes(n), (b) => alphabet[b % alphabet.length]).join('');
}

/** PAN cards, plus cards known by a PAR and by a gateway alias (their values are encrypted too). */
async function seedCards(vault: VaultService, pans: readonly string[], extra: number): Promise<KnownCard[]> {
  const inputs = [
    ...pans.map((pan) => ({ kind: 'pan' as const, pan })),
    ...Array.from({ length: extra }, () => ({ kind: 'par' as const, par: `V001${letters(25)}` })),
    ...Array.from({ length: extra }, () => ({
      kind: 'alias' as const,
      namespace: 'adyen.alias',
      value: `H${letters(15)}`,
    })),
  ];
  const known: KnownCard[] = [];
  for (const input of inputs) {
    const { card } = await vault.tokenise(input);
    known.push({ input, token: card.token, shopperRef: card.shopperReference });
  }
  return known;
}

/** Live traffic beside the rotation: another process on PostgreSQL, the same process on PGlite. */
async function startTraffic(
  db: TestDatabase,
  fx: KeysFixture,
  known: readonly KnownCard[],
): Promise<{ stop(): Promise<TrafficStats> }> {
  if (db.url === undefined) {
    // PGlite is in-memory and belongs to this process: the traffic runs concurrently in it, as if it
    // were another instance (its own key ring, refreshed every 50 ms).
    const ring = new KeyRing(db.knex, fx.masterKey, 50);
    const vault = new VaultService(db.knex, ring, vaultOptions);
    let stop = false;
    const running = runLiveTraffic(vault, known, () => stop);
    return {
      async stop() {
        stop = true;
        return running;
      },
    };
  }
  const child: ChildProcessWithoutNullStreams = spawn(
    process.execPath,
    ['--import', 'tsx', 'test/support/live-traffic.ts'],
    { cwd: projectRoot(), env: { PATH: process.env['PATH'] ?? '' }, stdio: 'pipe' },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  const started = new Promise<void>((resolve, reject) => {
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes('live-traffic: running')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`live traffic exited early (${code}): ${stderr}`)));
  });
  child.stdin.end(JSON.stringify({ databaseUrl: db.url, masterKeyBase64: fx.masterKeyBase64, known }));
  await started;
  return {
    async stop() {
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const code = await exited;
      if (code !== 0) throw new Error(`live traffic failed (${code}): ${stderr}`);
      return JSON.parse(stdout.trim()) as TrafficStats;
    },
  };
}

const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('key rotation with live traffic (keys rotate → reencrypt → retire)', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let fx: KeysFixture;

  beforeEach(async () => {
    db = await createTestDatabase({ migrated: true });
    fx = await keysFixture(db, { policy: { singleOperator: true, propagationMs: 300 } });
  });
  afterEach(async () => db.close());

  async function versionsInUse(purpose: KeyPurpose): Promise<Record<string, number[]>> {
    const q = async (table: string, column: string) =>
      (await db.knex(table).whereNotNull(column).distinct(column).orderBy(column)).map(
        (r: Record<string, number>) => r[column]!,
      );
    return purpose === 'pan-encryption'
      ? { cards: await q('cards', 'pan_key_version'), identifiers: await q('card_identifiers', 'value_key_version') }
      : { fingerprints: await q('identifier_fingerprints', 'mac_key_version') };
  }

  for (const purpose of ['pan-encryption', 'identifier-mac'] as const) {
    it(`when ${purpose} is rotated and backfilled while cards are tokenised and looked up ${usingPostgres ? 'in another process' : 'concurrently (PGlite: same process)'}, then no lookup misses, no token or shopper changes, no row stays under v1, and v1 retires only then`, async () => {
      const vault = new VaultService(db.knex, fx.ring, vaultOptions);
      const pans = generatePans(240);
      const known = await seedCards(vault, pans, 40);
      const before = await db.knex('cards').orderBy('token').select('token', 'shopper_ref');
      const traffic = await startTraffic(db, fx, known);
      const outputs: string[] = [];
      let stats: TrafficStats;
      try {
        await wait(200);
        const rotated = await fx.run('rotate', '--purpose', purpose, '--apply');
        outputs.push(rotated.stdout, rotated.stderr);
        expect(rotated.code, rotated.stderr).to.equal(0);
        expect(rotated.stdout).to.contain(`${purpose} v2 is active, v1 is decrypt-only`);

        const early = await fx.run('retire', '--purpose', purpose, '--version', '1', '--apply');
        outputs.push(early.stdout, early.stderr);
        expect(early.code).to.equal(1);
        expect(early.stderr).to.contain('KEY_VERSION_IN_USE');
        expect((await db.knex('data_keys').where({ purpose, version: 1 }).first()).state).to.equal('decrypt-only');

        const backfill = await fx.run('reencrypt', '--purpose', purpose, '--batch-size', '64');
        outputs.push(backfill.stdout, backfill.stderr);
        expect(backfill.code, backfill.stdout + backfill.stderr).to.equal(0);
        expect(backfill.stdout).to.contain(`every row is under ${purpose} v2`);
      } finally {
        stats = await traffic.stop();
      }
      expect(stats.errors, stats.errorSamples.join('\n')).to.equal(0);
      expect(stats.misses).to.equal(0);
      expect(stats.lookups).to.be.greaterThan(known.length);

      const inUse = await versionsInUse(purpose);
      for (const versions of Object.values(inUse)) expect(versions).to.deep.equal([2]);

      const retired = await fx.run('retire', '--purpose', purpose, '--version', '1', '--apply');
      outputs.push(retired.stdout, retired.stderr);
      expect(retired.code, retired.stderr).to.equal(0);
      expect((await db.knex('data_keys').where({ purpose, version: 1 }).first()).state).to.equal('retired');

      // Tokens and shopper references never change; every known identifier still resolves.
      const after = await db
        .knex('cards')
        .whereIn(
          'token',
          before.map((c) => c.token),
        )
        .orderBy('token')
        .select('token', 'shopper_ref');
      expect(after).to.deep.equal(before);
      const reader = new VaultService(db.knex, new KeyRing(db.knex, fx.masterKey, 50), vaultOptions);
      for (const card of known) {
        const again = await reader.tokenise(card.input);
        expect(again.created).to.equal(false);
        expect(again.card.token).to.equal(card.token);
      }
      // Every PAN decrypts to the same number under the new version.
      await fx.ring.reload();
      const key = await fx.ring.version('pan-encryption', purpose === 'pan-encryption' ? 2 : 1);
      for (const [i, pan] of pans.entries()) {
        const row = await db.knex('cards').where({ token: known[i]!.token }).first();
        expect(decryptValue(key.key, panAad(row.token, row.pan_key_version), row.pan_ciphertext)).to.equal(pan);
      }

      // Evidence: the retirement's zero-row proof is in an intact chain; no PAN anywhere in it.
      expect((await verifyAuditChain(db.knex)).ok).to.equal(true);
      const retiredEntry = await db.knex('audit_events').where({ action: 'key.retired' }).first();
      expect(JSON.stringify(retiredEntry.details)).to.contain('rowsUnderVersion');
      const evidence = [
        JSON.stringify(await db.knex('audit_events').select('*')),
        JSON.stringify(await db.knex('reencrypt_progress').select('*')),
        JSON.stringify(await db.knex('reencrypt_failures').select('*')),
        ...outputs,
      ].join('\n');
      for (const pan of pans.slice(0, 50)) expect(evidence).not.to.match(panPattern(pan));
    });
  }
});
