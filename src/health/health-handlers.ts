/**
 * Liveness says the process can serve; readiness says it should be sent traffic: the database
 * answers, the process is not draining for shutdown, and the master-key source can wrap and unwrap
 * (a PKCS#11 token reachable and logged in; a shares source unsealed).
 *
 * When the database and the process are up but the master key is not, /readyz answers with the
 * source's own code (MASTER_KEY_UNAVAILABLE, VAULT_SEALED) so an operator sees why at once. The
 * data keys already in the key ring keep serving card traffic meanwhile (they do not need the
 * source); what needs it (a key-ring reload after a rotation, a rotation) fails and rolls back.
 */
import { AppError } from '../errors/app-error.js';
import { contractHandlers } from '../http/contract.js';
import type { HandlerMap } from '../http/types.js';
import type { MasterKeyReadiness } from '../keys/master-key-types.js';

export type ReadinessCheck = 'up' | 'down';

export interface Readiness {
  check(): Promise<{ ready: boolean; checks: Record<string, ReadinessCheck>; masterKey: MasterKeyReadiness }>;
}

export interface MasterKeyHealth {
  readiness(): MasterKeyReadiness;
  refreshReadiness?(): Promise<void>;
}

/** How long /readyz waits for a master-key probe (a token round trip) before reading its state. */
const MASTER_KEY_PROBE_MS = 2_000;

export function createReadiness(deps: {
  ping(timeoutMs: number): Promise<void>;
  isDraining(): boolean;
  masterKey?: MasterKeyHealth;
  /**
   * Told the master key's reason when it changes (the log, for operators): /readyz answers anyone,
   * so its body carries the code only, never the reason (token and key labels, file paths).
   */
  onMasterKeyReason?: (state: MasterKeyReadiness) => void;
}): Readiness {
  let lastReason: string | undefined;
  return {
    async check() {
      const [database] = await Promise.all([
        deps.ping(2_000).then(
          () => 'up' as const,
          () => 'down' as const,
        ),
        probe(deps.masterKey),
      ]);
      const process = deps.isDraining() ? ('down' as const) : ('up' as const);
      const masterKey = deps.masterKey?.readiness() ?? { ready: true as const };
      const reason = masterKey.ready ? undefined : `${masterKey.code}: ${masterKey.detail}`;
      if (reason !== lastReason) {
        lastReason = reason;
        deps.onMasterKeyReason?.(masterKey);
      }
      const key: ReadinessCheck = masterKey.ready ? 'up' : 'down';
      return {
        ready: database === 'up' && process === 'up' && masterKey.ready,
        checks: { database, process, masterKey: key },
        masterKey,
      };
    },
  };
}

async function probe(source: MasterKeyHealth | undefined): Promise<void> {
  if (source?.refreshReadiness === undefined) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    source.refreshReadiness().catch(() => undefined),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, MASTER_KEY_PROBE_MS))),
  ]);
  clearTimeout(timer);
}

export function healthHandlers(readiness: Readiness, openApiYaml: string): HandlerMap {
  return contractHandlers({
    getLiveness(_req, res) {
      res.json({ status: 'ok' });
    },
    async getReadiness(_req, res) {
      const { ready, checks, masterKey } = await readiness.check();
      if (!ready) {
        const onlyTheKey = checks.database === 'up' && checks.process === 'up' && !masterKey.ready;
        throw onlyTheKey
          ? new AppError(masterKey.code, {
              // Unauthenticated: the reason (labels, paths) goes to the log, not to whoever asks.
              detail:
                masterKey.code === 'VAULT_SEALED'
                  ? 'The vault waits for custodians to unseal it (keys unseal).'
                  : "The master-key source does not answer; the instance's log says why.",
              extensions: { checks },
              headers: { 'Retry-After': '2' },
            })
          : new AppError('NOT_READY', { extensions: { checks }, headers: { 'Retry-After': '2' } });
      }
      res.json({ status: 'ready', checks });
    },
    getOpenApiDocument(_req, res) {
      res.type('application/yaml').send(openApiYaml);
    },
  });
}
