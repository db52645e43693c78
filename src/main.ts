/**
 * Process entry point: configuration, composition, listening, graceful shutdown.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConfigError, describeDatabase, loadConfig } from './config/config.js';
import { createLogger } from './logging/logger.js';
import { buildService } from './service.js';

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
  const service = await buildService(config, { logger });

  const server = http.createServer(
    { requestTimeout: 30_000, headersTimeout: 20_000, keepAliveTimeout: 5_000 },
    service.app,
  );
  await new Promise<void>((resolve) => server.listen(config.port, config.host, resolve));
  const { port } = server.address() as AddressInfo;
  const shownHost = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host;
  logger.info(
    { url: `http://${shownHost}:${port}`, database: describeDatabase(config), env: config.nodeEnv },
    `listening on http://${shownHost}:${port} (${describeDatabase(config)})`,
  );

  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down: draining in-flight requests');
    service.startDraining();
    const force = setTimeout(() => {
      logger.warn('shutdown timeout reached: closing remaining connections');
      server.closeAllConnections();
    }, config.http.shutdownTimeoutMs);
    force.unref();
    server.close(() => {
      service
        .close()
        .then(() => {
          logger.info('stopped');
          logger.flush();
          process.exitCode = 0;
        })
        .catch((error: unknown) => {
          logger.error({ err: error }, 'error while closing the database');
          process.exitCode = 1;
        });
    });
    server.closeIdleConnections();
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((error: unknown) => {
  // Start-up failures are reported without the error's data: a driver message can hold a URL.
  process.stderr.write(`start-up failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
