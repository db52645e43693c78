/**
 * Fault: a service instance is killed (SIGKILL: no graceful stop, its heartbeat row stays) while it
 * holds an old key-ring generation, and the operator then rotates a key. The CLI waits for it, naming
 * it, only until its heartbeat expires (twice its refresh interval plus the grace), then activates; a
 * live instance beside it is acknowledged as usual.
 *
 * Real processes: `src/main.ts` twice on PostgreSQL (DATABASE_URL), the rotation through the same
 * function as `keys rotate --apply`.
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import type { ChildServer } from '../../bench/lib/child-server.js';
import { HEARTBEAT_GRACE_MS, liveInstances } from '../../src/keys/instance-heartbeat.js';
import { keysFixture } from '../keys/keys-context.js';
import { createTestDatabase, usingPostgres, type TestDatabase } from '../support/database.js';
import { scratchDirs, startService } from './storm.js';

const REFRESH_MS = 1_000;

describe('fault: an instance killed while holding an old key-ring generation', function () {
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

  it('when an instance is SIGKILLed and a key is then rotated, then the CLI waits for it only until its heartbeat expires, and activates', async () => {
    db = await createTestDatabase();
    const masterKey = randomBytes(32).toString('base64');
    const dir = scratch.make();
    const env = { KEY_RING_REFRESH_MS: String(REFRESH_MS) };
    for (const name of ['doomed', 'survivor']) {
      servers.push(await startService({ databaseUrl: db.url as string, masterKey, dir, name, env }));
    }
    const [doomed, survivor] = servers as [ChildServer, ChildServer];
    const fx = await keysFixture(db, {
      masterKeyBase64: masterKey,
      policy: { singleOperator: true, propagationMs: 0, instanceWaitMs: 60_000 },
    });
    const rows = (await db.knex('key_ring_instances').select('instance_id', 'pid')) as {
      instance_id: string;
      pid: number;
    }[];
    const doomedId = rows.find((r) => r.pid === doomed.pid)?.instance_id;
    const survivorId = rows.find((r) => r.pid === survivor.pid)?.instance_id;
    expect(doomedId, 'the doomed instance beats').to.be.a('string');
    expect(survivorId, 'the survivor beats').to.be.a('string');

    doomed.kill();
    const killedAt = Date.now();
    const res = await fx.run('rotate', '--purpose', 'pan-encryption', '--apply');
    const waited = Date.now() - killedAt;

    expect(res.code, res.stdout + res.stderr).to.equal(0);
    expect(res.stdout).to.contain('done: pan-encryption v2 is active');
    // It was waited for, by name, holding the old generation; the survivor never held it up.
    expect(res.stdout).to.match(new RegExp(`waiting .* to load generation \\d+: ${doomedId} on .* holds generation`));
    const waitingLines = res.stdout.split('\n').filter((l) => l.includes('waiting ') && l.includes('instance(s)'));
    // The survivor, listening, acknowledges within moments: the last wait is for the killed one alone.
    expect(waitingLines.at(-1)).to.contain(doomedId).and.not.contain(survivorId);
    // Not longer than its expiry (2 × refresh + grace) plus polling and the rotation itself.
    expect(waited).to.be.below(2 * REFRESH_MS + HEARTBEAT_GRACE_MS + 8_000);
    const live = (await liveInstances(db.knex)).map((i) => i.instanceId);
    expect(live).to.deep.equal([survivorId]);
  });
});
