/**
 * Liveness says the process can serve; readiness says it should be sent traffic: the database
 * answers, the process is not draining for shutdown, and the master key can be used (`masterKey`:
 * down while the vault is sealed, MASTER_KEY_SOURCE=shares, or its token is unavailable). A sealed
 * instance answers 503 with the code of the master key's state (`VAULT_SEALED`) so that an operator
 * sees at once that it waits for `keys unseal`, not for a repair.
 */
import { AppError } from '../errors/app-error.js';
import type { MasterKeyReadiness } from '../keys/master-key-source.js';
import type { HandlerMap } from '../http/types.js';

export interface Readiness {
  check(): Promise<{
    ready: boolean;
    checks: Record<string, 'up' | 'down'>;
    /** Why the master key is down, when it is. */
    masterKeyState?: Exclude<MasterKeyReadiness, { ready: true }>;
  }>;
}

export function createReadiness(deps: {
  ping(timeoutMs: number): Promise<void>;
  isDraining(): boolean;
  masterKey?: () => MasterKeyReadiness;
}): Readiness {
  return {
    async check() {
      const database = await deps.ping(2_000).then(
        () => 'up' as const,
        () => 'down' as const,
      );
      const process = deps.isDraining() ? ('down' as const) : ('up' as const);
      const key = deps.masterKey?.() ?? { ready: true };
      const masterKey = key.ready ? ('up' as const) : ('down' as const);
      return {
        ready: database === 'up' && process === 'up' && masterKey === 'up',
        checks: { database, process, masterKey },
        ...(key.ready ? {} : { masterKeyState: key }),
      };
    },
  };
}

export function healthHandlers(readiness: Readiness, openApiYaml: string): HandlerMap {
  return {
    getLiveness(_req, res) {
      res.json({ status: 'ok' });
    },
    async getReadiness(_req, res) {
      const { ready, checks, masterKeyState } = await readiness.check();
      if (!ready) {
        // The master key's own code when it is what is down: VAULT_SEALED waits for custodians.
        const code =
          masterKeyState?.code === 'VAULT_SEALED' && checks['database'] === 'up' ? 'VAULT_SEALED' : 'NOT_READY';
        throw new AppError(code, {
          ...(masterKeyState === undefined ? {} : { detail: masterKeyState.detail }),
          extensions: { checks },
          headers: { 'Retry-After': '2' },
        });
      }
      res.json({ status: 'ready', checks });
    },
    getOpenApiDocument(_req, res) {
      res.type('application/yaml').send(openApiYaml);
    },
  };
}
