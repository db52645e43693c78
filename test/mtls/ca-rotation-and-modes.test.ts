import { expect } from 'chai';
import fs from 'node:fs';
import path from 'node:path';
import { createPrivateKey, randomBytes } from 'node:crypto';
import { ConfigError, loadConfig } from '../../src/config/config.js';
import { generateCa } from '../../src/mtls/certificate-authority.js';
import { signToken } from '../support/auth.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { TEST_PANS } from '../support/pans.js';
import { paymentId, platformEvent, platformHeaders } from '../support/webhooks.js';
import { keysFixture, type KeysFixture } from '../keys/keys-context.js';
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

describe('mTLS: CA rotation, authentication modes and configuration', function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let fx: KeysFixture;
  let dir: string;
  let server: ServerCredentials;
  const instances: TlsInstance[] = [];
  const masterKeyBase64 = randomBytes(32).toString('base64');

  async function issueBundle(client: string, scopes: string): Promise<{ identity: ClientIdentity; serial: string }> {
    const out = path.join(dir, `${client}-${randomBytes(3).toString('hex')}.p12`);
    const passwordOut = `${out}.password`;
    const res = await fx.run(
      'mtls',
      'issue',
      '--client',
      client,
      '--scopes',
      scopes,
      '--days',
      '10',
      '--out',
      out,
      '--password-out',
      passwordOut,
    );
    expect(res.code, res.stderr).to.equal(0);
    return {
      identity: { pfx: fs.readFileSync(out), passphrase: fs.readFileSync(passwordOut, 'utf8').trimEnd() },
      serial: /^([0-9A-F]{2}(?::[0-9A-F]{2}){15})\s/m.exec(res.stdout)?.[1] as string,
    };
  }

  async function start(mode: string): Promise<TlsInstance> {
    const instance = await startTlsInstance(db, await tlsEnv(server, masterKeyBase64, { CARD_ROUTES_AUTH: mode }));
    instances.push(instance);
    return instance;
  }

  const tokenise = (instance: TlsInstance, options: { identity?: ClientIdentity; token?: string }) =>
    httpsCall(instance.port, server.certPem, 'POST', '/v1/tokens', {
      ...options,
      json: { pan: TEST_PANS.mastercard[0] },
    });

  before(async () => {
    db = await createTestDatabase({ migrated: true });
    // Single-operator (development) mode: the rotation's dual control is covered by test/keys.
    fx = await keysFixture(db, { masterKeyBase64, policy: { singleOperator: true } });
    dir = tempDir('lv-mtls-rotation-');
    server = serverCredentials(dir);
    expect((await fx.run('mtls', 'init-ca')).code).to.equal(0);
  });

  after(async () => {
    for (const instance of instances) await instance.close();
    await db?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  describe('CARD_ROUTES_AUTH', () => {
    it('when mtls-or-jwt, then a bearer token without a certificate works, a certificate works, and a revoked certificate is refused even with a valid token', async () => {
      const svc = await start('mtls-or-jwt');
      const token = await signToken({ scope: 'tokens:write' });
      expect((await tokenise(svc, { token })).status).to.be.oneOf([200, 201]);
      const till = await issueBundle('till-either', 'tokens:write');
      expect((await tokenise(svc, { identity: till.identity })).status).to.be.oneOf([200, 201]);
      expect((await fx.run('mtls', 'revoke', till.serial, '--reason', 'replaced')).code).to.equal(0);
      await new Promise((resolve) => setTimeout(resolve, 400));
      const res = await tokenise(svc, { identity: till.identity, token });
      expect(res.status).to.equal(401);
      expect(res.body.code).to.equal('CLIENT_CERTIFICATE_REVOKED');
    });

    it('when jwt, then the HTTPS listener ignores certificates and asks for a bearer token', async () => {
      const svc = await start('jwt');
      const till = await issueBundle('till-jwt', 'tokens:write');
      const res = await tokenise(svc, { identity: till.identity });
      expect(res.status).to.equal(401);
      expect(res.body.code).to.equal('TOKEN_MISSING');
    });

    it('when mtls-required, then the platform webhook needs a certificate with webhooks:platform and still its signature', async () => {
      const svc = await start('mtls-required');
      const body = JSON.stringify(platformEvent({ paymentId: paymentId() }));
      const post = (identity?: ClientIdentity, headers: Record<string, string> = platformHeaders(body)) =>
        httpsCall(svc.port, server.certPem, 'POST', '/v1/webhooks/platform', {
          ...(identity === undefined ? {} : { identity }),
          body,
          headers,
        });
      expect((await post()).body.code).to.equal('CLIENT_CERTIFICATE_REQUIRED');
      const till = await issueBundle('till-not-gateway', 'tokens:write');
      const wrongScope = await post(till.identity);
      expect(wrongScope.status).to.equal(403);
      expect(wrongScope.body.code).to.equal('INSUFFICIENT_SCOPE');
      const gateway = await issueBundle('platform-gateway', 'webhooks:platform');
      const unsigned = await post(gateway.identity, { 'content-type': 'application/json' });
      expect(unsigned.status).to.equal(401);
      expect(unsigned.body.code).to.equal('WEBHOOK_SIGNATURE_MISSING');
      const accepted = await post(gateway.identity);
      expect(accepted.status, JSON.stringify(accepted.body)).to.equal(200);
    });

    it('when a certificate is presented on an operation that takes no certificate, then it is not an authentication', async () => {
      const svc = await start('mtls-required');
      const till = await issueBundle('till-whoami', 'tokens:write');
      const res = await httpsCall(svc.port, server.certPem, 'GET', '/v1/whoami', { identity: till.identity });
      expect(res.status).to.equal(401);
      expect(res.body.code).to.equal('TOKEN_MISSING');
    });
  });

  describe('client CA rotation', () => {
    it('when the CA is rotated, then certificates of both versions are accepted; the old version retires only once none of its certificates is in force, and is then no longer trusted', async () => {
      const svc = await start('mtls-required');
      const old = await issueBundle('till-old-ca', 'tokens:write');
      expect((await tokenise(svc, { identity: old.identity })).status).to.be.oneOf([200, 201]);

      const rotated = await fx.run('rotate', '--purpose', 'mtls-client-ca', '--apply');
      expect(rotated.code, rotated.stderr).to.equal(0);
      expect(rotated.stdout).to.contain('reissue each client certificate under v2');
      const fresh = await issueBundle('till-new-ca', 'tokens:write');
      const record = await db.knex('mtls_client_certificates').where({ serial: fresh.serial }).first();
      expect(record.ca_version).to.equal(2);
      await new Promise((resolve) => setTimeout(resolve, 400));
      expect((await tokenise(svc, { identity: fresh.identity })).status).to.be.oneOf([200, 201]);
      expect((await tokenise(svc, { identity: old.identity })).status).to.be.oneOf([200, 201]);

      expect((await fx.run('reencrypt', '--purpose', 'mtls-client-ca')).code).to.equal(2);
      const refused = await fx.run('retire', '--purpose', 'mtls-client-ca', '--version', '1', '--apply');
      expect(refused.code).to.equal(1);
      expect(refused.stderr).to.contain('KEY_VERSION_IN_USE');

      // Every certificate of v1 revoked (the tills now hold v2 ones): v1 can retire.
      for (const r of await db.knex('mtls_client_certificates').where({ ca_version: 1 }).whereNull('revoked_at')) {
        expect((await fx.run('mtls', 'revoke', r.serial as string, '--reason', 'CA rotation')).code).to.equal(0);
      }
      const retired = await fx.run('retire', '--purpose', 'mtls-client-ca', '--version', '1', '--apply');
      expect(retired.code, retired.stderr).to.equal(0);
      await new Promise((resolve) => setTimeout(resolve, 400));
      const oldNow = await tokenise(svc, { identity: old.identity });
      expect(oldNow.status).to.equal(401);
      expect(oldNow.body.code).to.equal('CLIENT_CERTIFICATE_UNTRUSTED');
      expect((await tokenise(svc, { identity: fresh.identity })).status).to.be.oneOf([200, 201]);
    });
  });

  describe('external client CA (TLS_CLIENT_CA)', () => {
    it('when a certificate of the external CA is presented, then it is refused until registered with its client and scopes, then accepted', async () => {
      const external = generateCa(1, 30);
      const externalKeyPem = createPrivateKey({ key: external.privateKeyDer, format: 'der', type: 'pkcs8' })
        .export({ format: 'pem', type: 'pkcs8' })
        .toString();
      const caFile = path.join(dir, 'external-ca.pem');
      fs.writeFileSync(caFile, external.certificatePem);
      const svc = await startTlsInstance(
        db,
        await tlsEnv(server, masterKeyBase64, { CARD_ROUTES_AUTH: 'mtls-required', TLS_CLIENT_CA: caFile }),
      );
      instances.push(svc);
      const device = foreignClientCertificate('kiosk-7', { certPem: external.certificatePem, keyPem: externalKeyPem });
      const identity = { keyPem: device.keyPem, certPem: device.certPem };
      const before = await tokenise(svc, { identity });
      expect(before.status).to.equal(401);
      expect(before.body.code).to.equal('CLIENT_CERTIFICATE_UNTRUSTED');

      const certFile = path.join(dir, 'kiosk-7.pem');
      fs.writeFileSync(certFile, device.certPem);
      const register = ['mtls', 'register', '--cert', certFile, '--client', 'kiosk-7', '--scopes', 'tokens:write'];
      expect((await fx.run(...register)).code, 'without TLS_CLIENT_CA the CLI cannot check the issuer').to.equal(2);
      const withCa = await keysFixture(db, { masterKeyBase64, externalClientCaPem: external.certificatePem });
      const selfSigned = foreignClientCertificate('kiosk-8');
      fs.writeFileSync(path.join(dir, 'kiosk-8.pem'), selfSigned.certPem);
      const refused = await withCa.run(
        'mtls',
        'register',
        '--cert',
        path.join(dir, 'kiosk-8.pem'),
        '--client',
        'kiosk-8',
        '--scopes',
        'tokens:write',
      );
      expect(refused.code).to.equal(1);
      expect(refused.stderr).to.contain('CLIENT_CERTIFICATE_REQUEST_INVALID');
      const registered = await withCa.run(...register);
      expect(registered.code, registered.stderr).to.equal(0);
      const row = await db.knex('mtls_client_certificates').where({ client_name: 'kiosk-7' }).first();
      expect(row).to.include({ key_source: 'external', ca_version: null });

      await new Promise((resolve) => setTimeout(resolve, 400));
      const after = await tokenise(svc, { identity });
      expect(after.status, JSON.stringify(after.body)).to.be.oneOf([200, 201]);
      // Not trusted by an instance without TLS_CLIENT_CA, record or not.
      const other = await start('mtls-required');
      expect((await tokenise(other, { identity })).body.code).to.equal('CLIENT_CERTIFICATE_UNTRUSTED');
    });
  });

  describe('configuration', () => {
    const base = { NODE_ENV: 'test', MASTER_KEY: randomBytes(32).toString('base64') };
    const problems = (env: Record<string, string>): string => {
      try {
        loadConfig(env);
        return '';
      } catch (error) {
        if (error instanceof ConfigError) return error.problems.join('\n');
        throw error;
      }
    };

    it('when an mtls mode is set without the HTTPS listener, then start-up is refused naming CARD_ROUTES_AUTH', () => {
      expect(problems({ ...base, CARD_ROUTES_AUTH: 'mtls-required' })).to.contain(
        'CARD_ROUTES_AUTH=mtls-required needs',
      );
      expect(problems({ ...base, CARD_ROUTES_AUTH: 'certificates' })).to.contain('CARD_ROUTES_AUTH must be one of');
    });

    it('when TLS_PORT is set without a server certificate, or TLS files without TLS_PORT, then start-up is refused', () => {
      expect(problems({ ...base, TLS_PORT: '8443' })).to.contain('TLS_PORT needs TLS_CERT_FILE and TLS_KEY_FILE');
      expect(problems({ ...base, TLS_CLIENT_CA: '/x/ca.pem' })).to.contain('need TLS_PORT');
    });

    it('when nothing is set, then card routes use bearer tokens; in production with TLS_PORT, certificates are required', () => {
      expect(loadConfig(base).tls.cardRoutesAuth).to.equal('jwt');
      const tls = { TLS_PORT: '8443', TLS_CERT_FILE: '/x/cert.pem', TLS_KEY_FILE: '/x/key.pem' };
      expect(loadConfig({ ...base, ...tls }).tls.cardRoutesAuth).to.equal('jwt');
      const production = {
        ...base,
        ...tls,
        NODE_ENV: 'production',
        MASTER_KEY_ENV_ALLOWED: 'true',
        DATABASE_URL: 'postgres://db.example/lv',
        AUTH_PUBLIC_KEYS: JSON.stringify({ keys: [{ kty: 'EC', crv: 'P-256', x: 'x', y: 'y' }] }),
        AUTH_ISSUER: 'https://idp.example/',
        AUTH_AUDIENCE: 'lv',
        WEBHOOK_PLATFORM_SECRETS: `whsec_${randomBytes(24).toString('base64')}`,
      };
      expect(problems(production)).to.equal('');
      expect(loadConfig(production).tls.cardRoutesAuth).to.equal('mtls-required');
    });
  });
});
