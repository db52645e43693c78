/**
 * The running service lends its embedded store to local CLI commands over a Unix domain socket
 * (`DATA_DIR/socket/.s.PGSQL.5432`, folder 0700, socket 0600: only this user, never TCP), speaking
 * the PostgreSQL wire protocol, so that a CLI works while the service serves and every write goes
 * through the one PGlite that owns the files (see owner-lock.ts).
 *
 * Concurrency, the reason this is not `PGLiteSocketServer` as shipped: PGlite is ONE Postgres session.
 * The service's own queries (knex-pglite, a pool of one connection: a knex transaction holds it from
 * BEGIN to COMMIT) and every socket client share that session. pglite-socket's multiplexer takes
 * PGlite's query mutex per protocol message, which does not exclude the service's knex: a CLI's
 * statements could run inside a service transaction and the other way round, and two clients'
 * extended-protocol messages (Parse/Bind/Execute before Sync) could interleave. Here a socket
 * client must first hold the service's own knex connection (the "lease"), and keeps it for one unit
 * of work: from its first message until the backend is idle outside a transaction again (after a
 * Sync or a simple Query with no transaction block open). So a unit of a CLI and a service
 * transaction exclude each other exactly as two transactions on one connection would, and the
 * service waits at most for one CLI transaction (a client idle inside a transaction for longer than
 * `idleInTransactionMs` is disconnected and rolled back, as Postgres's
 * idle_in_transaction_session_timeout does). pglite-socket's `PGLiteSocketHandler` still does the
 * framing (startup, SSL refusal, cancel requests); the gate below replaces its query queue.
 *
 * No password: the socket's file mode is the access control (same user as the service, or root).
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Knex } from 'knex';
import type { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketHandler, type PGLiteSocketHandlerOptions } from '@electric-sql/pglite-socket';

/** The file name libpq and node-postgres look for in a socket directory (port 5432). */
export const SOCKET_FILE = '.s.PGSQL.5432';
export const SOCKET_PORT = 5432;
/** sockaddr_un.sun_path is 108 bytes on Linux, 104 on macOS, terminator included. */
const MAX_SOCKET_PATH = 103;
const MAX_CLIENTS = 16;

export function storeSocketDir(dataDir: string): string {
  return path.join(dataDir, 'socket');
}

export interface StoreSocketServer {
  readonly socketDir: string;
  close(): Promise<void>;
}

export interface StoreSocketOptions {
  readonly pglite: PGlite;
  /** The service's knex over that PGlite: holding its one connection excludes the service's queries. */
  readonly knex: Knex;
  readonly dataDir: string;
  readonly idleInTransactionMs?: number;
  readonly onError?: (error: unknown) => void;
}

export async function serveStoreSocket(options: StoreSocketOptions): Promise<StoreSocketServer> {
  const socketDir = storeSocketDir(options.dataDir);
  const socketPath = path.join(socketDir, SOCKET_FILE);
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
    throw new Error(`the store socket path ${socketPath} is too long for a Unix socket: use a shorter DATA_DIR`);
  }
  fs.mkdirSync(socketDir, { recursive: true, mode: 0o700 });
  fs.chmodSync(socketDir, 0o700);
  // The caller holds the owner lock, so a socket file left here is from a dead owner.
  fs.rmSync(socketPath, { force: true });

  const gate = new SessionGate(options.pglite, options.knex, options.idleInTransactionMs ?? 30_000, (id) =>
    sockets.get(id)?.destroy(),
  );
  const handlers = new Set<PGLiteSocketHandler>();
  const sockets = new Map<number, net.Socket>();
  const server = net.createServer((socket) => {
    if (handlers.size >= MAX_CLIENTS) {
      socket.destroy();
      return;
    }
    const handler = new PGLiteSocketHandler({
      // The gate has the queue's three methods; the class's private fields make its type nominal.
      queryQueue: gate as unknown as PGLiteSocketHandlerOptions['queryQueue'],
      closeOnDetach: true,
    });
    handlers.add(handler);
    sockets.set(handler.handlerId, socket);
    const forget = (): void => {
      handlers.delete(handler);
      sockets.delete(handler.handlerId);
    };
    handler.addEventListener('close', forget);
    handler.addEventListener('error', forget);
    handler.attach(socket).catch((error: unknown) => {
      forget();
      socket.destroy();
      options.onError?.(error);
    });
  });
  server.on('error', (error) => options.onError?.(error));

  const umask = process.umask(0o077); // the socket is born 0600, not after a chmod
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } finally {
    process.umask(umask);
  }
  fs.chmodSync(socketPath, 0o600);

  return {
    socketDir,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Each client's open transaction is rolled back and its lease returned before the store closes.
      await Promise.all([...handlers].map((h) => h.detach(true)));
      await closed;
      fs.rmSync(socketPath, { force: true });
    },
  };
}

