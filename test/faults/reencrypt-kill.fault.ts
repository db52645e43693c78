/**
 * Fault: the key re-encryption backfill is killed (SIGKILL) midway while two service instances
 * tokenise cards over HTTP, for both data-key purposes (the PAN encryption key, and the identifier
 * MAC key whose fingerprints the lookups depend on). The backfill is run again and must resume to
 * the end; meanwhile no lookup of a known card may miss (a new token, another token, an error).
 *
 * Everything runs as real processes: `src/main.ts` twice and `src/cli/keys.ts` for rotate and
 * reencrypt, on PostgreSQL (DATABASE_URL).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'chai';
import type { ChildServer } from '../../bench/lib/child-server.js';
import { projectRoot } from '../../src/config/project-root.js';
import { signToken } from '../support/auth.js';
import { createTestDatabase, usingPostgres, type TestDatabase } from '../support/database.js';
import { generatePans } from '../support/pans.js';
import { scratchDirs, startService } from './storm.js';

const CARDS = 600;
const REFRESH_MS = '200';

interface Known {
  readonly pan: string;
  readonly token: string;
  readonly shopperReference: string;
}

interface Traffic {
  lookups: number;
  created: number;
  /** A known card answered with another token or shopper, or as new: must stay 0. */
  misses: number;
  /** Anything but 200/201, or no answer: must stay 0. */
  errors: string[];
}

interface CliRun {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly output: string;
}

