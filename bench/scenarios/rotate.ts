/**
 * Key rotation at scale: `keys reencrypt --purpose pan-encryption` over 1,000,000 cards on
 * PostgreSQL (BENCH_ROTATE_CARDS to change), with live traffic on the real service throughout
 * (lookups of known cards, which must never miss, and new tokenisations), against the raw
 * node:crypto rate of the same per-row work (AES-256-GCM decrypt + encrypt) on one core, measured in
 * the same run. The target: 1,000,000 cards re-keyed in under 2 minutes on a 2-core machine.
 *
 * Cards are inserted set-based (unnest of precomputed ciphertexts, 20,000 rows a statement), not
 * through the API. Only the first TRAFFIC_CARDS have identifiers and fingerprints (the traffic's
 * known cards): a pan-encryption rotation rewrites `cards` only.
 */
import { createHmac, randomBytes, randomInt } from 'node:crypto';
import autocannon from 'autocannon';
import { decryptValue, encryptValue, fingerprint, panAad } from '../../src/crypto/field-crypto.js';
import { luhnValid } from '../../src/cards/luhn.js';
import { issueDevToken } from '../../src/cli/token.js';
import { loadConfig } from '../../src/config/config.js';
import { createDatabase } from '../../src/db/database.js';
import { migrateToLatest } from '../../src/db/migrations.js';
import { newId } from '../../src/ids/prefixed-id.js';
import { builtInFieldSets } from '../../src/encrypted-field-sets.js';
import { clientCaHooks } from '../../src/mtls/client-ca-hooks.js';
import { KeyManager } from '../../src/keys/key-manager.js';
import { DEFAULT_CRYPTOPERIOD_DAYS, KeyRing, type KeyActor } from '../../src/keys/key-ring.js';
import { LocalMasterKey } from '../../src/keys/master-key-source.js';
import { reencrypt } from '../../src/keys/reencrypt.js';
import type { Measurement } from '../lib/load.js';
import { withTempPostgres } from '../lib/postgres.js';
import type { Scenario, ScenarioResult } from '../lib/scenario.js';
import { startService, withTempDir } from '../lib/servers.js';

const CARDS = Number(process.env['BENCH_ROTATE_CARDS'] ?? 1_000_000);
const BATCH = Number(process.env['BENCH_ROTATE_BATCH'] ?? 5_000);
const LANES = Number(process.env['BENCH_ROTATE_LANES'] ?? 2);
const TRAFFIC_CARDS = Math.min(20_000, CARDS);
const INSERT_CHUNK = 20_000;
const REFRESH_MS = 1_000;
const ACTOR: KeyActor = { actor: 'bench', actorType: 'system', origin: 'bench:rotate' };

/** A Luhn-valid number under a test BIN, made in memory for the run and never written anywhere. */
function randomPan(): string {
  let body = '411111';
  while (body.length < 15) body += String(randomInt(10));
  for (let d = 0; ; d++) if (luhnValid(body + d)) return body + d;
}

const say = (line: string): boolean => process.stderr.write(`  rotate: ${line}\n`);

