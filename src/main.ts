/**
 * Process entry point: configuration, composition, listening, graceful shutdown. With WORKERS > 1
 * (PostgreSQL only) this process migrates the database, then runs that many worker processes
 * sharing the port (node:cluster), restarts a worker that dies, and passes SIGTERM/SIGINT on.
 */
import cluster from 'node:cluster';
import http from 'node:http';
import type net from 'node:net';
import type { AddressInfo } from 'node:net';
import { ConfigError, describeDatabase, loadConfig, type Config } from './config/config.js';
import { openCore } from './core.js';
import { createLogger, type Logger } from './logging/logger.js';
import { buildService } from './service.js';
import { createTlsServer, readTlsCredentials } from './http/tls-listener.js';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(78); // EX_CONFIG
    }
    throw error;
  }
  const logger = createLogger(config.logLevel);
  if (config.http.workers > 1 && cluster.isPrimary) return supervise(config.http.workers, logger, config);
  const service = await buildService(config, { logger });

  const server = http.createServer(
    { requestTimeout: 30_000, headersTimeout: 20_000, keepAliveTimeout: 5_000 },
    service.app,
  );
  await listenOrExit(server, config.port, config.host, 'PORT', service);
  const { port } = server.address() as AddressInfo;
  const shownHost = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host;
  logger.info(
    { url: `http://${shownHost}:${port}`, database: describeDatabase(config), env: config.nodeEnv, pid: process.pid },
    `listening on http://${shownHost}:${port} (${describeDatabase(config)})`,
  );

  // The HTTPS listener for card-data clients with certificates (mutual TLS), beside the HTTP one.
  const tlsServer =
    config.tls.port === undefined ? undefined : createTlsServer(service.app, readTlsCredentials(config.tls));
  if (tlsServer !== undefined) {
    await listenOrExit(tlsServer, config.tls.port ?? 0, config.host, 'TLS_PORT', service);
    const tlsPort = (tlsServer.address() as AddressInfo).port;
    logger.info(
      { url: `https://${shownHost}:${tlsPort}`, cardRoutesAuth: config.tls.cardRoutesAuth },
      `listening on https://${shownHost}:${tlsPort} (card-data routes: ${config.tls.cardRoutesAuth})`,
    );
  }

  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down: draining in-flight requests');
    service.startDraining();
    const force = setTimeout(() => {
      logger.warn('shutdown timeout reached: closing remaining connections');
      server.closeAllConnections();
      tlsServer?.closeAllConnections();
    }, config.http.shutdownTimeoutMs);
    force.unref();
    // Both listeners drain before the database closes.
    const listenersClosed = Promise.all(
      [server, ...(tlsServer === undefined ? [] : [tlsServer])].map(
        (listener) => new Promise<void>((resolve) => listener.close(() => resolve())),
      ),
    );
    server.closeIdleConnections();
    tlsServer?.closeIdleConnections();
    void listenersClosed.then(() => {
      service
        .close()
        .then(() => {
          logger.info('stopped');
          logger.flush();
          process.exitCode = 0;
          // A cluster worker's IPC channel would keep it alive: let go of it so the worker exits.
          if (cluster.isWorker) cluster.worker?.disconnect();
        })
        .catch((error: unknown) => {
          logger.error({ err: error }, 'error while closing the database');
          process.exitCode = 1;
        });
    });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

/**
 * Listens, or ends the process with one line naming the port and the variable to change (a port in
 * use, or one this user may not bind): no stack trace, the database closed, exit code 1.
 */
async function listenOrExit(
  server: net.Server,
  port: number,
  host: string,
  variable: 'PORT' | 'TLS_PORT',
  service: { close(): Promise<void> },
): Promise<void> {
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === 'EADDRINUSE'
        ? 'the port is already in use (EADDRINUSE): stop what listens there'
        : code === 'EACCES'
          ? 'permission denied (EACCES: ports below 1024 need privileges)'
          : `${code ?? 'error'}: ${(error as Error).message}`;
    process.stderr.write(`cannot listen on ${host}:${port}: ${why}, or set ${variable} to another port\n`);
    await service.close().catch(() => undefined);
    process.exit(1);
  }
}

/** The primary of a multi-process service: migrate once, fork, restart the dead, forward signals. */
async function supervise(workers: number, logger: Logger, config: Config): Promise<void> {
  const core = await openCore(config, { database: { role: 'supervisor' }, logger });
  if (core.migrations.length > 0) logger.info({ migrations: core.migrations }, 'database migrated');
  await core.close();
  let stopping = false;
  const recentDeaths: number[] = [];
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) logger.info('stopped');
      return;
    }
    logger.error({ pid: worker.process.pid, code, signal }, 'worker died: starting another');
    const now = Date.now();
    recentDeaths.push(now);
    while ((recentDeaths[0] ?? now) < now - 60_000) recentDeaths.shift();
    if (recentDeaths.length > workers * 3) {
      logger.fatal('workers keep dying: giving up');
      process.exitCode = 1;
      stopping = true;
      for (const w of Object.values(cluster.workers ?? {})) w?.kill('SIGTERM');
      return;
    }
    cluster.fork();
  });
  const shutdown = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, workers }, 'shutting down the workers');
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill(signal);
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  for (let i = 0; i < workers; i++) cluster.fork();
}

main().catch((error: unknown) => {
  // Start-up failures are reported without the error's data: a driver message can hold a URL.
  process.stderr.write(`start-up failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
