/**
 * Issue 18, the waits and the hazard itself:
 * - an instance that does NOT listen for generation bumps (only its refresh interval), quiet while the
 *   operator rotates and backfills: its first write after resuming is still under the old version, is
 *   refused by the database and retried, and nothing is ever stored under a version no longer writable;
 * - `retire` and `destroy` wait for a live instance that is behind, name it, refuse after the timeout
 *   (audited), and go through once it has caught up.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Caller } from '../../src/cards/vault-service.js';
import { createDatabase, type Database } from '../../src/db/database.js';
import { currentGeneration, liveInstances } from '../../src/keys/instance-heartbeat.js';
import { isKeyVersionNotWritable } from '../../src/keys/key-ring.js';
import { createTestDatabase, testDbConfig, type TestDatabase } from '../support/database.js';
import { generatePans } from '../support/pans.js';
import { approve, ed25519, genesis, requestId } from './custodians-fixture.js';
import { keysFixture, type KeysFixture } from './keys-context.js';
import { Fleet, sleep, type Instance } from './instances-fixture.js';

const FAST_MS = 1_000;
/** Long enough that the backfill ends before the quiet instance's next refresh; short enough to wait for. */
const QUIET_MS = 8_000;
const SLOWEST_MS = 300_000;
const CALLER: Caller = { subject: 'till-test', shopperRef: undefined, origin: 'test' };

describe('keys across instances: an instance that does not listen, quiet during the backfill', function () {
  this.timeout(180_000);
  let db: TestDatabase;
  let other: Database | undefined;
  let fx: KeysFixture;
  let fleet: Fleet;

  before(async () => {
    db = await createTestDatabase({ migrated: true });
    fx = await keysFixture(db, { policy: { singleOperator: true, propagationMs: 0, instanceWaitMs: 60_000 } });
    fleet = new Fleet(fx.masterKey);
    if (db.url !== undefined) other = createDatabase(testDbConfig(db.url));
  });
  after(async () => {
    await fleet.stopAll();
    await other?.close();
    await db.close();
  });

  /** Watches, every 50 ms, for cards under `from` that were not there when it stopped being writable. */
  function watch(from: number, legit: ReadonlySet<string>): { violations: string[]; stop(): Promise<void> } {
    const violations: string[] = [];
    let stopped = false;
    const done = (async () => {
      while (!stopped) {
        const under = (await db.knex('cards').where({ pan_key_version: from }).pluck('token')) as string[];
        for (const token of under) if (!legit.has(token)) violations.push(`${token} written under v${from}`);
        const unreadable = (await db
          .knex('cards as c')
          .join('data_keys as k', (j) => {
            j.on('k.version', '=', 'c.pan_key_version').andOn('k.purpose', '=', db.knex.raw('?', ['pan-encryption']));
          })
          .whereIn('k.state', ['retired', 'destroyed'])
          .pluck('c.token')) as string[];
        violations.push(...unreadable.map((t) => `${t} under a retired version`));
        await sleep(50);
      }
    })();
    return {
      violations,
      async stop() {
        stopped = true;
        await done;
      },
    };
  }

  it('when an instance that does not listen (8 s refresh) is quiet through rotate and backfill, then its first write after resuming is refused at commit and retried invisibly, no card is ever stored under the old version after it stopped being writable (watched throughout), retirement passes, and every card detokenises through either instance', async () => {
    const quietKnex = other?.knex ?? db.knex;
    const fast = await fleet.start('fast', db.knex, FAST_MS);
    const quiet = await fleet.start('quiet', quietKnex, QUIET_MS, { listen: false });
    // Every refusal of the write-time key check on the quiet instance's connections (on PGlite, the
    // one store both share: the fast till is paused around the quiet instance's first write).
    const refusals: string[] = [];
    quietKnex.on('query-error', (error: unknown) => {
      if (isKeyVersionNotWritable(error)) refusals.push(String(error));
    });
    const from = (await fast.ring.active('pan-encryption')).version;
    const onFast = fleet.traffic(fast);
    const onQuiet = fleet.traffic(quiet);
    await sleep(500);

    onQuiet.paused = true; // the till on the quiet instance falls quiet
    await sleep(100);
    const rotated = await fx.run('rotate', '--purpose', 'pan-encryption', '--apply');
    expect(rotated.code, rotated.stderr).to.equal(0);
    const { state_generation: stopped } = (await db
      .knex('data_keys')
      .where({ purpose: 'pan-encryption', version: from + 1 })
      .first('state_generation')) as { state_generation: number | string };
    // Rows under v{from} now were all committed before it stopped being writable (the check and the
    // state change serialise on the key-state lock): anything else appearing under it is a violation.
    const legit = new Set((await db.knex('cards').where({ pan_key_version: from }).pluck('token')) as string[]);
    const watcher = watch(from, legit);

    const backfill = await fx.run('reencrypt', '--purpose', 'pan-encryption', '--batch-size', '50');
    expect(backfill.code, backfill.stdout + backfill.stderr).to.equal(0);

    // The quiet instance has not refreshed since before the activation: its ring still picks v{from}.
    onFast.paused = true;
    await sleep(50);
    expect(
      quiet.ring.loadedGeneration,
      'the backfill outlasted the quiet refresh interval: raise QUIET_MS',
    ).to.be.lessThan(Number(stopped));
    const refusedBefore = refusals.length;
    const first = await quiet.vault.tokenise({ kind: 'pan', pan: generatePans(1, '400003')[0] as string });
    expect(first.created).to.equal(true);
    expect(refusals.length - refusedBefore, 'the first write was refused by the database').to.equal(1);
    expect(quiet.ring.loadedGeneration).to.be.at.least(Number(stopped));
    const row = (await db.knex('cards').where({ token: first.card.token }).first('pan_key_version')) as {
      pan_key_version: number;
    };
    expect(row.pan_key_version).to.equal(from + 1);
    onFast.paused = false;
    onQuiet.paused = false;
    await sleep(300);

    const retired = await fx.run('retire', '--purpose', 'pan-encryption', '--version', String(from), '--apply');
    expect(retired.code, retired.stdout + retired.stderr).to.equal(0);
    await sleep(300);
    onFast.stop = true;
    onQuiet.stop = true;
    await Promise.all([onFast.done, onQuiet.done]);
    await watcher.stop();

    expect(watcher.violations).to.deep.equal([]);
    expect([...onFast.errors, ...onQuiet.errors]).to.deep.equal([]);
    expect(onQuiet.tokens.length).to.be.greaterThan(5);
    for (const token of [first.card.token, ...onFast.tokens, ...onQuiet.tokens]) {
      for (const instance of [fast, quiet]) {
        const { pan } = await instance.vault.detokenise(token, 'reconciliation test', CALLER);
        expect(pan).to.match(/^\d{16}$/);
      }
    }
    const again = await fx.run('reencrypt', '--purpose', 'pan-encryption');
    expect(again.code).to.equal(0);
    expect(again.stdout).to.contain('cards.pan: 0 row(s) moved');
  });
});

