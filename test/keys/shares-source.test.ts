/**
 * MASTER_KEY_SOURCE=shares as configured: start-up refuses a missing or contradictory setting, and the
 * key CLI's way to the key (MASTER_KEY_SHARE_FILES: cleartext share files written by `keys shares
 * reveal`) rebuilds only the pinned key, from at least two shares, from files only the owner reads.
 * No database: the split here is the library's, the files the CLI's format.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { split } from 'shamir-secret-sharing';
import { ConfigError, loadConfig, type Env } from '../../src/config/config.js';
import { LocalMasterKey, loadMasterKey, MasterKeySet } from '../../src/keys/master-key-source.js';
import { CLEAR_SHARE_FILE_TYPE } from '../../src/keys/master-key-sources/shares.js';

const production: Env = {
  NODE_ENV: 'production',
  DATABASE_URL: 'postgres://svc@db.internal:5432/loyalty',
  AUTH_ISSUER: 'https://idp.example/',
  AUTH_AUDIENCE: 'loyalty-vault',
  AUTH_JWKS_URL: 'https://idp.example/.well-known/jwks.json',
};

function problemsOf(env: Env): string[] {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).to.be.instanceOf(ConfigError);
    return [...(error as ConfigError).problems];
  }
  throw new Error('expected a ConfigError');
}

describe("MASTER_KEY_SOURCE=shares: configuration and the key CLI's share files", () => {
  const key = randomBytes(32);
  const keyId = new LocalMasterKey(key, 'k').keyId;
  let dir: string;
  let files: string[];

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-shares-src-'));
    const shares = await split(Uint8Array.from(key), 3, 2);
    files = shares.map((share, i) => {
      const file = path.join(dir, `share-${i}.json`);
      const text = JSON.stringify({ type: CLEAR_SHARE_FILE_TYPE, share: Buffer.from(share).toString('base64url') });
      fs.writeFileSync(file, text, { mode: 0o600 });
      return file;
    });
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  const cases: [string, Env, string][] = [
    ['the key id is missing', { MASTER_KEY_SOURCE: 'shares' }, 'MASTER_KEY_SHARES_KEY_ID is required'],
    [
      'the key id is malformed',
      { MASTER_KEY_SOURCE: 'shares', MASTER_KEY_SHARES_KEY_ID: 'abc' },
      'MASTER_KEY_SHARES_KEY_ID',
    ],
    [
      'MASTER_KEY is set beside it',
      {
        MASTER_KEY_SOURCE: 'shares',
        MASTER_KEY_SHARES_KEY_ID: 'local:AAAAAAAAAAAAAAAA',
        MASTER_KEY: key.toString('base64'),
      },
      'MASTER_KEY must not be set',
    ],
    ['the source is unknown', { MASTER_KEY_SOURCE: 'vault' }, 'MASTER_KEY_SOURCE must be one of'],
  ];
  for (const [name, env, message] of cases) {
    it(`when ${name}, then start-up stops naming it`, () => {
      expect(problemsOf({ ...production, ...env }).join('\n')).to.contain(message);
    });
  }

  it('when set with its key id, then production starts with no key material configured at all', () => {
    const config = loadConfig({ ...production, MASTER_KEY_SOURCE: 'shares', MASTER_KEY_SHARES_KEY_ID: keyId });
    expect(config.masterKey).to.deep.equal({ source: 'shares', keyId, shareFiles: [] });
  });

  it('when the service loads it, then it is sealed: wrap and unwrap answer VAULT_SEALED', async () => {
    const loaded = await loadMasterKey({ source: 'shares', keyId, shareFiles: [] });
    expect(loaded.source.readiness()).to.include({ ready: false, code: 'VAULT_SEALED' });
    await loaded.source.wrap(Buffer.alloc(32), 'aad').then(
      () => expect.fail('wrapped while sealed'),
      (error: { code?: string }) => expect(error.code).to.equal('VAULT_SEALED'),
    );
  });

  it('when the key CLI is given two share files, then it rebuilds the pinned key (any two)', async () => {
    for (const pair of [
      [files[0]!, files[1]!],
      [files[2]!, files[0]!],
    ]) {
      const loaded = await loadMasterKey({ source: 'shares', keyId, shareFiles: pair });
      expect(loaded.source.readiness()).to.deep.equal({ ready: true });
      const wrapped = await loaded.source.wrap(Buffer.alloc(32, 1), 'aad');
      expect(await new LocalMasterKey(key, 'k').unwrap(wrapped, 'aad')).to.deep.equal(Buffer.alloc(32, 1));
    }
  });

  it('when the key CLI ends, then a key rebuilt from share files (the current one and a previous one of a rotation out of shares) is wiped: the sources are sealed', async () => {
    const loaded = await loadMasterKey(
      { source: 'shares', keyId, shareFiles: [files[0]!, files[1]!] },
      [],
      [{ source: 'shares', keyId, shareFiles: [files[1]!, files[2]!] }],
    );
    const set = loaded.source as MasterKeySet;
    expect(set.readiness()).to.deep.equal({ ready: true });
    expect(set.previous[0]!.readiness()).to.deep.equal({ ready: true });
    await set.close();
    for (const source of [set.current, ...set.previous]) {
      expect(source.readiness()).to.include({ ready: false, code: 'VAULT_SEALED' });
    }
  });

  it('when the files are one share, shares of another key, readable by others or a symbolic link, then it is refused', async () => {
    const refusals: [readonly string[], string, string][] = [
      [[files[0]!], keyId, 'fewer than two'],
      [[files[0]!, files[1]!], new LocalMasterKey(randomBytes(32), 'other').keyId, 'do not rebuild'],
    ];
    const open = path.join(dir, 'open.json');
    fs.copyFileSync(files[1]!, open);
    fs.chmodSync(open, 0o644);
    refusals.push([[files[0]!, open], keyId, 'readable by others']);
    // A symbolic link (to a file anyone could swap or point elsewhere) is refused, whatever its target.
    const link = path.join(dir, 'link.json');
    fs.symlinkSync(files[1]!, link);
    refusals.push([[files[0]!, link], keyId, 'symbolic link']);
    for (const [shareFiles, id, message] of refusals) {
      await loadMasterKey({ source: 'shares', keyId: id, shareFiles }).then(
        () => expect.fail(`accepted: ${message}`),
        (error: Error) => expect(error.message).to.contain(message),
      );
    }
  });
});
