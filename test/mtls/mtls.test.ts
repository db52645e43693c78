import { expect } from 'chai';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import forge from 'node-forge';
import { createDatabase, type Database } from '../../src/db/database.js';
import { loadApiSpec } from '../../src/http/openapi.js';
import { generateCa } from '../../src/mtls/certificate-authority.js';
import { CLIENT_CERTIFICATE_SCOPES, ClientCertificateAuthority } from '../../src/mtls/client-certificates.js';
import { wrappingAad } from '../../src/keys/key-ring.js';
import { signToken } from '../support/auth.js';
import { createTestDatabase, testDbConfig, type TestDatabase } from '../support/database.js';
import { TEST_PANS } from '../support/pans.js';
import { keysFixture, OPERATOR, type KeysFixture } from '../keys/keys-context.js';
import {
  foreignClientCertificate,
  httpsCall,
  serverCredentials,
  startTlsInstance,
  tempDir,
  tlsEnv,
  type ClientIdentity,
  type ServerCredentials,
  type TlsInstance,
} from './support.js';

const PAN = TEST_PANS.visa[0];

describe('mutual TLS for card-data clients', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let secondDb: Database | undefined;
  let fx: KeysFixture;
  let dir: string;
  let server: ServerCredentials;
  let a: TlsInstance;
  let b: TlsInstance;
  const masterKeyBase64 = randomBytes(32).toString('base64');

  /** Issues a bundle with the CLI (password from a file) and returns it as a client identity. */
  async function issueBundle(client: string, scopes: string): Promise<{ identity: ClientIdentity; serial: string }> {
    const out = path.join(dir, `${client}.p12`);
    const passwordFile = path.join(dir, `${client}.password`);
    fs.writeFileSync(passwordFile, `pw-${randomBytes(12).toString('base64url')}\n`);
    const res = await fx.run(
      'mtls',
      'issue',
      '--client',
      client,
      '--scopes',
      scopes,
      '--days',
      '30',
      '--out',
      out,
      '--password-file',
      passwordFile,
    );
    expect(res.code, res.stderr).to.equal(0);
    const serial = /^([0-9A-F]{2}(?::[0-9A-F]{2}){15})\s/m.exec(res.stdout)?.[1];
    expect(serial).to.be.a('string');
    return {
      identity: { pfx: fs.readFileSync(out), passphrase: fs.readFileSync(passwordFile, 'utf8').trimEnd() },
      serial: serial as string,
    };
  }

  function tokenise(instance: TlsInstance, identity?: ClientIdentity, token?: string) {
    return httpsCall(instance.port, server.certPem, 'POST', '/v1/tokens', {
      ...(identity === undefined ? {} : { identity }),
      ...(token === undefined ? {} : { token }),
      json: { pan: PAN, expiryMonth: 12, expiryYear: 2030 },
    });
  }

  before(async () => {
    db = await createTestDatabase({ migrated: true });
    fx = await keysFixture(db, { masterKeyBase64 });
    dir = tempDir('lv-mtls-');
    server = serverCredentials(dir);
    const init = await fx.run('mtls', 'init-ca', '--out', path.join(dir, 'ca.pem'));
    expect(init.code, init.stderr).to.equal(0);
    a = await startTlsInstance(db, await tlsEnv(server, masterKeyBase64));
    // The second instance has its own connection pool where the database allows it (PostgreSQL), and
    // always its own caches.
    secondDb = db.url === undefined ? undefined : createDatabase(testDbConfig(db.url));
    b = await startTlsInstance(secondDb ?? db, await tlsEnv(server, masterKeyBase64));
  });

  after(async () => {
    await b?.close();
    await a?.close();
    await secondDb?.close();
    await db?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('when a till presents the PKCS#12 bundle issued by the CLI, then POST /v1/tokens tokenises and the issue is audited', async () => {
    const { identity, serial } = await issueBundle('till-001', 'tokens:write');
    const res = await tokenise(a, identity);
    expect(res.status, JSON.stringify(res.body)).to.equal(201);
    expect(res.body.token).to.match(/^tok_/);
    const row = await db.knex('mtls_client_certificates').where({ serial }).first();
    expect(row.client_name).to.equal('till-001');
    expect(row.key_source).to.equal('generated');
    const audit = await db
      .knex('audit_events')
      .where({ action: 'mtls.certificate.issued' })
      .orderBy('seq', 'desc')
      .first();
    expect(audit.actor).to.equal(OPERATOR.actor);
    expect(audit.resource).to.equal('mtls-client:till-001');
    expect(JSON.stringify(audit.details)).to.contain(serial);
  });

  it('when openssl is installed, then `openssl pkcs12 -info` parses the bundle (AES-256) and refuses a wrong password', async function () {
    if (spawnSync('openssl', ['version']).status !== 0) {
      this.skip(); // no openssl binary on this machine: the Node client test above still loads the bundle
    }
    const out = path.join(dir, 'till-openssl.p12');
    const passwordOut = path.join(dir, 'till-openssl.password');
    const res = await fx.run(
      'mtls',
      'issue',
      '--client',
      'till-openssl',
      '--scopes',
      'tokens:write',
      '--out',
      out,
      '--password-out',
      passwordOut,
    );
    expect(res.code, res.stderr).to.equal(0);
    const password = fs.readFileSync(passwordOut, 'utf8').trimEnd();
    expect(password).to.have.length.greaterThan(20);
    expect(res.stdout + res.stderr).to.not.contain(password);
    expect(
      (await db.knex('mtls_client_certificates').where({ client_name: 'till-openssl' }).first()).key_source,
    ).to.equal('generated');
    const info = spawnSync('openssl', ['pkcs12', '-info', '-noout', '-in', out, '-passin', `pass:${password}`], {
      encoding: 'utf8',
    });
    expect(info.status, info.stderr).to.equal(0);
    expect(info.stderr + info.stdout).to.contain('AES-256-CBC');
    const wrong = spawnSync('openssl', ['pkcs12', '-info', '-noout', '-in', out, '-passin', 'pass:not-the-password'], {
      encoding: 'utf8',
    });
    expect(wrong.status).to.not.equal(0);
    expect(fs.statSync(out).mode & 0o777).to.equal(0o600);
  });

  it('when curl is installed, then `curl --cert-type P12 --cert till.p12:<password>` tokenises, as docs/guides/gateway-integrator.md shows', async function () {
    if (spawnSync('curl', ['--version']).status !== 0) {
      this.skip(); // no curl binary on this machine
    }
    const out = path.join(dir, 'till-curl.p12');
    const passwordOut = path.join(dir, 'till-curl.password');
    const res = await fx.run(
      'mtls',
      'issue',
      '--client',
      'till-curl',
      '--scopes',
      'tokens:write',
      '--out',
      out,
      '--password-out',
      passwordOut,
    );
    expect(res.code, res.stderr).to.equal(0);
    const password = fs.readFileSync(passwordOut, 'utf8').trimEnd();
    const caFile = path.join(dir, 'server-ca.pem');
    fs.writeFileSync(caFile, server.certPem);
    const curl = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn('curl', [
        '--silent',
        '--show-error',
        '--cert-type',
        'P12',
        '--cert',
        `${out}:${password}`,
        '--cacert',
        caFile,
        '-H',
        'content-type: application/json',
        '-d',
        JSON.stringify({ pan: TEST_PANS.visa[1], expiryMonth: 1, expiryYear: 2031 }),
        `https://127.0.0.1:${a.port}/v1/tokens`,
      ]);
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('close', (status) => resolve({ status, stdout, stderr }));
    });
    expect(curl.status, curl.stderr).to.equal(0);
    expect(JSON.parse(curl.stdout)).to.include({ brand: 'visa', last4: '1881' });
  });

  it('when no certificate is presented on an mtls-required route, then 401 CLIENT_CERTIFICATE_REQUIRED, even with a valid bearer token', async () => {
    const token = await signToken({ scope: 'tokens:write' });
    const res = await tokenise(a, undefined, token);
    expect(res.status).to.equal(401);
    expect(res.body.code).to.equal('CLIENT_CERTIFICATE_REQUIRED');
    expect(res.headers['content-type']).to.match(/application\/problem\+json/);
  });

  it('when a self-signed certificate naming a known client is presented, then 401 CLIENT_CERTIFICATE_UNTRUSTED', async () => {
    const forged = foreignClientCertificate('till-001');
    const res = await tokenise(a, { keyPem: forged.keyPem, certPem: forged.certPem });
    expect(res.status).to.equal(401);
    expect(res.body.code).to.equal('CLIENT_CERTIFICATE_UNTRUSTED');
  });

  it('when a certificate from another CA (even one named like ours) is presented, then 401 CLIENT_CERTIFICATE_UNTRUSTED', async () => {
    const other = generateCa(1, 30);
    const otherKeyPem = `-----BEGIN PRIVATE KEY-----\n${other.privateKeyDer.toString('base64').replace(/(.{64})/g, '$1\n')}\n-----END PRIVATE KEY-----\n`;
    const forged = foreignClientCertificate('till-001', { certPem: other.certificatePem, keyPem: otherKeyPem });
    const res = await tokenise(a, { keyPem: forged.keyPem, certPem: forged.certPem });
    expect(res.status).to.equal(401);
    expect(res.body.code).to.equal('CLIENT_CERTIFICATE_UNTRUSTED');
  });

  it('when an expired certificate of our CA is presented, then 401 CLIENT_CERTIFICATE_EXPIRED', async () => {
    const ca = new ClientCertificateAuthority({
      knex: db.knex,
      masterKey: fx.masterKey,
      actor: OPERATOR,
      cryptoperiodDays: 730,
    });
    const issued = await ca.issue({
      client: 'till-expired',
      scopes: ['tokens:write'],
      days: 1,
      password: 'expired-bundle-password',
      notBefore: new Date(Date.now() - 3 * 86_400_000),
    });
    const res = await tokenise(a, { pfx: issued.pkcs12 as Buffer, passphrase: 'expired-bundle-password' });
    expect(res.status).to.equal(401);
    expect(res.body.code).to.equal('CLIENT_CERTIFICATE_EXPIRED');
  });

  it('when a certificate lacks the scope of an operation, then 403 INSUFFICIENT_SCOPE; with it, the call succeeds', async () => {
    const gateway = await issueBundle('platform-gateway', 'webhooks:platform');
    const refused = await tokenise(a, gateway.identity);
    expect(refused.status).to.equal(403);
    expect(refused.body.code).to.equal('INSUFFICIENT_SCOPE');

    const till = await issueBundle('till-scoped', 'tokens:write');
    expect((await tokenise(a, till.identity)).status).to.be.oneOf([200, 201]);
  });

  it('when a PAN is revealed in mtls-required mode, then only a bearer token with tokens:detokenise does it; a certificate is not an authentication there', async () => {
    const till = await issueBundle('till-reveal', 'tokens:write');
    const created = await tokenise(a, till.identity);
    expect(created.status).to.be.oneOf([200, 201]);
    const detokenise = (options: { identity?: ClientIdentity; token?: string }) =>
      httpsCall(a.port, server.certPem, 'POST', `/v1/tokens/${created.body.token as string}/detokenise`, {
        ...options,
        json: { reason: 'chargeback evidence for the acquirer' },
      });
    const byCertificate = await detokenise({ identity: till.identity });
    expect(byCertificate.status).to.equal(401);
    expect(byCertificate.body.code).to.equal('TOKEN_MISSING');

    const token = await signToken({ subject: 'chargeback-desk', scope: 'tokens:detokenise' });
    const revealed = await detokenise({ token });
    expect(revealed.status, JSON.stringify(revealed.body)).to.equal(200);
    expect(revealed.body.pan).to.equal(PAN);
    const audit = await db.knex('audit_events').where({ action: 'card.detokenise' }).orderBy('seq', 'desc').first();
    expect(audit.actor).to.equal('chargeback-desk');
  });

  it('when a certificate is revoked while the service runs, then both instances refuse it promptly with 401 CLIENT_CERTIFICATE_REVOKED', async () => {
    const { identity, serial } = await issueBundle('till-stolen', 'tokens:write');
    expect((await tokenise(a, identity)).status).to.be.oneOf([200, 201]);
    expect((await tokenise(b, identity)).status).to.be.oneOf([200, 201]);
    const revoked = await fx.run('mtls', 'revoke', serial, '--reason', 'till reported stolen');
    expect(revoked.code, revoked.stderr).to.equal(0);
    const started = Date.now();
    let codes: [string, string] = ['', ''];
    // MTLS_REVOCATION_CHECK_MS is 200 in these instances: well within two seconds on a loaded machine.
    while (Date.now() - started < 2_000) {
      const [ra, rb] = await Promise.all([tokenise(a, identity), tokenise(b, identity)]);
      codes = [ra.body.code as string, rb.body.code as string];
      if (codes[0] === 'CLIENT_CERTIFICATE_REVOKED' && codes[1] === 'CLIENT_CERTIFICATE_REVOKED') break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(codes).to.deep.equal(['CLIENT_CERTIFICATE_REVOKED', 'CLIENT_CERTIFICATE_REVOKED']);
    const audit = await db
      .knex('audit_events')
      .where({ action: 'mtls.certificate.revoked' })
      .orderBy('seq', 'desc')
      .first();
    expect(audit.actor).to.equal(OPERATOR.actor);
    expect(JSON.stringify(audit.details)).to.contain(serial).and.contain('till reported stolen');
    const listed = await fx.run('mtls', 'list', '--all');
    expect(listed.stdout).to.match(new RegExp(`${serial}\\s+till-stolen.*REVOKED`));
    expect((await fx.run('mtls', 'list')).stdout).to.not.contain(serial);
  });

  it('when a device sends a CSR, then the CLI signs it, the device key never reaches the service, and the device can call', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const keyPem = privateKey.export({ format: 'pem', type: 'pkcs1' }).toString();
    const csr = forge.pki.createCertificationRequest();
    csr.publicKey = forge.pki.publicKeyFromPem(publicKey.export({ format: 'pem', type: 'spki' }).toString());
    csr.setSubject([{ name: 'commonName', value: 'whatever-the-device-claims' }]);
    csr.sign(forge.pki.privateKeyFromPem(keyPem), forge.md.sha256.create());
    const csrFile = path.join(dir, 'checkout.csr.pem');
    fs.writeFileSync(csrFile, forge.pki.certificationRequestToPem(csr));
    const out = path.join(dir, 'checkout.pem');
    const res = await fx.run(
      'mtls',
      'issue',
      '--client',
      'checkout-eu',
      '--scopes',
      'tokens:write',
      '--csr',
      csrFile,
      '--out',
      out,
    );
    expect(res.code, res.stderr).to.equal(0);
    const written = fs.readFileSync(out, 'utf8');
    expect(written).to.not.contain('PRIVATE KEY');
    const certPem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(written)?.[0] as string;
    expect(new (await import('node:crypto')).X509Certificate(certPem).subject).to.contain('CN=checkout-eu');
    const call = await tokenise(a, { keyPem, certPem: written });
    expect(call.status, JSON.stringify(call.body)).to.be.oneOf([200, 201]);
    const row = await db.knex('mtls_client_certificates').where({ client_name: 'checkout-eu' }).first();
    expect(row.key_source).to.equal('csr');
    const dump = await databaseText(db);
    const keyDer = privateKey.export({ format: 'der', type: 'pkcs1' });
    expect(dump).to.not.contain(keyDer.subarray(100, 148).toString('base64'));
  });

  it('when a CSR is not RSA or not signed by its key, then the issue is refused with CLIENT_CERTIFICATE_REQUEST_INVALID and audited', async () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const csrFile = path.join(dir, 'ec.csr.pem');
    const made = spawnSync('openssl', ['req', '-new', '-key', '/dev/stdin', '-subj', '/CN=ec', '-out', csrFile], {
      input: ec.privateKey.export({ format: 'pem', type: 'pkcs8' }),
    });
    if (made.status !== 0)
      fs.writeFileSync(csrFile, '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n');
    const res = await fx.run(
      'mtls',
      'issue',
      '--client',
      'ec-device',
      '--scopes',
      'tokens:write',
      '--csr',
      csrFile,
      '--out',
      path.join(dir, 'ec.pem'),
    );
    expect(res.code).to.equal(1);
    expect(res.stderr).to.contain('CLIENT_CERTIFICATE_REQUEST_INVALID');
    const denied = await db
      .knex('audit_events')
      .where({ action: 'mtls.certificate.issued', outcome: 'denied' })
      .first();
    expect(denied).to.not.equal(undefined);
  });

  it('when the issue request is malformed, then it is refused before anything is signed', async () => {
    const cases: [string[], string][] = [
      [['--client', 'till 1', '--scopes', 'tokens:write'], 'CLIENT_CERTIFICATE_REQUEST_INVALID'],
      [['--client', 'till-4111111111111111', '--scopes', 'tokens:write'], 'CLIENT_CERTIFICATE_REQUEST_INVALID'],
      [['--client', 'till-2', '--scopes', 'loyalty:admin'], 'CLIENT_CERTIFICATE_REQUEST_INVALID'],
      // Revealing PANs needs dual control, which certificates do not offer.
      [['--client', 'gateway', '--scopes', 'tokens:detokenise'], 'CLIENT_CERTIFICATE_SCOPE_REFUSED'],
      [['--client', 'gateway', '--scopes', 'tokens:write,tokens:detokenise'], 'CLIENT_CERTIFICATE_SCOPE_REFUSED'],
      [['--client', 'till-2', '--scopes', 'tokens:write', '--days', '398'], 'CLIENT_CERTIFICATE_REQUEST_INVALID'],
    ];
    const before = Number((await db.knex('mtls_client_certificates').count({ n: '*' }).first())?.n);
    for (const [args, code] of cases) {
      const bad = path.join(dir, `bad-${randomBytes(4).toString('hex')}`);
      const res = await fx.run('mtls', 'issue', ...args, '--out', `${bad}.p12`, '--password-out', `${bad}.password`);
      expect(res.code, args.join(' ')).to.equal(1);
      expect(res.stderr).to.contain(code);
    }
    // A certificate that would outlive the CA's own certificate (a CA kept past its cryptoperiod).
    const ca = new ClientCertificateAuthority({
      knex: db.knex,
      masterKey: fx.masterKey,
      actor: OPERATOR,
      cryptoperiodDays: 730,
    });
    const outliving = await ca
      .issue({
        client: 'till-late',
        scopes: ['tokens:write'],
        days: 397,
        password: 'a-long-enough-password',
        notBefore: new Date(Date.now() + 800 * 86_400_000),
      })
      .then(
        () => 'issued',
        (error: { code?: string }) => error.code,
      );
    expect(outliving).to.equal('CLIENT_CERTIFICATE_REQUEST_INVALID');
    expect(Number((await db.knex('mtls_client_certificates').count({ n: '*' }).first())?.n)).to.equal(before);
  });

  it('when the client CA exists, then init-ca is refused and the CA appears in the key inventory with its cryptoperiod', async () => {
    const again = await fx.run('mtls', 'init-ca');
    expect(again.code).to.equal(1);
    expect(again.stderr).to.contain('KEY_OPERATION_INVALID');
    const list = JSON.parse((await fx.run('list', '--json')).stdout) as Record<string, unknown>[];
    const ca = list.find((k) => k['purpose'] === 'mtls-client-ca');
    expect(ca).to.include({ version: 1, state: 'active', strengthBits: 128, cryptoperiodDays: 730 });
    expect(ca?.['algorithm']).to.match(/^RSA-3072/);
    expect((ca?.['rows'] as Record<string, number>)['mtls_client_certificates.live']).to.be.greaterThan(0);
  });

  it("when the client CA is rotated without two custodians' approvals, then it is refused with DUAL_CONTROL_REQUIRED and audited", async () => {
    const res = await fx.run('rotate', '--purpose', 'mtls-client-ca', '--apply');
    expect(res.code).to.equal(1);
    expect(res.stderr).to.contain('DUAL_CONTROL_REQUIRED');
    expect(await db.knex('data_keys').where({ purpose: 'mtls-client-ca' }).pluck('version')).to.deep.equal([1]);
    const denied = await db
      .knex('audit_events')
      .where({ action: 'key.rotate', outcome: 'denied' })
      .orderBy('seq', 'desc')
      .first();
    expect(denied.resource).to.equal('key:mtls-client-ca:v2');
  });

  it('when the whole database is read as text, then the CA private key appears nowhere unwrapped (PEM, DER base64, hex)', async () => {
    const row = await db.knex('data_keys').where({ purpose: 'mtls-client-ca', version: 1 }).first();
    const der = await fx.masterKey.unwrap(row.wrapped_key as Buffer, wrappingAad('mtls-client-ca', 1));
    expect(der.length).to.be.greaterThan(1500);
    const dump = await databaseText(db);
    expect(dump.length).to.be.greaterThan(10_000);
    const b64 = der.toString('base64');
    // Chunks from the middle of the key (the modulus, primes and exponents), in every encoding.
    for (const offset of [200, 600, 1200]) {
      const slice = der.subarray(offset, offset + 48);
      expect(dump).to.not.contain(slice.toString('base64'));
      expect(dump).to.not.contain(slice.toString('base64url'));
      expect(dump).to.not.contain(slice.toString('hex'));
    }
    expect(dump).to.not.contain(b64.slice(64, 128));
    expect(dump).to.not.contain('PRIVATE KEY');
    // The public certificate is stored in clear, as it should be: the scan does see data_keys.
    expect(dump).to.contain('BEGIN CERTIFICATE');
  });

  it('the scopes a certificate may carry are exactly those of the clientCertificate requirements in openapi.yaml', () => {
    const documented = new Set(
      loadApiSpec().operations.flatMap((op) =>
        op.security.filter((s) => s.scheme === 'clientCertificate').flatMap((s) => s.scopes),
      ),
    );
    expect([...documented].sort()).to.deep.equal([...CLIENT_CERTIFICATE_SCOPES].sort());
  });
});

/** Every row of every table of the test database, as PostgreSQL's text form of the row. */
async function databaseText(db: TestDatabase): Promise<string> {
  const tables = (await db.knex.raw(
    `select table_name from information_schema.tables where table_schema = current_schema() and table_type = 'BASE TABLE'`,
  )) as { rows: { table_name: string }[] };
  const parts: string[] = [];
  for (const { table_name: table } of tables.rows) {
    const rows = (await db.knex.raw(`select t::text as row from "${table}" t`)) as { rows: { row: string }[] };
    for (const r of rows.rows) parts.push(r.row);
  }
  return parts.join('\n');
}
