/**
 * Issue 17: a PKCS#12 bundle's password never reaches stdout. `keys mtls issue` writes a generated
 * password to a new file of mode 0600 (`--password-out`) or reads it from one (`--password-file`).
 */
import { expect } from 'chai';
import fs from 'node:fs';
import path from 'node:path';
import { createSecureContext } from 'node:tls';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { keysFixture, type KeysFixture } from '../keys/keys-context.js';
import { tempDir } from './support.js';

describe('keys mtls issue: the bundle password goes to a file, never to stdout', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let fx: KeysFixture;
  let dir: string;

  const certificates = async () =>
    Number(((await db.knex('mtls_client_certificates').count({ n: '*' }).first()) as { n: string | number }).n);

  before(async () => {
    db = await createTestDatabase({ migrated: true });
    fx = await keysFixture(db);
    dir = tempDir('lv-mtls-password-');
    expect((await fx.run('mtls', 'init-ca')).code).to.equal(0);
  });
  after(async () => {
    await db?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('when --password-out names a new file, then the password is written there with mode 0600, opens the bundle, and appears in no output', async () => {
    const out = path.join(dir, 'till-1.p12');
    const passwordOut = path.join(dir, 'till-1.password');
    const res = await fx.run(
      'mtls',
      'issue',
      '--client',
      'till-1',
      '--scopes',
      'tokens:write',
      '--out',
      out,
      '--password-out',
      passwordOut,
    );
    expect(res.code, res.stderr).to.equal(0);
    expect(fs.statSync(passwordOut).mode & 0o777).to.equal(0o600);
    expect(fs.statSync(out).mode & 0o777).to.equal(0o600);
    const password = fs.readFileSync(passwordOut, 'utf8').trimEnd();
    expect(password).to.match(/^[A-Za-z0-9_-]{32}$/);
    expect(res.stdout + res.stderr).to.not.contain(password);
    expect(res.stdout).to.contain(passwordOut);
    // The bundle opens with it, and not without it.
    expect(() => createSecureContext({ pfx: fs.readFileSync(out), passphrase: password })).to.not.throw();
    expect(() => createSecureContext({ pfx: fs.readFileSync(out), passphrase: 'not-the-password' })).to.throw();
  });

  it('when --password-file is given, then its password seals the bundle and nothing is printed of it', async () => {
    const out = path.join(dir, 'till-2.p12');
    const passwordFile = path.join(dir, 'till-2.password');
    fs.writeFileSync(passwordFile, 'a-password-chosen-by-the-installer\n', { mode: 0o600 });
    const res = await fx.run(
      'mtls',
      'issue',
      '--client',
      'till-2',
      '--scopes',
      'tokens:write',
      '--out',
      out,
      '--password-file',
      passwordFile,
    );
    expect(res.code, res.stderr).to.equal(0);
    expect(res.stdout + res.stderr).to.not.contain('a-password-chosen-by-the-installer');
    expect(() =>
      createSecureContext({ pfx: fs.readFileSync(out), passphrase: 'a-password-chosen-by-the-installer' }),
    ).to.not.throw();
  });

  it('when the password file exists, or neither or both options are given, or a CSR is given with one, then the issue is refused before anything is signed or written', async () => {
    const existing = path.join(dir, 'existing.password');
    fs.writeFileSync(existing, 'an earlier bundle password\n', { mode: 0o600 });
    const csr = path.join(dir, 'request.pem');
    fs.writeFileSync(csr, '-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n');
    const base = ['mtls', 'issue', '--client', 'till-3', '--scopes', 'tokens:write'];
    const refusals: [string, string[]][] = [
      ['existing --password-out', ['--out', path.join(dir, 'a.p12'), '--password-out', existing]],
      ['neither option', ['--out', path.join(dir, 'b.p12')]],
      [
        'both options',
        ['--out', path.join(dir, 'c.p12'), '--password-out', path.join(dir, 'c.password'), '--password-file', existing],
      ],
      [
        'CSR with --password-out',
        ['--out', path.join(dir, 'd.pem'), '--csr', csr, '--password-out', path.join(dir, 'd.pw')],
      ],
    ];
    const before = await certificates();
    for (const [name, args] of refusals) {
      const res = await fx.run(...base, ...args);
      expect(res.code, name).to.equal(2);
      expect(res.stdout, name).to.equal('');
    }
    expect(fs.readFileSync(existing, 'utf8')).to.equal('an earlier bundle password\n');
    expect(fs.readdirSync(dir).filter((f) => /^[a-d]\./.test(f))).to.deep.equal([]);
    expect(await certificates()).to.equal(before);
  });
});
