import { expect } from 'chai';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Knex } from 'knex';
import { decryptValue, encryptValue, fingerprint, panAad } from '../../src/crypto/field-crypto.js';
import { projectRoot } from '../../src/config/project-root.js';
import { createDatabase, type Database } from '../../src/db/database.js';
import { migrateToLatest } from '../../src/db/migrations.js';
import { newId } from '../../src/ids/prefixed-id.js';
import type { KeyRing } from '../../src/keys/key-ring.js';
import { createTestDatabase, usingPostgres, type TestDatabase } from '../support/database.js';
import { generatePans } from '../support/pans.js';
import { keysFixture, type KeysFixture } from './keys-context.js';

const CARDS = 1500;

/** Cards written set-based (as the vault writes them, without going through it one by one). */
async function insertCards(knex: Knex, ring: KeyRing, pans: readonly string[]): Promise<void> {
  const enc = await ring.active('pan-encryption');
  const mac = await ring.active('identifier-mac');
  const now = new Date();
  for (let i = 0; i < pans.length; i += 500) {
    const chunk = pans
      .slice(i, i + 500)
      .map((pan) => ({ pan, token: newId('tok'), shopper: newId('shp'), id: newId('cid') }));
    await knex.transaction(async (trx) => {
      await trx('shoppers').insert(chunk.map((c) => ({ shopper_ref: c.shopper, created_at: now })));
      await trx('cards').insert(
        chunk.map((c) => ({
          token: c.token,
          shopper_ref: c.shopper,
          brand: 'visa',
          last4: c.pan.slice(-4),
          pan_ciphertext: encryptValue(enc.key, panAad(c.token, enc.version), c.pan),
          pan_key_version: enc.version,
          created_at: now,
          updated_at: now,
        })),
      );
      await trx('card_identifiers').insert(
        chunk.map((c) => ({ id: c.id, token: c.token, kind: 'pan', created_at: now })),
      );
      await trx('identifier_fingerprints').insert(
        chunk.map((c) => ({
          mac_key_version: mac.version,
          fingerprint: fingerprint(mac.key, { kind: 'pan', value: c.pan }),
          identifier_id: c.id,
          token: c.token,
          created_at: now,
        })),
      );
    });
  }
}

