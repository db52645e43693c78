/**
 * mTLS test wiring: a server certificate for 127.0.0.1, service instances listening with the real
 * HTTPS listener on port 0, and an HTTPS client that presents a PKCS#12 bundle or a key and
 * certificate (Node's https client, i.e. OpenSSL, like curl --cert-type P12).
 */
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import forge from 'node-forge';
import { loadConfig, type Env } from '../../src/config/config.js';
import { randomSerialHex } from '../../src/mtls/certificate-authority.js';
import { buildService, type Service } from '../../src/service.js';
import { createTlsServer, readTlsCredentials } from '../../src/http/tls-listener.js';
import type { Database } from '../../src/db/database.js';
import { captureLogs } from '../support/log-capture.js';
import { testEnv } from '../support/harness.js';

export interface ServerCredentials {
  readonly certFile: string;
  readonly keyFile: string;
  readonly certPem: string;
}

/** A self-signed server certificate for 127.0.0.1 (serverAuth), written into `dir`. */
export function serverCredentials(dir: string): ServerCredentials {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicKey.export({ format: 'pem', type: 'spki' }).toString());
  cert.serialNumber = `01${randomBytes(8).toString('hex')}`;
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + 86_400_000);
  const name = [{ name: 'commonName', value: '127.0.0.1' }];
  cert.setSubject(name);
  cert.setIssuer(name);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: [{ type: 7, ip: '127.0.0.1' }] },
  ]);
  const keyPem = privateKey.export({ format: 'pem', type: 'pkcs1' }).toString();
  cert.sign(forge.pki.privateKeyFromPem(keyPem), forge.md.sha256.create());
  const certPem = forge.pki.certificateToPem(cert);
  const certFile = path.join(dir, 'server.pem');
  const keyFile = path.join(dir, 'server-key.pem');
  fs.writeFileSync(certFile, certPem);
  fs.writeFileSync(keyFile, keyPem, { mode: 0o600 });
  return { certFile, keyFile, certPem };
}

/**
 * A self-signed client certificate, or one signed by `issuer` (another CA), with the clientAuth EKU:
 * what an attacker could make. Returns PEM key and certificate.
 */
export function foreignClientCertificate(
  client: string,
  issuer?: { certPem: string; keyPem: string },
): { keyPem: string; certPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyPem = privateKey.export({ format: 'pem', type: 'pkcs1' }).toString();
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicKey.export({ format: 'pem', type: 'spki' }).toString());
  // As the service's CA draws them: a random serial reads as card data about once in 250, and
  // registration refuses those (a test registering this certificate would fail now and then).
  cert.serialNumber = randomSerialHex();
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + 86_400_000);
  const subject = [
    { name: 'organizationName', value: 'loyalty-vault' },
    { name: 'organizationalUnitName', value: 'card-data clients' },
    { name: 'commonName', value: client },
  ];
  cert.setSubject(subject);
  cert.setIssuer(issuer === undefined ? subject : forge.pki.certificateFromPem(issuer.certPem).subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
    { name: 'extKeyUsage', clientAuth: true },
  ]);
  cert.sign(forge.pki.privateKeyFromPem(issuer?.keyPem ?? keyPem), forge.md.sha256.create());
  return { keyPem, certPem: forge.pki.certificateToPem(cert) };
}

export interface TlsInstance {
  readonly port: number;
  readonly service: Service;
  logs(): string;
  close(): Promise<void>;
}

/** A service instance on `database` with the HTTPS listener on an ephemeral port of 127.0.0.1. */
export async function startTlsInstance(database: Database, env: Env): Promise<TlsInstance> {
  const config = loadConfig(env);
  const captured = captureLogs();
  const service = await buildService(config, { logger: captured.logger, database, enforceResponseContract: true });
  const server = createTlsServer(service.app, readTlsCredentials(config.tls));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    service,
    logs: () => captured.text(),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await service.close();
    },
  };
}

export async function tlsEnv(server: ServerCredentials, masterKeyBase64: string, extra: Env = {}): Promise<Env> {
  return testEnv({
    MASTER_KEY: masterKeyBase64,
    TLS_PORT: '0',
    TLS_CERT_FILE: server.certFile,
    TLS_KEY_FILE: server.keyFile,
    CARD_ROUTES_AUTH: 'mtls-required',
    MTLS_REVOCATION_CHECK_MS: '200',
    DETOKENISE_ENABLED: 'true',
    ...extra,
  });
}

export interface ClientIdentity {
  readonly pfx?: Buffer;
  readonly passphrase?: string;
  readonly keyPem?: string;
  readonly certPem?: string;
}

export interface HttpsResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** One request on a fresh connection (no session reuse between identities). */
export function httpsCall(
  port: number,
  serverCertPem: string,
  method: string,
  p: string,
  options: {
    identity?: ClientIdentity;
    json?: unknown;
    token?: string;
    /** A raw body (signed webhooks) and its headers. */
    body?: string;
    headers?: Record<string, string>;
  } = {},
): Promise<HttpsResponse> {
  const body = options.body ?? (options.json === undefined ? undefined : JSON.stringify(options.json));
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        path: p,
        method,
        ca: serverCertPem,
        agent: false,
        ...(options.identity?.pfx === undefined
          ? {}
          : { pfx: options.identity.pfx, passphrase: options.identity.passphrase ?? '' }),
        ...(options.identity?.keyPem === undefined
          ? {}
          : { key: options.identity.keyPem, cert: options.identity.certPem }),
        headers: {
          ...(body === undefined
            ? {}
            : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }),
          ...(options.token === undefined ? {} : { authorization: `Bearer ${options.token}` }),
          ...options.headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          let parsed: unknown;
          try {
            parsed = JSON.parse(text);
          } catch {
            parsed = text;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}