interface Session {
  chain: Promise<void>;
  lease: unknown;
  closed: boolean;
  idle: NodeJS.Timeout | undefined;
}

/** The two knex pool operations the lease uses (knex's `Client`, typed `any` in knex's declarations). */
interface ConnectionPool {
  acquireConnection(): Promise<unknown>;
  releaseConnection(connection: unknown): Promise<unknown>;
}

const SYNC = Uint8Array.from([0x53, 0, 0, 0, 4]);
const QUERY = 0x51; // 'Q'
const SYNC_TYPE = 0x53; // 'S'

/**
 * Stands in for pglite-socket's query queue: runs each client's messages in order, each unit of
 * work under the lease (the service's knex connection).
 */
class SessionGate {
  private readonly sessions = new Map<number, Session>();
  private readonly pool: ConnectionPool;

  constructor(
    private readonly pglite: PGlite,
    knex: Knex,
    private readonly idleInTransactionMs: number,
    private readonly onIdleInTransaction: (handlerId: number) => void,
  ) {
    this.pool = knex.client as ConnectionPool;
  }

  enqueue(handlerId: number, message: Uint8Array, onData: (data: Uint8Array) => void): Promise<number> {
    const session = this.session(handlerId);
    const run = session.chain.then(() => this.run(session, handlerId, message, onData));
    session.chain = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  clearQueueForHandler(handlerId: number): void {
    const session = this.sessions.get(handlerId);
    if (session !== undefined) session.closed = true;
  }

  /** Called when a client goes away: finish its half-sent exchange, roll back, return the lease. */
  async clearTransactionIfNeeded(handlerId: number): Promise<void> {
    const session = this.sessions.get(handlerId);
    if (session === undefined) return;
    session.closed = true;
    await session.chain;
    clearTimeout(session.idle);
    if (session.lease !== undefined) {
      try {
        await this.pglite.runExclusive(() => this.pglite.execProtocolRawStream(SYNC, { onRawData: () => {} }));
        if (this.pglite.isInTransaction()) await this.pglite.exec('ROLLBACK');
      } finally {
        await this.returnLease(session);
      }
    }
    this.sessions.delete(handlerId);
  }

  private session(handlerId: number): Session {
    let session = this.sessions.get(handlerId);
    if (session === undefined) {
      session = { chain: Promise.resolve(), lease: undefined, closed: false, idle: undefined };
      this.sessions.set(handlerId, session);
    }
    return session;
  }

  private async run(
    session: Session,
    handlerId: number,
    message: Uint8Array,
    onData: (data: Uint8Array) => void,
  ): Promise<number> {
    if (session.closed) throw new Error('Handler disconnected');
    clearTimeout(session.idle);
    // Waits behind the service's running query or transaction and behind other clients' units.
    if (session.lease === undefined) session.lease = await this.pool.acquireConnection();
    if (session.closed) throw new Error('Handler disconnected'); // the lease goes back in clearTransactionIfNeeded
    let bytes = 0;
    await this.pglite.runExclusive(() =>
      this.pglite.execProtocolRawStream(message, {
        onRawData: (data) => {
          bytes += data.length;
          onData(data);
        },
      }),
    );
    const type = message[0];
    const endsExchange = type === SYNC_TYPE || type === QUERY || type === 0; // 0: the startup packet
    if (endsExchange && !this.pglite.isInTransaction()) {
      await this.returnLease(session);
    } else {
      session.idle = setTimeout(() => this.onIdleInTransaction(handlerId), this.idleInTransactionMs);
      session.idle.unref();
    }
    return bytes;
  }

  private async returnLease(session: Session): Promise<void> {
    const lease = session.lease;
    if (lease === undefined) return;
    session.lease = undefined;
    await this.pool.releaseConnection(lease);
  }
}