interface CliRun {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** `npm run keys -- reencrypt …` as its own process; `killWhen` SIGKILLs it once it returns true. */
function runCli(
  env: Record<string, string>,
  args: readonly string[],
  killWhen?: (stderr: string) => Promise<boolean>,
): Promise<CliRun> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/keys.ts', ...args], {
    cwd: projectRoot(),
    env: { PATH: process.env['PATH'] ?? '', NODE_ENV: 'test', KEY_RING_REFRESH_MS: '100', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  let polling = killWhen !== undefined;
  const poll = async (): Promise<void> => {
    while (polling) {
      if (await killWhen!(stderr).catch(() => false)) {
        child.kill('SIGKILL');
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  };
  void poll();
  return new Promise((resolve) =>
    child.once('exit', (code, signal) => {
      polling = false;
      resolve({ code, signal, stdout, stderr });
    }),
  );
}

describe('re-encryption backfill: crash and resume', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let fileDb: Database | undefined;
  let dataDir: string;
  let fx: KeysFixture;
  let knex: Knex;
  let env: Record<string, string>;

  beforeEach(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-keys-crash-'));
    db = await createTestDatabase();
    if (usingPostgres) {
      knex = db.knex;
    } else {
      // PGlite: the CLI process must open the same database, so it lives in a data folder, not in
      // memory; the test closes its handle while the CLI runs (one process at a time).
      fileDb = createDatabase({ database: { url: undefined }, dataDir } as never);
      knex = fileDb.knex;
    }
    await migrateToLatest(knex);
    fx = await keysFixture(db, { knex, policy: { singleOperator: true, propagationMs: 200 } });
    env = {
      MASTER_KEY: fx.masterKeyBase64,
      DATA_DIR: dataDir,
      ...(db.url === undefined ? {} : { DATABASE_URL: db.url }),
    };
  });
  afterEach(async () => {
    await fileDb?.close();
    fileDb = undefined;
    await db.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  function reopen(): void {
    if (usingPostgres) return;
    fileDb = createDatabase({ database: { url: undefined }, dataDir } as never);
    knex = fileDb.knex;
  }

  async function release(): Promise<void> {
    if (usingPostgres) return;
    await fileDb?.close();
    fileDb = undefined;
  }

  it('when the backfill process is killed midway and run again, then it resumes and ends identical to a crash-free run', async () => {
    const pans = generatePans(CARDS);
    await insertCards(knex, fx.ring, pans);
    const before = (await knex('cards').orderBy('token').select('token', 'shopper_ref')) as {
      token: string;
      shopper_ref: string;
    }[];
    const fingerprintsBefore = await knex('identifier_fingerprints')
      .orderBy('identifier_id')
      .select('identifier_id', 'fingerprint', 'mac_key_version');
    await fx.manager().rotate('pan-encryption', undefined);
    await release();

    // Killed once progress shows some batches committed (PostgreSQL: watched from here; PGlite: the
    // database belongs to the CLI process, so its progress lines are watched instead).
    let firstProgressAt = 0;
    const crashed = await runCli(
      env,
      // Throttled so that a loaded machine still kills it midway (1,500 rows take about 3 s).
      ['reencrypt', '--purpose', 'pan-encryption', '--batch-size', '50', '--max-rows-per-second', '500'],
      async (stderr) => {
        if (usingPostgres) {
          const row = await db.knex('reencrypt_progress').where({ field_set: 'cards.pan' }).first('rows_done');
          return Number(row?.rows_done ?? 0) >= 300;
        }
        if (firstProgressAt === 0 && /progress cards\.pan: \d/.test(stderr)) firstProgressAt = Date.now();
        return firstProgressAt > 0 && Date.now() - firstProgressAt > 300;
      },
    );
    expect(crashed.signal, crashed.stderr).to.equal('SIGKILL');

    reopen();
    const midway = (await knex('cards').groupBy('pan_key_version').select('pan_key_version').count('* as n')) as {
      pan_key_version: number;
      n: number | string;
    }[];
    const progress = await knex('reencrypt_progress').where({ field_set: 'cards.pan' }).first();
    {
      // Killed midway: some rows moved, some not, and the stored progress agrees with the table.
      const moved = Number(midway.find((m) => m.pan_key_version === 2)?.n ?? 0);
      expect(moved).to.be.greaterThan(0).and.lessThan(CARDS);
      expect(Number(progress.rows_done)).to.equal(moved);
      expect(progress.state).to.equal('running');
      expect(progress.cursor).to.not.equal('');
    }
    await release();

    const resumed = await runCli(env, ['reencrypt', '--purpose', 'pan-encryption', '--batch-size', '200']);
    expect(resumed.code, resumed.stdout + resumed.stderr).to.equal(0);
    expect(resumed.stdout).to.contain('(resumed)');
    expect(resumed.stderr).to.match(/progress cards\.pan: [\d,]+\/[\d,]+ rows, [\d,]+ rows\/s, ETA/);

    reopen();
    // The end state of a crash-free run: every card under v2, the same PAN, token, shopper and
    // fingerprints, and each row counted exactly once.
    const after = (await knex('cards')
      .orderBy('token')
      .select('token', 'shopper_ref', 'pan_ciphertext', 'pan_key_version')) as {
      token: string;
      shopper_ref: string;
      pan_ciphertext: Buffer;
      pan_key_version: number;
    }[];
    expect(after.map((c) => ({ token: c.token, shopper_ref: c.shopper_ref }))).to.deep.equal(before);
    expect(new Set(after.map((c) => c.pan_key_version))).to.deep.equal(new Set([2]));
    await fx.ring.reload(knex);
    const key = await fx.ring.version('pan-encryption', 2, knex);
    const decrypted = new Set(after.map((c) => decryptValue(key.key, panAad(c.token, 2), c.pan_ciphertext)));
    expect(decrypted).to.deep.equal(new Set(pans));
    expect(
      await knex('identifier_fingerprints')
        .orderBy('identifier_id')
        .select('identifier_id', 'fingerprint', 'mac_key_version'),
    ).to.deep.equal(fingerprintsBefore);
    const done = await knex('reencrypt_progress').where({ field_set: 'cards.pan' }).first();
    expect(done.state).to.equal('completed');
    expect(Number(done.rows_done)).to.equal(CARDS);
  });
});
