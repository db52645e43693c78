/**
 * The optional HTTPS listener (TLS_PORT) on which card-data clients present client certificates.
 *
 * `requestCert: true` asks every client for a certificate; `rejectUnauthorized: false` keeps the
 * handshake going whatever it sends, so that the decision is made per operation by the
 * authentication middleware (src/mtls/client-certificate-verifier.ts): a missing, untrusted, expired
 * or revoked certificate is then a problem+json answer with a stable code, not an opaque TLS alert,
 * and operations that need no certificate (health, metrics, shopper routes) stay reachable. The
 * trusted CAs are read from the database (they change with a CA rotation), not given to OpenSSL.
 */
import fs from 'node:fs';
import https from 'node:https';
import type { RequestListener } from 'node:http';
import type { TlsConfig } from '../config/config.js';

export interface TlsCredentials {
  readonly cert: string;
  readonly key: string;
}

export function readTlsCredentials(tls: TlsConfig): TlsCredentials {
  if (tls.certFile === undefined || tls.keyFile === undefined)
    throw new Error('TLS_CERT_FILE and TLS_KEY_FILE are required');
  return { cert: fs.readFileSync(tls.certFile, 'utf8'), key: fs.readFileSync(tls.keyFile, 'utf8') };
}

export function createTlsServer(app: RequestListener, credentials: TlsCredentials): https.Server {
  return https.createServer(
    {
      ...credentials,
      minVersion: 'TLSv1.2',
      requestCert: true,
      rejectUnauthorized: false,
      requestTimeout: 30_000,
      headersTimeout: 20_000,
      keepAliveTimeout: 5_000,
    },
    app,
  );
}
