/**
 * Composition root of mutual TLS in a running instance: the client-certificate verifier the HTTP
 * chain is given (only where the HTTPS listener can carry certificates, TLS_PORT), and the start-up
 * work it owes under the master key. Issuing, revoking and rotating are the key CLI's (`keys mtls`).
 */
import fs from 'node:fs';
import type { Knex } from 'knex';
import type { KeyActor } from '../auth/actors.js';
import type { Clock } from '../clock/clock.js';
import type { Config } from '../config/config.js';
import type { ClientCertificateAuth } from '../http/operation-middleware.js';
import type { MasterKeySource } from '../keys/master-key-types.js';
import type { Logger } from '../logging/logger.js';
import { createClientCertificateVerifier } from './client-certificate-verifier.js';
import { ClientCertificateAuthority } from './client-certificates.js';

export interface MtlsFeatureDeps {
  readonly knex: Knex;
  readonly masterKey: MasterKeySource;
  readonly tls: Config['tls'];
  /** The client CA's cryptoperiod (KEY_CRYPTOPERIOD_DAYS for mtls-client-ca). */
  readonly cryptoperiodDays: number;
  /** Who the start-up work is audited as (the instance). */
  readonly actor: KeyActor;
  readonly clock: Clock;
  readonly logger: Logger;
}

export interface MtlsFeature {
  /** Client certificates on the card-data operations; undefined without TLS_PORT. */
  readonly clientCertificates: ClientCertificateAuth | undefined;
  /**
   * Certificates revoked before revocations were sealed (issue 17), appended to the sealed list
   * once. Needs the master key: run when the vault opens.
   */
  sealPendingRevocations(): Promise<void>;
}

export function createMtlsFeature(deps: MtlsFeatureDeps): MtlsFeature {
  const { tls, logger, clock } = deps;
  const clientCertificates =
    tls.port === undefined
      ? undefined
      : {
          mode: tls.cardRoutesAuth,
          verifier: createClientCertificateVerifier(deps.knex, {
            masterKey: deps.masterKey,
            revocationCheckMs: tls.revocationCheckMs,
            onTamper: (problem) =>
              logger.error(
                { problem },
                'mTLS revocation list failed its integrity check: refusing every client certificate',
              ),
            extraCaPem: tls.clientCaFile === undefined ? undefined : fs.readFileSync(tls.clientCaFile, 'utf8'),
            now: () => clock().getTime(),
          }),
        };
  return {
    clientCertificates,
    async sealPendingRevocations() {
      const sealedRevocations = await new ClientCertificateAuthority({
        knex: deps.knex,
        masterKey: deps.masterKey,
        actor: deps.actor,
        cryptoperiodDays: deps.cryptoperiodDays,
        now: clock,
      }).sealPendingRevocations();
      if (sealedRevocations > 0) logger.info({ sealedRevocations }, 'earlier mTLS revocations sealed');
    },
  };
}