/** Raw node:crypto, one core: what each re-keyed row costs in crypto alone. */
function rawCryptoRate(
  ring: { old: Buffer[]; tokens: string[] },
  keys: Awaited<ReturnType<typeof loadKeys>>,
): {
  aes: Measurement;
  hmacPerSecond: number;
} {
  const started = process.hrtime.bigint();
  let rows = 0;
  const budgetNs = 3_000_000_000n;
  while (process.hrtime.bigint() - started < budgetNs) {
    for (let i = 0; i < 1000; i++) {
      const j = rows % ring.old.length;
      const token = ring.tokens[j]!;
      const pan = decryptValue(keys.old.key, panAad(token, 1), ring.old[j]!);
      encryptValue(keys.next.key, panAad(token, 2), pan);
      rows += 1;
    }
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const hmacStart = process.hrtime.bigint();
  let macs = 0;
  while (process.hrtime.bigint() - hmacStart < 1_000_000_000n) {
    for (let i = 0; i < 1000; i++) {
      createHmac('sha256', keys.next.key)
        .update(`loyalty-vault/identifier/v1|3:pan|0:|16:${ring.tokens[i % 100]}`)
        .digest();
      macs += 1;
    }
  }
  return {
    aes: {
      label: 'node:crypto AES-GCM ×2',
      requestsPerSecond: rows / seconds,
      unit: 'rows',
      requests: rows,
      durationSeconds: seconds,
      non2xx: 0,
      errors: 0,
    },
    hmacPerSecond: macs / (Number(process.hrtime.bigint() - hmacStart) / 1e9),
  };
}

async function loadKeys(ring: KeyRing) {
  return { old: await ring.version('pan-encryption', 1), next: await ring.version('pan-encryption', 2) };
}

async function run(): Promise<ScenarioResult> {
  return withTempDir((dir) =>
    withTempPostgres(async (databaseUrl) => {
      const masterKeyBase64 = randomBytes(32).toString('base64');
      const masterKey = new LocalMasterKey(Buffer.from(masterKeyBase64, 'base64'), 'bench master key');
      const database = createDatabase({
        database: { url: databaseUrl, poolMax: LANES + 2, statementTimeoutMs: 600_000, connectTimeoutMs: 5_000 },
        dataDir: dir,
      } as never);
      try {
        await migrateToLatest(database.knex);
        const ring = new KeyRing(database.knex, masterKey, REFRESH_MS);
        await ring.ensureInitialKeys('bench');
        const knownPans = await seed(database.knex, ring);

        const service = await startService(dir, {
          DATABASE_URL: databaseUrl,
          MASTER_KEY: masterKeyBase64,
          DB_POOL_MAX: '4',
          KEY_RING_REFRESH_MS: String(REFRESH_MS),
          LOG_LEVEL: 'warn',
        });
        const traffic = await startTraffic(service.url, service.dataDir, knownPans);
        try {
          const manager = new KeyManager({
            knex: database.knex,
            ring,
            masterKey,
            registry: builtInFieldSets,
            clientCa: clientCaHooks,
            policy: {
              singleOperator: true,
              production: false,
              cryptoperiodDays: DEFAULT_CRYPTOPERIOD_DAYS,
              propagationMs: REFRESH_MS + 2_000,
            },
            actor: ACTOR,
          });
          await manager.rotate('pan-encryption', undefined, (m) => say(m));
          say(`re-encrypting ${CARDS.toLocaleString('en-US')} cards: batches of ${BATCH}, ${LANES} lanes`);
          let lastSaid = 0;
          const result = await reencrypt(database.knex, ring, {
            purpose: 'pan-encryption',
            registry: builtInFieldSets,
            batchSize: BATCH,
            lanes: LANES,
            propagationMs: REFRESH_MS + 2_000,
            actor: ACTOR,
            onProgress: (p) => {
              if (Date.now() - lastSaid > 10_000) {
                lastSaid = Date.now();
                say(
                  `${p.fieldSet} ${p.rowsDone.toLocaleString('en-US')}/${p.rowsTotal.toLocaleString('en-US')} rows, ${Math.round(p.rowsPerSecond)} rows/s`,
                );
              }
            },
          });
          const stats = await traffic.stop();
          if (!result.ok) throw new Error(`re-encryption did not finish cleanly: ${JSON.stringify(result.fieldSets)}`);
          const left = await database.knex('cards').where('pan_key_version', '<', 2).count('* as n').first();
          if (Number((left as { n: number | string }).n) !== 0)
            throw new Error('rows remain under v1 after the backfill');
          if (stats.misses > 0 || stats.errors > 0) {
            throw new Error(`live traffic: ${stats.misses} lookups missed, ${stats.errors} errors/non-2xx`);
          }
          const pans = result.fieldSets.find((f) => f.fieldSet === 'cards.pan');
          const moved = result.fieldSets.reduce((sum, f) => sum + f.moved, 0);

          // The baseline, same run, after the load is gone (one core, no database).
          const sample = (await database.knex('cards').limit(50_000).select('token', 'pan_ciphertext')) as {
            token: string;
            pan_ciphertext: Buffer;
          }[];
          const keys = await loadKeys(ring);
          // Back under v1 in memory for the baseline's decrypt side (same sizes as the real rows).
          const old = sample.map((r) =>
            encryptValue(
              keys.old.key,
              panAad(r.token, 1),
              decryptValue(keys.next.key, panAad(r.token, 2), r.pan_ciphertext),
            ),
          );
          const raw = rawCryptoRate({ old, tokens: sample.map((r) => r.token) }, keys);
          const target: Measurement = {
            label: 'keys reencrypt',
            requestsPerSecond: moved / result.seconds,
            unit: 'rows',
            // The backfill runs in this process (the service beside it only serves the live traffic).
            peakRssMiB: process.resourceUsage().maxRSS / 1024,
            requests: moved,
            durationSeconds: result.seconds,
            non2xx: 0,
            errors: 0,
          };
          return {
            target,
            baseline: raw.aes,
            notes: [
              `${CARDS.toLocaleString('en-US')} cards re-keyed from pan-encryption v1 to v2 in ${result.seconds.toFixed(1)} s ` +
                `(${pans?.passes ?? 0} pass(es), batches of ${BATCH}, ${LANES} lanes in flight, compare-and-set updates) — target < 120 s`,
              `live traffic on the service meanwhile: ${stats.lookups.toLocaleString('en-US')} lookups of known cards (0 missed), ` +
                `${stats.created.toLocaleString('en-US')} new cards tokenised, ${stats.errors} errors`,
              'baseline: decrypt (v1) + encrypt (v2) of a PAN with its AAD, node:crypto AES-256-GCM, one core, no database',
              `raw HMAC-SHA256 (fingerprint) rate in the same run: ${Math.round(raw.hmacPerSecond).toLocaleString('en-US')} /s on one core`,
              'the backfill uses both cores: this process transforms batches while PostgreSQL applies the previous ones',
            ],
          };
        } finally {
          await traffic.stop().catch(() => undefined);
          await service.stop();
        }
      } finally {
        await database.close();
      }
    }),
  );
}

/** 1,000,000 cards set-based; returns the PANs of the first TRAFFIC_CARDS (the traffic's known cards). */
async function seed(knex: import('knex').Knex, ring: KeyRing): Promise<string[]> {
  const started = Date.now();
  const enc = await ring.active('pan-encryption');
  const mac = await ring.active('identifier-mac');
  const known: string[] = [];
  const seen = new Set<string>();
  const now = new Date();
  for (let from = 0; from < CARDS; from += INSERT_CHUNK) {
    const n = Math.min(INSERT_CHUNK, CARDS - from);
    const tokens: string[] = [];
    const shoppers: string[] = [];
    const sealed: Buffer[] = [];
    const last4: string[] = [];
    const pans: string[] = [];
    for (let i = 0; i < n; i++) {
      let pan = randomPan();
      // The traffic's known cards have fingerprints: their numbers must differ (random ones can repeat).
      while (from + i < TRAFFIC_CARDS && seen.has(pan)) pan = randomPan();
      if (from + i < TRAFFIC_CARDS) seen.add(pan);
      const token = newId('tok');
      tokens.push(token);
      shoppers.push(newId('shp'));
      sealed.push(encryptValue(enc.key, panAad(token, enc.version), pan));
      last4.push(pan.slice(-4));
      if (from + i < TRAFFIC_CARDS) pans.push(pan);
    }
    await knex.transaction(async (trx) => {
      await trx.raw(`insert into shoppers (shopper_ref, created_at) select unnest(?::text[]), ?`, [shoppers, now]);
      await trx.raw(
        `insert into cards (token, shopper_ref, brand, last4, pan_ciphertext, pan_key_version, created_at, updated_at)
         select t, s, 'visa', l, c, ?, ?, ? from unnest(?::text[], ?::text[], ?::text[], ?::bytea[]) as v (t, s, l, c)`,
        [enc.version, now, now, tokens, shoppers, last4, sealed],
      );
      if (pans.length > 0) {
        const ids = pans.map(() => newId('cid'));
        const cardTokens = tokens.slice(0, pans.length);
        await trx.raw(
          `insert into card_identifiers (id, token, kind, created_at) select i, t, 'pan', ? from unnest(?::text[], ?::text[]) as v (i, t)`,
          [now, ids, cardTokens],
        );
        await trx.raw(
          `insert into identifier_fingerprints (mac_key_version, fingerprint, identifier_id, token, created_at)
           select ?, f, i, t, ? from unnest(?::bytea[], ?::text[], ?::text[]) as v (f, i, t)`,
          [mac.version, now, pans.map((pan) => fingerprint(mac.key, { kind: 'pan', value: pan })), ids, cardTokens],
        );
      }
    });
    known.push(...pans);
  }
  await knex.raw('analyze');
  say(`seeded ${CARDS.toLocaleString('en-US')} cards in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return known;
}

interface TrafficStats {
  lookups: number;
  misses: number;
  created: number;
  errors: number;
}

/** Lookups of known cards (a 201 would be a miss: the card created again) and new tokenisations. */
async function startTraffic(
  url: string,
  dataDir: string,
  known: readonly string[],
): Promise<{ stop(): Promise<TrafficStats> }> {
  const token = await issueDevToken(loadConfig({ NODE_ENV: 'development', DATA_DIR: dataDir }), {
    scopes: ['tokens:write'],
    subject: 'bench',
    ttlSeconds: 3600,
  });
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const stats: TrafficStats = { lookups: 0, misses: 0, created: 0, errors: 0 };
  const pick = (): string => JSON.stringify({ pan: known[randomInt(known.length)] });
  const lookups = autocannon(
    {
      url: `${url}/v1/tokens`,
      method: 'POST',
      headers,
      connections: 2,
      duration: 3600,
      requests: [{ setupRequest: (r: autocannon.Request) => ({ ...r, body: pick() }) }],
    },
    () => undefined,
  );
  const writes = autocannon(
    {
      url: `${url}/v1/tokens`,
      method: 'POST',
      headers,
      connections: 1,
      duration: 3600,
      requests: [{ setupRequest: (r: autocannon.Request) => ({ ...r, body: JSON.stringify({ pan: randomPan() }) }) }],
    },
    () => undefined,
  );
  lookups.on('response', (_client: unknown, status: number) => {
    stats.lookups += 1;
    if (status === 201) stats.misses += 1;
    else if (status !== 200) stats.errors += 1;
  });
  writes.on('response', (_client: unknown, status: number) => {
    if (status === 201) stats.created += 1;
    else stats.errors += 1;
  });
  let stopped = false;
  return {
    stop() {
      if (!stopped) {
        stopped = true;
        lookups.stop();
        writes.stop();
      }
      return Promise.resolve(stats);
    },
  };
}

export const rotate: Scenario = {
  name: 'rotate',
  description: `keys reencrypt of ${CARDS.toLocaleString('en-US')} cards (PostgreSQL, live traffic) vs raw node:crypto`,
  run: () => run(),
};
