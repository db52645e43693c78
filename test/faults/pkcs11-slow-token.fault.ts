/**
 * Runs in the fault suite (npm run test:faults), in a process of its own: after other PKCS#11 test
 * files in the same process, opening the source through the second library path never answered.
 *
 * A slow token (issue 19: "session handling survives the token being slow"): the token's encryptions
 * and decryptions answer later than PKCS11_TIMEOUT_MS. The source bounds each operation with that
 * timeout (Pkcs11MasterKey.runNow: a race against a timer), drops the session and reports
 * MASTER_KEY_UNAVAILABLE: /readyz goes 503, a key operation that needed the token rolls back, card
 * traffic goes on from the key ring, and when the token is fast again everything recovers without a
 * restart. The delay is real (the token does the work, its answer is held back), on SoftHSM2.
 */
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pkcs11js from 'pkcs11js';
import { createMasterKeyInToken, Pkcs11MasterKey } from '../../src/keys/master-key-sources/pkcs11.js';
import { signToken } from '../support/auth.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startTestService, testEnv } from '../support/harness.js';
import { generatePans } from '../support/pans.js';
import { createSoftHsmToken, type SoftHsmToken } from '../support/softhsm.js';
import { keysFixture } from '../keys/keys-context.js';

const TIMEOUT_MS = 1_000; // headroom for opening the source (initialise, log in, find the key) on a loaded machine
const DELAY_MS = 4_000;

/**
 * Holds back the answers of the binding's asynchronous C_Encrypt / C_Decrypt while `slow` is set. The
 * binding copies its methods onto each instance when it is constructed, and the source keeps one
 * instance per module path: so this patches the native prototype's callback forms first, and the test
 * names the library by a path of its own (a symbolic link, the same library) that no instance exists for.
 */
function slowToken(): { slow: boolean; restore(): void } {
  const state = { slow: false, restore: () => undefined as void };
  const restores: (() => void)[] = [];
  for (const name of ['C_EncryptCallback', 'C_DecryptCallback']) {
    let proto = pkcs11js.PKCS11.prototype as unknown as Record<string, unknown> | null;
    while (proto !== null && !Object.prototype.hasOwnProperty.call(proto, name)) {
      proto = Object.getPrototypeOf(proto) as Record<string, unknown> | null;
    }
    if (proto === null) throw new Error(`pkcs11js has no ${name}`);
    const owner = proto;
    const original = owner[name] as (...args: unknown[]) => unknown;
    owner[name] = function (this: unknown, ...args: unknown[]) {
      const callback = args.at(-1);
      if (state.slow && typeof callback === 'function') {
        args[args.length - 1] = (...answer: unknown[]) =>
          setTimeout(() => (callback as (...a: unknown[]) => void)(...answer), DELAY_MS);
      }
      return original.apply(this, args);
    };
    restores.push(() => {
      owner[name] = original;
    });
  }
  state.restore = () => restores.forEach((r) => r());
  return state;
}

async function eventually<T>(what: string, probe: () => Promise<T>, ok: (t: T) => boolean, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (ok(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(value)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('master key in a slow PKCS#11 token (answers later than PKCS11_TIMEOUT_MS)', function () {
  this.timeout(180_000);
  let token: SoftHsmToken;
  let db: TestDatabase;
  let delay: ReturnType<typeof slowToken>;
  let linkDir: string;
  let module: string;

  before(async () => {
    delay = slowToken();
    token = createSoftHsmToken('lv-slow');
    linkDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-slow-module-'));
    module = path.join(linkDir, 'libsofthsm2-slow.so');
    fs.symlinkSync(token.module, module);
    await createMasterKeyInToken(token.settings, 'lv-kek-slow');
    db = await createTestDatabase({ migrated: true });
  });
  after(async () => {
    delay.restore();
    await db.close();
    token.remove();
    fs.rmSync(linkDir, { recursive: true, force: true });
  });

  it('when the token answers late, then /readyz is 503, a key rotation that needs it rolls back with nothing written, cards still tokenise, and all recovers without a restart once it is fast again', async () => {
    const svc = await startTestService({
      db,
      env: await testEnv({ ...token.env('lv-kek-slow'), PKCS11_MODULE: module, PKCS11_TIMEOUT_MS: String(TIMEOUT_MS) }),
    });
    const source = await Pkcs11MasterKey.open({ ...token.settings, module, timeoutMs: TIMEOUT_MS }, 'lv-kek-slow');
    try {
      const fx = await keysFixture(db, {
        source,
        policy: { singleOperator: true, propagationMs: 0, instanceWaitMs: 30_000 },
      });
      const bearer = await signToken({ scope: 'tokens:write' });
      const [before, during, after] = generatePans(3);
      expect((await svc.request('POST', '/v1/tokens', { token: bearer, json: { pan: before } })).status).to.equal(201);
      expect((await svc.request('GET', '/readyz')).status).to.equal(200);
      const keysBefore = await db
        .knex('data_keys')
        .orderBy(['purpose', 'version'])
        .select('purpose', 'version', 'state', 'wrapped_key');

      delay.slow = true;
      let slow = true;
      try {
        const down = await eventually(
          '/readyz 503',
          () => svc.request('GET', '/readyz'),
          (r) => r.status === 503,
        );
        expect(down.body.code).to.equal('MASTER_KEY_UNAVAILABLE');
        expect(down.body.checks).to.include({ masterKey: 'down' });
        expect(svc.logs()).to.contain(`did not answer within ${TIMEOUT_MS} ms`);
        // A rotation wraps its new key in the token: it times out and its transaction rolls back.
        const rotation = await fx.run('rotate', '--purpose', 'pan-encryption', '--apply');
        expect(rotation.code).to.equal(1);
        expect(rotation.stderr).to.contain('MASTER_KEY_UNAVAILABLE');
        expect(
          await db
            .knex('data_keys')
            .orderBy(['purpose', 'version'])
            .select('purpose', 'version', 'state', 'wrapped_key'),
        ).to.deep.equal(keysBefore);
        // The hot path does not touch the token: cards go on from the key ring.
        const tokenised = await svc.request('POST', '/v1/tokens', { token: bearer, json: { pan: during } });
        expect(tokenised.status, tokenised.text).to.equal(201);
        delay.slow = false;
        slow = false;
        const up = await eventually(
          '/readyz 200',
          () => svc.request('GET', '/readyz'),
          (r) => r.status === 200,
        );
        expect(up.body.checks).to.include({ masterKey: 'up' });
      } finally {
        if (slow) delay.slow = false;
      }
      // The same processes, no restart: the token works again for the CLI and the service.
      const again = await fx.run('rotate', '--purpose', 'pan-encryption', '--apply');
      expect(again.code, again.stderr).to.equal(0);
      await eventually(
        'the service to load the rotation',
        () => svc.request('POST', '/v1/tokens', { token: bearer, json: { pan: after } }),
        (r) => r.status === 201,
      );
    } finally {
      await source.close();
      await svc.close();
    }
  });
});