describe('fault: key re-encryption killed midway under live traffic on two instances', function () {
  this.timeout(300_000);
  const scratch = scratchDirs();
  const servers: ChildServer[] = [];
  let db: TestDatabase | undefined;

  before(function () {
    if (!usingPostgres) this.skip();
  });
  after(async () => {
    await Promise.all(servers.map((s) => s.stop().catch(() => undefined)));
    await db?.close();
    scratch.cleanup();
  });

  it('when the backfill of either key is killed and run again, then it completes and no lookup ever misses', async () => {
    db = await createTestDatabase();
    const database = db;
    const masterKey = randomBytes(32).toString('base64');
    const dir = scratch.make();
    const env = { KEY_RING_REFRESH_MS: REFRESH_MS };
    for (const name of ['a', 'b']) {
      servers.push(await startService({ databaseUrl: db.url as string, masterKey, dir, name, env }));
    }
    const urls = servers.map((s) => s.url);
    const bearer = await signToken({ scope: 'tokens:write', subject: 'till-fault' });

    const tokenise = async (url: string, pan: string): Promise<{ status: number; body: Known } | string> => {
      try {
        const res = await fetch(`${url}/v1/tokens`, {
          method: 'POST',
          headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
          body: JSON.stringify({ pan }),
          signal: AbortSignal.timeout(15_000),
        });
        const body = (await res.json()) as Known & { code?: string };
        return res.status === 200 || res.status === 201 ? { status: res.status, body } : `${res.status} ${body.code}`;
      } catch (error) {
        return `no answer: ${(error as Error).name}`;
      }
    };

    // The cards, through the service (half through each instance).
    const known: Known[] = [];
    const pans = generatePans(CARDS);
    await Promise.all(
      Array.from({ length: 16 }, async (_, w) => {
        for (let i = w; i < pans.length; i += 16) {
          const res = await tokenise(urls[i % 2] as string, pans[i] as string);
          if (typeof res === 'string') throw new Error(`seeding failed: ${res}`);
          known.push({ pan: pans[i] as string, token: res.body.token, shopperReference: res.body.shopperReference });
        }
      }),
    );

    // Live traffic until stopped: known cards (must come back as they were) and one new card in five.
    const traffic: Traffic = { lookups: 0, created: 0, misses: 0, errors: [] };
    let running = true;
    const fresh = generatePans(4_000, '510510');
    const workers = Promise.all(
      Array.from({ length: 6 }, async (_, w) => {
        for (let i = 0; running; i++) {
          const url = urls[(w + i) % 2] as string;
          if (i % 5 === 4 && fresh.length > 0) {
            const pan = fresh.pop() as string;
            const res = await tokenise(url, pan);
            if (typeof res === 'string') traffic.errors.push(res);
            else if (res.status === 201) {
              traffic.created += 1;
              known.push({ pan, token: res.body.token, shopperReference: res.body.shopperReference });
            } else traffic.misses += 1;
            continue;
          }
          const card = known[Math.floor(Math.random() * known.length)] as Known;
          const res = await tokenise(url, card.pan);
          traffic.lookups += 1;
          if (typeof res === 'string') traffic.errors.push(res);
          else if (
            res.status !== 200 ||
            res.body.token !== card.token ||
            res.body.shopperReference !== card.shopperReference
          ) {
            traffic.misses += 1;
          }
        }
      }),
    );

    const cli = (args: readonly string[], killWhen?: () => Promise<boolean>): Promise<CliRun> => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/keys.ts', ...args], {
        cwd: projectRoot(),
        env: {
          PATH: process.env['PATH'] ?? '',
          NODE_ENV: 'test',
          DATABASE_URL: database.url as string,
          MASTER_KEY: masterKey,
          DATA_DIR: `${dir}/cli`,
          KEY_RING_REFRESH_MS: REFRESH_MS,
          KEYS_SINGLE_OPERATOR: 'true',
          // Single-operator key management beside a DATABASE_URL is refused unless asked for.
          ALLOW_DEVELOPMENT_DEFAULTS: 'true',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      child.stdout.on('data', (d: Buffer) => (output += d.toString()));
      child.stderr.on('data', (d: Buffer) => (output += d.toString()));
      let watching = killWhen !== undefined;
      void (async () => {
        while (watching) {
          if (await killWhen!().catch(() => false)) {
            child.kill('SIGKILL');
            return;
          }
          await sleep(20);
        }
      })();
      return new Promise((resolve) =>
        child.once('exit', (code, signal) => {
          watching = false;
          resolve({ code, signal, output });
        }),
      );
    };
    const running_ = async (): Promise<number> => {
      const rows = (await database
        .knex('reencrypt_progress')
        .where({ state: 'running' })
        .sum({ done: 'rows_done' })) as { done: number | string | null }[];
      return Number(rows[0]?.done ?? 0);
    };

    try {
      for (const purpose of ['pan-encryption', 'identifier-mac'] as const) {
        const rotated = await cli(['rotate', '--purpose', purpose, '--apply']);
        expect(rotated.code, rotated.output).to.equal(0);
        // Throttled so that the kill lands midway even on a loaded machine.
        const killed = await cli(
          ['reencrypt', '--purpose', purpose, '--batch-size', '25', '--max-rows-per-second', '150'],
          async () => (await running_()) >= CARDS / 4,
        );
        expect(killed.signal, `${purpose}: ${killed.output}`).to.equal('SIGKILL');
        const resumed = await cli(['reencrypt', '--purpose', purpose, '--batch-size', '100']);
        expect(resumed.code, resumed.output).to.equal(0);
        expect(resumed.output).to.contain('(resumed)');
        expect(resumed.output).to.contain(`every row is under ${purpose} v2`);
      }
      // A little more traffic on the finished rotation, then stop.
      await sleep(1_000);
    } finally {
      running = false;
      await workers;
    }

    expect(traffic.errors.slice(0, 5), `${traffic.errors.length} errors`).to.deep.equal([]);
    expect(traffic.misses, 'lookups of known cards that missed').to.equal(0);
    expect(traffic.lookups).to.be.greaterThan(100);
    expect(traffic.created).to.be.greaterThan(0);
    // Every row under v2, every backfill completed, and every card still found after it.
    expect(await database.knex('cards').distinct('pan_key_version').pluck('pan_key_version')).to.deep.equal([2]);
    expect(
      await database.knex('identifier_fingerprints').distinct('mac_key_version').pluck('mac_key_version'),
    ).to.deep.equal([2]);
    expect(await database.knex('reencrypt_progress').whereNot({ state: 'completed' }).pluck('field_set')).to.deep.equal(
      [],
    );
    for (const card of known.slice(0, 50)) {
      const res = await tokenise(urls[1] as string, card.pan);
      expect(typeof res === 'string' ? res : { status: res.status, token: res.body.token }).to.deep.equal({
        status: 200,
        token: card.token,
      });
    }
    // eslint-disable-next-line no-console
    console.log(`      ${traffic.lookups} lookups and ${traffic.created} new cards during the backfills, 0 misses`);
  });
});
