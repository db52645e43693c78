/**
 * Liveness says the process can serve; readiness says it should be sent traffic: the database
 * answers and the process is not draining for shutdown.
 */
import { AppError } from '../errors/app-error.js';
import type { HandlerMap } from '../http/types.js';

export interface Readiness {
  check(): Promise<{ ready: boolean; checks: Record<string, 'up' | 'down'> }>;
}

export function createReadiness(deps: { ping(timeoutMs: number): Promise<void>; isDraining(): boolean }): Readiness {
  return {
    async check() {
      const database = await deps.ping(2_000).then(
        () => 'up' as const,
        () => 'down' as const,
      );
      const process = deps.isDraining() ? ('down' as const) : ('up' as const);
      return { ready: database === 'up' && process === 'up', checks: { database, process } };
    },
  };
}

export function healthHandlers(readiness: Readiness, openApiYaml: string): HandlerMap {
  return {
    getLiveness(_req, res) {
      res.json({ status: 'ok' });
    },
    async getReadiness(_req, res) {
      const { ready, checks } = await readiness.check();
      if (!ready) throw new AppError('NOT_READY', { extensions: { checks }, headers: { 'Retry-After': '2' } });
      res.json({ status: 'ready', checks });
    },
    getOpenApiDocument(_req, res) {
      res.type('application/yaml').send(openApiYaml);
    },
  };
}
