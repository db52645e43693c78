/**
 * The servers scenarios measure: the service as built (`dist/`) and the express echo baseline, each
 * in its own process.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { projectRoot } from '../../src/config/project-root.js';
import { startChildServer, type ChildServer } from './child-server.js';

export interface ServiceUnderTest extends ChildServer {
  readonly dataDir: string;
  readonly logLevel: string;
}

/**
 * The service on the embedded default (PGlite in a fresh DATA_DIR, development issuer). Request
 * logging stays on (LOG_LEVEL=info) as in production, unless BENCH_LOG_LEVEL says otherwise. The
 * per-client card rate limit and first-sighting budget are set out of reach (the bench is one client).
 */
export async function startService(dir: string, env: Readonly<Record<string, string>> = {}): Promise<ServiceUnderTest> {
  const main = path.join(projectRoot(), 'dist', 'src', 'main.js');
  if (!fs.existsSync(main)) throw new Error('dist/src/main.js is missing: run `npm run build` (npm run bench does)');
  const dataDir = path.join(dir, 'service-data');
  const logLevel = process.env['BENCH_LOG_LEVEL'] ?? 'info';
  const server = await startChildServer({
    name: 'service',
    // e.g. BENCH_SERVICE_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" to profile the service.
    args: [...(process.env['BENCH_SERVICE_NODE_ARGS'] ?? '').split(' ').filter((a) => a !== ''), main],
    cwd: projectRoot(),
    env: {
      NODE_ENV: 'development',
      DATA_DIR: dataDir,
      LOG_LEVEL: logLevel,
      // The load generator is one client, and the per-client card limit (2,000/s by default) is a
      // guard against one caller, not part of the work measured: set out of reach, still checked.
      CARD_RATE_LIMIT_PER_SECOND: '1000000',
      CARD_RATE_LIMIT_BURST: '1000000',
      CARD_FIRST_SIGHTINGS_PER_MINUTE: '60000000',
      CARD_FIRST_SIGHTINGS_BURST: '1000000',
      // The bench signs its tokens with the development issuer, also on PostgreSQL (DATABASE_URL),
      // where it is refused unless asked for.
      ALLOW_DEVELOPMENT_DEFAULTS: 'true',
      ...env,
      // e.g. BENCH_SERVICE_ENV="PAYMENT_BATCH_CONCURRENCY=4 DB_POOL_MAX=20" to try settings.
      ...Object.fromEntries(
        (process.env['BENCH_SERVICE_ENV'] ?? '')
          .split(' ')
          .filter((pair) => pair.includes('='))
          .map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)]),
      ),
    },
    logFile: path.join(dir, 'service.log'),
  });
  return { ...server, dataDir, logLevel };
}

export function startEcho(dir: string): Promise<ChildServer> {
  return startChildServer({
    name: 'echo',
    args: ['--import', 'tsx', path.join(projectRoot(), 'bench', 'servers', 'echo.ts')],
    cwd: projectRoot(),
    env: { NODE_ENV: 'production' },
    logFile: path.join(dir, 'echo.log'),
  });
}

/** A scratch folder for one scenario, removed afterwards unless BENCH_KEEP_TMP=1 (to read the logs). */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-bench-'));
  try {
    return await fn(dir);
  } finally {
    if (process.env['BENCH_KEEP_TMP'] === '1') process.stderr.write(`bench: kept ${dir}\n`);
    else fs.rmSync(dir, { recursive: true, force: true });
  }
}
