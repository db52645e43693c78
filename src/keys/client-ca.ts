/**
 * What key custody needs from the mTLS module for the one purpose whose key is a certificate
 * authority (`mtls-client-ca`): generating the CA key and its certificate, sealing the certificate
 * with the master key, and re-sealing every mTLS seal when the master key rotates. src/mtls provides it
 * (client-ca-hooks.ts); the composition roots pass it in, so keys/ never imports mtls/.
 */
import type { Knex } from 'knex';
import type { MasterKeySource } from './master-key-types.js';

export interface ClientCaMaterial {
  /** PKCS#8 DER of the private key: the caller wraps it with the master key and wipes it. */
  readonly privateKeyDer: Buffer;
  readonly publicKeyPem: string;
  readonly certificatePem: string;
}

export interface ClientCaHooks {
  /** A new CA key and its self-signed certificate, valid `validityDays` from now. */
  generate(version: number, validityDays: number): ClientCaMaterial;
  /** The master key's seal over a CA certificate (the service trusts a CA certificate only with it). */
  seal(masterKey: MasterKeySource, ca: { purpose: string; version: number; certificatePem: string }): Promise<Buffer>;
  /** Re-seals every mTLS seal under the current master key, in the rotation's transaction. */
  rewrapSeals(trx: Knex.Transaction, masterKey: MasterKeySource): Promise<number>;
}
