/**
 * A SoftHSM2 token of a test file's own: a temporary token directory, its SOFTHSM2_CONF, a token
 * initialised with `softhsm2-util --init-token`, and the PIN in a 0600 file, as an operator would
 * set up a real HSM partition. SoftHSM2 is required, never skipped: without it the PKCS#11 tests
 * fail with the command that installs it (CI and `npm test` install it first: .ci/run,
 * scripts/ensure-softhsm.sh).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pkcs11js from 'pkcs11js';
import type { Env, Pkcs11Settings } from '../../src/config/config.js';

const MODULE_CANDIDATES = [
  process.env.SOFTHSM2_MODULE,
  '/usr/lib/softhsm/libsofthsm2.so',
  '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so',
  '/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so',
  '/usr/local/lib/softhsm/libsofthsm2.so',
];

export function softHsmModule(): string {
  const found = MODULE_CANDIDATES.find((candidate) => candidate !== undefined && fs.existsSync(candidate));
  if (found === undefined) {
    throw new Error(
      'SoftHSM2 is not installed (no libsofthsm2.so): run `apt-get install -y softhsm2` ' +
        '(npm test does it when run as root: scripts/ensure-softhsm.sh)',
    );
  }
  return found;
}

export interface SoftHsmToken {
  readonly module: string;
  readonly tokenLabel: string;
  readonly pinFile: string;
  readonly settings: Pkcs11Settings;
  /** The environment that selects this token's key `keyLabel` as the master key source. */
  env(keyLabel: string): Env;
  /**
   * Takes the token away as an outage would (the library finalised under the service, the token
   * gone from the slot list) until the returned function brings it back.
   */
  takeAway(): () => void;
  remove(): void;
}

export function createSoftHsmToken(prefix = 'lv'): SoftHsmToken {
  const module = softHsmModule();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-softhsm-'));
  const tokens = path.join(dir, 'tokens');
  fs.mkdirSync(tokens);
  const conf = path.join(dir, 'softhsm2.conf');
  fs.writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  const tokenLabel = `${prefix}-${randomBytes(4).toString('base64url')}`;
  const pin = randomBytes(9).toString('base64url');
  execFileSync(
    'softhsm2-util',
    ['--init-token', '--free', '--label', tokenLabel, '--pin', pin, '--so-pin', randomBytes(9).toString('base64url')],
    { env: { ...process.env, SOFTHSM2_CONF: conf }, stdio: 'ignore' },
  );
  const pinFile = path.join(dir, 'pin');
  fs.writeFileSync(pinFile, `${pin}\n`, { mode: 0o600 });
  // The library in this process reads SOFTHSM2_CONF when it is (re)initialised; the source
  // re-initialises it when a token label is not in the slot list.
  process.env.SOFTHSM2_CONF = conf;
  const settings: Pkcs11Settings = { module, tokenLabel, pinFile, timeoutMs: 5_000 };
  return {
    module,
    tokenLabel,
    pinFile,
    settings,
    env: (keyLabel) => ({
      MASTER_KEY: undefined,
      MASTER_KEY_SOURCE: 'pkcs11',
      PKCS11_MODULE: module,
      PKCS11_TOKEN_LABEL: tokenLabel,
      PKCS11_KEY_LABEL: keyLabel,
      PKCS11_PIN_FILE: pinFile,
    }),
    takeAway() {
      const other = new pkcs11js.PKCS11();
      other.load(module);
      try {
        other.C_Finalize(); // one library state per process: this finalises it for the source too
      } catch {
        // not initialised
      }
      const away = `${tokens}.away`;
      fs.renameSync(tokens, away);
      fs.mkdirSync(tokens);
      return () => {
        fs.rmSync(tokens, { recursive: true });
        fs.renameSync(away, tokens);
      };
    },
    remove() {
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