describe('keys across instances: retire and destroy wait for an instance that is behind', function () {
  this.timeout(180_000);
  let db: TestDatabase;
  let fx: KeysFixture;
  let fleet: Fleet;
  let dir: string;
  let behind: Instance;

  before(async () => {
    db = await createTestDatabase({ migrated: true });
    fx = await keysFixture(db, { policy: { singleOperator: true, propagationMs: 0, instanceWaitMs: 60_000 } });
    fleet = new Fleet(fx.masterKey);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-waits-'));
    // A live instance that neither listens nor refreshes on its own within the test: behind until told.
    behind = await fleet.start('behind', db.knex, SLOWEST_MS, { listen: false });
  });
  after(async () => {
    await fleet.stopAll();
    await db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const id = () => behind.heartbeat!.instanceId;
  async function catchUp(): Promise<void> {
    await behind.ring.refresh();
    await behind.heartbeat!.beat();
  }
  async function lastDenial(action: string): Promise<{ code: string; instances: { instanceId: string }[] }> {
    const row = (await db
      .knex('audit_events')
      .where({ action, outcome: 'denied' })
      .orderBy('seq', 'desc')
      .first('details')) as { details: unknown };
    return (typeof row.details === 'string' ? JSON.parse(row.details) : row.details) as {
      code: string;
      instances: { instanceId: string }[];
    };
  }
  /** Runs a command that waits, lets the instance catch up meanwhile, and returns the command's result. */
  async function caughtUpDuring(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const running = fx.run(...argv, '--wait-timeout', '60');
    await sleep(800);
    await catchUp();
    return running;
  }

  it('when a live instance has not loaded the generation in which the version stopped being writable, then retire waits for it, names it, refuses after the timeout (audited, the version untouched), and goes through once it has', async () => {
    // Publish (refused: behind has not loaded it), catch up, activate: behind holds the publication.
    expect((await fx.run('rotate', '--purpose', 'pan-encryption', '--apply', '--wait-timeout', '1')).code).to.equal(1);
    await catchUp();
    expect((await fx.run('rotate', '--purpose', 'pan-encryption', '--apply')).code).to.equal(0);
    const stopped = await currentGeneration(db.knex);
    expect(behind.ring.loadedGeneration).to.be.lessThan(stopped);

    const refused = await fx.run(
      'retire',
      '--purpose',
      'pan-encryption',
      '--version',
      '1',
      '--apply',
      '--wait-timeout',
      '1',
    );
    expect(refused.code).to.equal(1);
    expect(refused.stderr).to.contain('KEY_INSTANCES_BEHIND');
    expect(refused.stderr).to.contain(id());
    expect(refused.stdout).to.match(
      new RegExp(`waiting .* for 1 instance\\(s\\) to load generation ${stopped}: ${id()} on host-behind`),
    );
    const denied = await lastDenial('key.retire');
    expect(denied.code).to.equal('KEY_INSTANCES_BEHIND');
    expect(denied.instances.map((i) => i.instanceId)).to.deep.equal([id()]);
    const state = (await db.knex('data_keys').where({ purpose: 'pan-encryption', version: 1 }).first('state')) as {
      state: string;
    };
    expect(state.state).to.equal('decrypt-only');

    const retired = await caughtUpDuring('retire', '--purpose', 'pan-encryption', '--version', '1', '--apply');
    expect(retired.code, retired.stdout + retired.stderr).to.equal(0);
    expect(retired.stdout).to.match(new RegExp(`waiting .* to load generation ${stopped}: ${id()} on host-behind`));
    expect(retired.stdout).to.contain(`every live instance has loaded generation ${stopped}`);
  });

  it('when a live instance has not loaded the generation in which the version was retired, then destroy waits for it, names it, refuses after the timeout (audited, the material intact), and destroys once it has', async () => {
    const retiredIn = await currentGeneration(db.knex);
    expect(behind.ring.loadedGeneration).to.be.lessThan(retiredIn);
    const [alice, bob] = [ed25519(dir, 'alice'), ed25519(dir, 'bob')];
    await genesis(fx, alice, bob);
    const request = await requestId(fx, 'destroy', '--purpose', 'pan-encryption', '--version', '1');
    for (const who of [alice, bob]) expect((await approve(fx, request, who)).code).to.equal(0);
    const destroy = ['destroy', '--purpose', 'pan-encryption', '--version', '1', '--apply', '--request', request];

    const refused = await fx.run(...destroy, '--wait-timeout', '1');
    expect(refused.code).to.equal(1);
    expect(refused.stderr).to.contain('KEY_INSTANCES_BEHIND');
    expect(refused.stderr).to.contain(id());
    expect(refused.stdout).to.match(new RegExp(`waiting .* to load generation ${retiredIn}: ${id()} on host-behind`));
    const denied = await lastDenial('key.destroy');
    expect(denied.code).to.equal('KEY_INSTANCES_BEHIND');
    expect(denied.instances.map((i) => i.instanceId)).to.deep.equal([id()]);
    const intact = (await db.knex('data_keys').where({ purpose: 'pan-encryption', version: 1 }).first()) as {
      state: string;
      wrapped_key: unknown;
    };
    expect(intact.state).to.equal('retired');
    expect(intact.wrapped_key).to.not.equal(null);

    const destroyed = await caughtUpDuring(...destroy);
    expect(destroyed.code, destroyed.stdout + destroyed.stderr).to.equal(0);
    expect(destroyed.stdout).to.contain(`every live instance has loaded generation ${retiredIn}`);
    const gone = (await db.knex('data_keys').where({ purpose: 'pan-encryption', version: 1 }).first()) as {
      state: string;
      wrapped_key: unknown;
    };
    expect(gone).to.include({ state: 'destroyed', wrapped_key: null });
    expect((await liveInstances(db.knex)).map((i) => i.instanceId)).to.deep.equal([id()]);
  });
});
