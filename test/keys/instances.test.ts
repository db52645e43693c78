/**
 * Issue 18: keys safe across any number of instances. Two service instances (each its own key ring,
 * vault and heartbeat; on PostgreSQL each its own connection pool, on PGlite both on one memory store)
 * refresh every second and every 300 s (the largest KEY_RING_REFRESH_MS allowed), tokenise cards while
 * the operator rotates, backfills and retires, through the same code as the key CLI.
 */
import { expect } from 'chai';
import type { Caller } from '../../src/cards/vault-service.js';
import { createDatabase, type Database } from '../../src/db/database.js';
import { currentGeneration, liveInstances } from '../../src/keys/instance-heartbeat.js';
import { isKeyVersionNotWritable } from '../../src/keys/key-ring.js';
import { createTestDatabase, testDbConfig, type TestDatabase } from '../support/database.js';
import { generatePans } from '../support/pans.js';
import { keysFixture, type KeysFixture } from './keys-context.js';
import { Fleet, sleep } from './instances-fixture.js';

const FAST_MS = 1_000;
const SLOWEST_MS = 300_000; // the largest KEY_RING_REFRESH_MS the configuration accepts
const CALLER: Caller = { subject: 'till-test', shopperRef: undefined, origin: 'test' };

describe('keys across instances: key state enforced at commit, generations acknowledged', function () {
  this.timeout(180_000);
  let db: TestDatabase;
  let other: Database | undefined;
  let fx: KeysFixture;
  let fleet: Fleet;

  before(async () => {
    db = await createTestDatabase({ migrated: true });
    fx = await keysFixture(db, { policy: { singleOperator: true, propagationMs: 0, instanceWaitMs: 60_000 } });
    fleet = new Fleet(fx.masterKey);
    // On PostgreSQL the second instance has connections of its own, as another process would.
    if (db.url !== undefined) other = createDatabase(testDbConfig(db.url));
  });
  after(async () => {
    await fleet.stopAll();
    await other?.close();
    await db.close();
  });

  async function rowsUnder(purpose: 'pan-encryption' | 'identifier-mac', version: number): Promise<number> {
    const inventory = await fx.manager().inventory();
    return inventory.find((k) => k.purpose === purpose && k.version === version)?.rowsTotal ?? 0;
  }

  it('when a stale ring writes under a version no longer writable, then the database refuses it with key_version_writable', async () => {
    const stale = await fleet.start('stale-direct', db.knex, SLOWEST_MS, null);
    expect(stale.heartbeat).to.equal(undefined);
    const before = (await stale.ring.active('pan-encryption')).version;
    expect((await fx.run('rotate', '--purpose', 'pan-encryption', '--apply')).code).to.equal(0);
    // Written as the stale instance would: the card row alone, under the version its ring still has.
    let refused: unknown;
    await db.knex('shoppers').insert({ shopper_ref: 'shp_directwriteaaaaaaaaaaaaaaaaa', created_at: new Date() });
    try {
      await db.knex('cards').insert({
        token: 'tok_directwriteaaaaaaaaaaaaaaaaa',
        shopper_ref: 'shp_directwriteaaaaaaaaaaaaaaaaa',
        pan_ciphertext: Buffer.alloc(40),
        pan_key_version: before,
        created_at: new Date(),
        updated_at: new Date(),
      });
    } catch (error) {
      refused = error;
    }
    expect(isKeyVersionNotWritable(refused), String(refused)).to.equal(true);
    expect((refused as { code?: string }).code).to.equal('23514');
    // And an update moving a row to a version that is not active (a stale backfill) is refused too.
    const card = await stale.vault.tokenise({ kind: 'pan', pan: generatePans(1, '400001')[0] as string });
    const moved = db.knex('cards').where({ token: card.card.token }).update({ pan_key_version: before });
    await expectRefused(moved);
  });

  it('when a write under the active version is in flight, then the rotation waits for it to commit (the row is counted), and a write under that version after the activation is refused (PostgreSQL: two connections)', async function () {
    if (other === undefined) this.skip();
    const writer = other.knex;
    const active = (await fx.ring.active('pan-encryption')).version;
    const shopper = 'shp_inflightwriteaaaaaaaaaaaaaaa';
    const token = 'tok_inflightwriteaaaaaaaaaaaaaaa';
    const trx = await writer.transaction();
    let rotated = false;
    let rotation: Promise<unknown> | undefined;
    try {
      await trx('shoppers').insert({ shopper_ref: shopper, created_at: new Date() });
      await trx('cards').insert({
        token,
        shopper_ref: shopper,
        pan_ciphertext: Buffer.alloc(40),
        pan_key_version: active,
        created_at: new Date(),
        updated_at: new Date(),
      });
      rotation = fx
        .manager()
        .rotate('pan-encryption', undefined)
        .then(() => {
          rotated = true;
        });
      await sleep(1_000);
      // The key-state change waits for the write whose check passed: it cannot commit first.
      expect(rotated).to.equal(false);
      const state = (await db
        .knex('data_keys')
        .where({ purpose: 'pan-encryption', version: active })
        .first('state')) as {
        state: string;
      };
      expect(state.state).to.equal('active');
      await trx.commit();
    } catch (error) {
      await trx.rollback().catch(() => undefined);
      throw error;
    }
    await rotation;
    expect(rotated).to.equal(true);
    // The row is there, under the version now decrypt-only: counted by any retirement proof.
    expect(await rowsUnder('pan-encryption', active)).to.be.at.least(1);
    await expectRefused(
      writer('cards').insert({
        token: 'tok_inflightwritebbbbbbbbbbbbbbb',
        shopper_ref: shopper,
        pan_ciphertext: Buffer.alloc(40),
        pan_key_version: active,
        created_at: new Date(),
        updated_at: new Date(),
      }),
    );
    // Its ciphertext is not a real one: out of the way of the backfills that follow.
    await db.knex('cards').where({ token }).delete();
    await db.knex('shoppers').where({ shopper_ref: shopper }).delete();
  });

  it('when an instance writes from a ring that missed a rotation of either key, then the write is refused, the ring reloaded and the card stored under the new versions, the caller seeing success', async () => {
    // A ring loaded now and not refreshed for 300 s, not listening: stale after the next rotations.
    const stale = await fleet.start('stale', other?.knex ?? db.knex, SLOWEST_MS, null);
    expect(stale.heartbeat).to.equal(undefined);
    const cachedPan = (await stale.ring.active('pan-encryption')).version;
    const cachedMac = (await stale.ring.active('identifier-mac')).version;
    const generationBefore = stale.ring.loadedGeneration;
    for (const purpose of ['pan-encryption', 'identifier-mac']) {
      expect((await fx.run('rotate', '--purpose', purpose, '--apply')).code).to.equal(0);
    }
    // The ring really missed both rotations: nothing reloaded it in the background (no heartbeat, no
    // LISTEN), it still holds the generation it loaded and the versions it had.
    await sleep(200);
    expect(stale.ring.loadedGeneration).to.equal(generationBefore);
    expect(await currentGeneration(db.knex)).to.be.greaterThan(generationBefore);
    expect((await stale.ring.active('pan-encryption')).version).to.equal(cachedPan);
    expect((await stale.ring.active('identifier-mac')).version).to.equal(cachedMac);
    const { card, created } = await stale.vault.tokenise({ kind: 'pan', pan: generatePans(1, '400002')[0] as string });
    expect(created).to.equal(true);
    const row = (await db.knex('cards').where({ token: card.token }).first('pan_key_version')) as {
      pan_key_version: number;
    };
    expect(row.pan_key_version).to.equal(cachedPan + 1);
    const macs = (await db
      .knex('identifier_fingerprints')
      .where({ token: card.token })
      .pluck('mac_key_version')) as number[];
    expect(macs).to.deep.equal([cachedMac + 1]);
    // The ring reloaded because of the refusal (its own refresh is 300 s away).
    expect(stale.ring.loadedGeneration).to.be.greaterThan(generationBefore);
  });

  it('when a live instance has not loaded the published version, then rotate --apply waits for it, names it, and refuses after the timeout (audited); once it has, rotate activates', async () => {
    const behind = await fleet.start('behind', other?.knex ?? db.knex, SLOWEST_MS, { listen: false });
    const res = await fx.run('rotate', '--purpose', 'pan-encryption', '--apply', '--wait-timeout', '1');
    expect(res.code).to.equal(1);
    expect(res.stderr).to.contain('KEY_INSTANCES_BEHIND');
    expect(res.stderr).to.contain(behind.heartbeat?.instanceId);
    expect(res.stdout).to.match(
      new RegExp(
        `waiting .* for 1 instance\\(s\\) to load generation \\d+: ${behind.heartbeat?.instanceId} on host-behind`,
      ),
    );
    const denied = (await db
      .knex('audit_events')
      .where({ action: 'key.rotate', outcome: 'denied' })
      .orderBy('seq', 'desc')
      .first('details')) as { details: { code: string; instances: { instanceId: string }[] } };
    expect(denied.details.code).to.equal('KEY_INSTANCES_BEHIND');
    expect(denied.details.instances.map((i) => i.instanceId)).to.deep.equal([behind.heartbeat?.instanceId]);
    // keys status shows it behind; once it refreshes, the rotation (resumed) activates.
    const status = await fx.run('status');
    expect(status.stdout).to.match(new RegExp(`behind  ${behind.heartbeat?.instanceId} on host-behind`));
    await behind.ring.refresh();
    await behind.heartbeat?.beat();
    const again = await fx.run('rotate', '--purpose', 'pan-encryption', '--apply', '--wait-timeout', '5');
    expect(again.code, again.stderr).to.equal(0);
    expect(again.stdout).to.contain('resuming');
    await behind.heartbeat?.stop();
  });

  it('when two instances (1 s and 300 s refresh) tokenise through rotate, reencrypt (the slow one quiet) and retire, then nothing is written under a version no longer writable, retirement passes once both caught up, every card detokenises through either, and a further reencrypt moves nothing', async () => {
    const fast = await fleet.start('fast', db.knex, FAST_MS);
    const slow = await fleet.start('slow', other?.knex ?? db.knex, SLOWEST_MS);
    const live = (await liveInstances(db.knex)).map((i) => i.instanceId);
    expect(live).to.include.members([fast.heartbeat?.instanceId, slow.heartbeat?.instanceId]);

    const from = (await fast.ring.active('pan-encryption')).version;
    const onFast = fleet.traffic(fast);
    const onSlow = fleet.traffic(slow);
    await sleep(500);
    const rotated = await fx.run('rotate', '--purpose', 'pan-encryption', '--apply');
    expect(rotated.code, rotated.stderr).to.equal(0);
    await sleep(300);

    onSlow.paused = true; // a till on the slow instance falls quiet during the backfill
    const backfill = await fx.run('reencrypt', '--purpose', 'pan-encryption', '--batch-size', '50');
    expect(backfill.code, backfill.stdout + backfill.stderr).to.equal(0);
    onSlow.paused = false;
    await sleep(300);

    const retired = await fx.run('retire', '--purpose', 'pan-encryption', '--version', String(from), '--apply');
    expect(retired.code, retired.stdout + retired.stderr).to.equal(0);
    // Both instances hold the generation in which v{from} stopped being writable.
    const { state_generation: stopped } = (await db
      .knex('data_keys')
      .where({ purpose: 'pan-encryption', version: from + 1 })
      .first('state_generation')) as { state_generation: number };
    for (const i of await liveInstances(db.knex)) expect(i.generation).to.be.at.least(stopped);

    await sleep(500);
    onFast.stop = true;
    onSlow.stop = true;
    await Promise.all([onFast.done, onSlow.done]);
    expect([...onFast.errors, ...onSlow.errors]).to.deep.equal([]);
    expect(onFast.tokens.length).to.be.greaterThan(10);
    expect(onSlow.tokens.length).to.be.greaterThan(5);

    // The proof: no row anywhere under a version that is not readable, none under the retired one.
    expect(await rowsUnder('pan-encryption', from)).to.equal(0);
    const unreadable = (await db
      .knex('cards as c')
      .join('data_keys as k', (j) => {
        j.on('k.version', '=', 'c.pan_key_version').andOn('k.purpose', '=', db.knex.raw('?', ['pan-encryption']));
      })
      .whereNotIn('k.state', ['active', 'published', 'decrypt-only'])
      .count('* as n')
      .first()) as { n: number | string };
    expect(Number(unreadable.n)).to.equal(0);

    for (const token of [...onFast.tokens, ...onSlow.tokens]) {
      for (const instance of [fast, slow]) {
        const { pan } = await instance.vault.detokenise(token, 'reconciliation test', CALLER);
        expect(pan).to.match(/^\d{16}$/);
      }
    }
    const again = await fx.run('reencrypt', '--purpose', 'pan-encryption');
    expect(again.code).to.equal(0);
    expect(again.stdout).to.contain('cards.pan: 0 row(s) moved');
  });

  async function expectRefused(write: Promise<unknown>): Promise<void> {
    let error: unknown;
    try {
      await write;
    } catch (e) {
      error = e;
    }
    expect(isKeyVersionNotWritable(error), String(error)).to.equal(true);
  }
});
