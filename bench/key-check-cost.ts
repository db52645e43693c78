/**
 * Micro-timing of the write-time key-state check (issue 18): the vault's group-committed first
 * sightings (one statement inserting shoppers, cards, identifiers and fingerprints for 64 cards) with
 * the key-version triggers enabled and disabled, alternating rounds, on the database of DATABASE_URL
 * (or an in-memory PGlite). Reports the ratio, not a bare figure: `npx tsx bench/key-check-cost.ts`.
 */
import { randomBytes } from 'node:crypto';
import { insertNewCards, type NewCardSighting } from '../src/cards/card-store.js';
import { migrateToLatest } from '../src/db/migrations.js';
import { newId } from '../src/ids/prefixed-id.js';
import { KeyRing } from '../src/keys/key-ring.js';
import { LocalMasterKey } from '../src/keys/master-key-source.js';
import { createTestDatabase } from '../test/support/database.js';

const BATCH = 64;
const STATEMENTS = Number(process.env['STATEMENTS'] ?? 150);
const ROUNDS = 4;
const TABLES = ['cards', 'card_identifiers', 'identifier_fingerprints'];

const db = await createTestDatabase();
try {
  await migrateToLatest(db.knex);
  const ring = new KeyRing(db.knex, new LocalMasterKey(randomBytes(32), 'bench'), 60_000);
  await ring.ensureInitialKeys('bench');
  const pan = await ring.active('pan-encryption');
  const mac = await ring.active('identifier-mac');
  const sightings = (): NewCardSighting[] =>
    Array.from({ length: BATCH }, () => {
      const token = newId('tok');
      const now = new Date();
      return {
        card: {
          token,
          shopperRef: newId('shp'),
          brand: 'visa',
          last4: '1111',
          expiryMonth: 12,
          expiryYear: 2030,
          panCiphertext: randomBytes(44),
          panKeyVersion: pan.version,
        },
        identifier: {
          id: newId('cid'),
          token,
          kind: 'pan',
          namespace: null,
          valueCiphertext: null,
          valueKeyVersion: null,
        },
        fingerprints: [{ version: mac.version, fingerprint: randomBytes(32), indexing: true }],
        events: [],
        now,
      };
    });
  const timed = async (): Promise<number> => {
    const started = process.hrtime.bigint();
    for (let i = 0; i < STATEMENTS; i++) await insertNewCards(db.knex, sightings());
    return Number(process.hrtime.bigint() - started) / 1e6;
  };
  const setTriggers = async (on: boolean) => {
    for (const t of TABLES) await db.knex.raw(`alter table ${t} ${on ? 'enable' : 'disable'} trigger user`);
  };
  await timed(); // warm-up
  const results = { with: [] as number[], without: [] as number[] };
  for (let r = 0; r < ROUNDS; r++) {
    await setTriggers(false);
    results.without.push(await timed());
    await setTriggers(true);
    results.with.push(await timed());
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
  const w = median(results.with);
  const wo = median(results.without);
  const rows = STATEMENTS * BATCH;
  process.stdout.write(
    `${db.url === undefined ? 'PGlite' : 'PostgreSQL'}: ${STATEMENTS} statements × ${BATCH} cards, median of ${ROUNDS} rounds\n` +
      `  without the key check: ${wo.toFixed(0)} ms (${((wo * 1000) / rows).toFixed(1)} µs per card)\n` +
      `  with the key check:    ${w.toFixed(0)} ms (${((w * 1000) / rows).toFixed(1)} µs per card)\n` +
      `  ratio with/without: ${(w / wo).toFixed(3)} (+${(((w - wo) * 1000) / rows).toFixed(1)} µs per card; one check per statement and distinct version)\n`,
  );
} finally {
  await db.close();
}
