/**
 * A principal authenticated by a client certificate, and what verifies one (src/mtls implements it;
 * the HTTP layer asks it about every TLS connection).
 */
import type { X509Certificate } from 'node:crypto';
import type { Principal } from './authenticator.js';

export interface ClientCertificatePrincipal extends Principal {
  /** The certificate's serial (colon-separated hex) and its client name. */
  readonly certificateSerial: string;
  readonly clientName: string;
}

export interface ClientCertificateVerifier {
  /** Undefined when the connection carries no client certificate (plain HTTP, or none sent). */
  presented(socket: unknown): X509Certificate | undefined;
  verify(certificate: X509Certificate): Promise<ClientCertificatePrincipal>;
}
