/**
 * Composition root of liveness and readiness: the readiness check over the database, the process
 * (draining for shutdown) and the master-key source, and its handlers (with the contract document).
 */
import type { Database } from '../db/database.js';
import type { HandlerMap } from '../http/types.js';
import type { Logger } from '../logging/logger.js';
import { createReadiness, healthHandlers, type MasterKeyHealth, type Readiness } from './health-handlers.js';

export interface HealthFeatureDeps {
  readonly database: Pick<Database, 'ping'>;
  readonly masterKey: MasterKeyHealth;
  /** The contract, served as it is (`getOpenApiDocument`). */
  readonly openApiYaml: string;
  readonly logger: Logger;
}

export interface HealthFeature {
  readonly readiness: Readiness;
  readonly handlers: HandlerMap;
  /** Readiness turns false so load balancers stop sending traffic; in-flight work continues. */
  startDraining(): void;
}

export function createHealthFeature(deps: HealthFeatureDeps): HealthFeature {
  const { logger } = deps;
  let draining = false;
  const readiness = createReadiness({
    ping: (ms) => deps.database.ping(ms),
    isDraining: () => draining,
    masterKey: deps.masterKey,
    // The reason goes to the log once per change; /readyz answers anyone and carries the code only.
    onMasterKeyReason: (state) =>
      state.ready
        ? logger.info('master key ready again')
        : logger.warn({ code: state.code, reason: state.detail }, 'master key not ready'),
  });
  return {
    readiness,
    handlers: healthHandlers(readiness, deps.openApiYaml),
    startDraining() {
      draining = true;
    },
  };
}
