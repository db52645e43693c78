/**
 * Live traffic for key-rotation tests: tokenises known cards (PAN, PAR, alias) and new cards in a
 * loop and checks that every known identifier keeps resolving to the same token and shopper.
 *
 * In-process: `runLiveTraffic(vault, known, stop)`. As a child process (PostgreSQL mode, another
 * process beside the key CLI): `node --import tsx test/support/live-traffic.ts`, with a JSON
 * `{databaseUrl, masterKeyBase64, known}` on stdin; on SIGTERM it makes one last pass over every
 * card it knows and prints its `TrafficStats` as JSON on stdout. No card number is ever printed.
 */
import { createDatabase } from '../../src/db/database.js';
import { KeyRing } from '../../src/keys/key-ring.js';
import { LocalMasterKey } from '../../src/keys/master-key-source.js';
import { VaultService, type CardInput } from '../../src/cards/vault-service.js';
import { testDbConfig } from './database.js';
import { generatePans } from './pans.js';

export interface KnownCard {
  readonly input: CardInput;
  readonly token: string;
  readonly shopperRef: string;
}

export interface TrafficStats {
  lookups: number;
  created: number;
  /** Known identifiers that resolved to another card, or created a new one: must stay 0. */
  misses: number;
  errors: number;
  /** The error messages (never card data: vault errors carry codes). */
  errorSamples: string[];
}

export async function runLiveTraffic(
  vault: VaultService,
  known: readonly KnownCard[],
  shouldStop: () => boolean,
  bin = '510510',
): Promise<TrafficStats> {
  const stats: TrafficStats = { lookups: 0, created: 0, misses: 0, errors: 0, errorSamples: [] };
  const cards = [...known];
  const check = async (card: KnownCard): Promise<void> => {
    try {
      const { card: found, created } = await vault.tokenise(card.input);
      stats.lookups += 1;
      if (created || found.token !== card.token || found.shopperReference !== card.shopperRef) stats.misses += 1;
    } catch (error) {
      stats.errors += 1;
      if (stats.errorSamples.length < 5) stats.errorSamples.push(String((error as Error).message).slice(0, 200));
    }
  };
  let i = 0;
  while (!shouldStop()) {
    i += 1;
    if (i % 4 === 0) {
      const [pan] = generatePans(1, bin);
      try {
        const input: CardInput = { kind: 'pan', pan: pan! };
        const { card, created } = await vault.tokenise(input);
        if (created) stats.created += 1;
        cards.push({ input, token: card.token, shopperRef: card.shopperReference });
      } catch (error) {
        stats.errors += 1;
        if (stats.errorSamples.length < 5) stats.errorSamples.push(String((error as Error).message).slice(0, 200));
      }
    } else {
      await check(cards[Math.floor(Math.random() * cards.length)]!);
    }
    // Let the rest of the process run (PGlite mode shares one event loop with the rotation).
    if (i % 8 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  // Last pass, after the rotation: every card seen, old and new, still resolves to itself.
  for (const card of cards) await check(card);
  return stats;
}

async function main(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const input = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
    databaseUrl: string;
    masterKeyBase64: string;
    known: KnownCard[];
  };
  const database = createDatabase(testDbConfig(input.databaseUrl, { poolMax: 4 }));
  const ring = new KeyRing(database.knex, new LocalMasterKey(Buffer.from(input.masterKeyBase64, 'base64'), 'test'), 50);
  await ring.reload();
  const vault = new VaultService(database.knex, ring, { detokenise: { enabled: false, perMinute: 1 } });
  let stop = false;
  process.on('SIGTERM', () => {
    stop = true;
  });
  process.stderr.write('live-traffic: running\n');
  const stats = await runLiveTraffic(vault, input.known, () => stop);
  process.stdout.write(`${JSON.stringify(stats)}\n`);
  await database.close();
}

if (import.meta.url === `file://${process.argv[1] ?? ''}`) {
  main().catch((error: unknown) => {
    process.stderr.write(`live-traffic: ${String(error)}\n`);
    process.exitCode = 1;
  });
}
