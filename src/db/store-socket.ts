/* eslint max-lines: ["error", 450] -- one wire protocol (framing, ownership, reconnect) of the embedded store, kept whole */
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
/** Concurrent socket connections: a few CLIs at once; more are closed at once. */
const MAX_CLIENTS = 8;

export function storeSocketDir(dataDir: string): string {
  return path.join(dataDir, 'socket');
}

export interface StoreSocketServer {
  readonly socketDir: string;
  /** True once a client left the session in a state that could not be reset (the store is closed). */
  readonly poisoned: boolean;
  close(): Promise<void>;
}

export interface StoreSocketOptions {
  readonly pglite: PGlite;
  /** The service's knex over that PGlite: holding its one connection excludes the service's queries. */
  readonly knex: Knex;
  readonly dataDir: string;
  /** A client idle inside a transaction this long is disconnected and rolled back (default 30 s). */
  readonly idleInTransactionMs?: number;
  /** The longest a unit of work may hold the store, however busy (default 30 s): then disconnected. */
  readonly maxLeaseMs?: number;
  /** A connection that has not finished its startup packet this soon is closed (default 5 s). */
  readonly startupTimeoutMs?: number;
  readonly onError?: (error: unknown) => void;
  /** A client left the session in a state the reset could not undo: the store has been closed. */
  readonly onPoisoned?: (error: Error) => void;
}

/** Checks a socket path fits sockaddr_un, before anything is opened or locked. */
export function checkSocketPathLength(dataDir: string): void {
  const socketPath = path.join(storeSocketDir(dataDir), SOCKET_FILE);
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
    throw new Error(
      `the store socket path ${socketPath} is ${Buffer.byteLength(socketPath)} bytes, too long for a Unix socket (at most ${MAX_SOCKET_PATH}): use a shorter DATA_DIR`,
    );
  }
}

/**
 * Refuses a folder that another user could tamper with: it must be a real directory (not a
 * symbolic link), owned by this user, and not writable by group or others.
 */
export function checkPrivateFolder(dir: string): void {
  const stat = fs.lstatSync(dir);
  const mine = typeof process.getuid !== 'function' || stat.uid === process.getuid();
  if (!stat.isDirectory() || !mine || (stat.mode & 0o022) !== 0) {
    throw new Error(
      `${dir} must be a directory (not a symbolic link) owned by this user and not writable by group or others`,
    );
  }
}

export async function serveStoreSocket(options: StoreSocketOptions): Promise<StoreSocketServer> {
  const socketDir = storeSocketDir(options.dataDir);
  const socketPath = path.join(socketDir, SOCKET_FILE);
  checkSocketPathLength(options.dataDir);
  fs.mkdirSync(socketDir, { recursive: true, mode: 0o700 });
  checkPrivateFolder(options.dataDir);
  checkPrivateFolder(socketDir); // lstat: a symbolic link planted here is refused, never followed
  fs.chmodSync(socketDir, 0o700);
  // The caller holds the owner lock, so a socket file left here is from a dead owner.
  fs.rmSync(socketPath, { force: true });

  const handlers = new Set<PGLiteSocketHandler>();
  const sockets = new Map<number, net.Socket>();
  let poisoned = false;
  const gate = new SessionGate(
    options.pglite,
    options.knex,
    { idleInTransactionMs: options.idleInTransactionMs ?? 30_000, maxLeaseMs: options.maxLeaseMs ?? 30_000 },
    (id) => sockets.get(id)?.destroy(),
    (error) => {
      poisoned = true;
      for (const socket of sockets.values()) socket.destroy();
      options.onPoisoned?.(error);
    },
  );
  await gate.captureBaseline();
  const startupTimeoutMs = options.startupTimeoutMs ?? 5_000;
  const server = net.createServer((socket) => {
    if (handlers.size >= MAX_CLIENTS || poisoned) {
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
    const startup = setTimeout(() => {
      if (!gate.hasStarted(handler.handlerId)) socket.destroy();
    }, startupTimeoutMs);
    startup.unref();
    const forget = (): void => {
      clearTimeout(startup);
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
    get poisoned() {
      return poisoned;
    },
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
  /** True once the startup packet has run (the connection may stay open between units of work). */
  started: boolean;
  idle: NodeJS.Timeout | undefined;
  /** Ends the unit of work when it has held the lease for `maxLeaseMs`, however busy it keeps it. */
  leaseLimit: NodeJS.Timeout | undefined;
}

/** The two knex pool operations the lease uses (knex's `Client`, typed `any` in knex's declarations). */
interface ConnectionPool {
  acquireConnection(): Promise<unknown>;
  releaseConnection(connection: unknown): Promise<unknown>;
}

const SYNC = Uint8Array.from([0x53, 0, 0, 0, 4]);
const QUERY = 0x51; // 'Q'
const PARSE = 0x50; // 'P'
const SYNC_TYPE = 0x53; // 'S'
/** CopyData, CopyDone, CopyFail: the client half of COPY FROM STDIN. */
const COPY_MESSAGES = new Set([0x64, 0x63, 0x66]);

/** What a socket client's session may have changed and the reset must have put back. */
interface SessionBaseline {
  readonly searchPath: string;
}

/** Thrown (and sent to the client as a FATAL ErrorResponse) when the gate refuses a message. */
export class StoreSocketRefusal extends Error {}

/**
 * True when a query text holds a COPY statement: at its start or after a `;`, comments skipped.
 * Conservative on purpose (a string literal holding "; copy" is refused too): a COPY through the
 * socket would block the service's thread (PGlite waits for CopyData synchronously).
 */
export function holdsCopy(sql: string): boolean {
  const bare = sql.replace(/\/\*[\s\S]*?\*\//g, ' ').replace(/--[^\n]*/g, ' ');
  return /(^|;)\s*copy\b/i.test(bare);
}

/** The query text of a simple Query ('Q' len text\0) or a Parse ('P' len name\0 text\0 …) message. */
function queryText(message: Uint8Array): string | undefined {
  const type = message[0];
  if (type !== QUERY && type !== PARSE) return undefined;
  let from = 5;
  if (type === PARSE) {
    const nameEnd = message.indexOf(0, from);
    if (nameEnd === -1) return undefined;
    from = nameEnd + 1;
  }
  const end = message.indexOf(0, from);
  return Buffer.from(message.subarray(from, end === -1 ? message.length : end)).toString('utf8');
}

/** A FATAL ErrorResponse ('E'): severity, SQLSTATE 0A000 feature_not_supported, message. */
function fatalError(text: string): Uint8Array {
  const fields = Buffer.concat(
    [
      ['S', 'FATAL'],
      ['V', 'FATAL'],
      ['C', '0A000'],
      ['M', text],
    ]
      .map(([code, value]) => Buffer.from(`${code}${value}\0`, 'utf8'))
      .concat(Buffer.from([0])),
  );
  const head = Buffer.alloc(5);
  head[0] = 0x45;
  head.writeInt32BE(4 + fields.length, 1);
  return new Uint8Array(Buffer.concat([head, fields]));
}

export interface SessionGateLimits {
  readonly idleInTransactionMs: number;
  readonly maxLeaseMs: number;
}

/**
 * Stands in for pglite-socket's query queue: runs each client's messages in order, each unit of
 * work under the lease (the service's knex connection), and hands the session back reset.
 */
export class SessionGate {
  private readonly sessions = new Map<number, Session>();
  private readonly pool: ConnectionPool;
  private baseline: SessionBaseline | undefined;
  private poisoned: Error | undefined;

  constructor(
    private readonly pglite: PGlite,
    knex: Knex,
    private readonly limits: SessionGateLimits,
    /** Ends a client's connection (its open transaction is rolled back as it goes). */
    private readonly disconnect: (handlerId: number, why: string) => void,
    /** The session could not be reset: the store has been closed so nothing runs on it any more. */
    private readonly onPoisoned: (error: Error) => void,
  ) {
    this.pool = knex.client as ConnectionPool;
  }

  /** Records the session's state the reset must restore (call before any client connects). */
  async captureBaseline(): Promise<void> {
    const result = await this.pglite.query<{ search_path: string }>(
      `select current_setting('search_path') as search_path`,
    );
    this.baseline = { searchPath: result.rows[0]?.search_path ?? '' };
  }

  get isPoisoned(): boolean {
    return this.poisoned !== undefined;
  }

  hasStarted(handlerId: number): boolean {
    return this.sessions.get(handlerId)?.started === true;
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

  /** Called when a client goes away: finish its half-sent exchange, roll back, reset, return the lease. */
  async clearTransactionIfNeeded(handlerId: number): Promise<void> {
    const session = this.sessions.get(handlerId);
    if (session === undefined) return;
    session.closed = true;
    await session.chain;
    clearTimeout(session.idle);
    if (session.lease !== undefined) {
      try {
        await this.pglite.runExclusive(() => this.pglite.execProtocolRawStream(SYNC, { onRawData: () => {} }));
      } finally {
        await this.returnLease(session);
      }
    }
    this.sessions.delete(handlerId);
  }

  private session(handlerId: number): Session {
    let session = this.sessions.get(handlerId);
    if (session === undefined) {
      session = {
        chain: Promise.resolve(),
        lease: undefined,
        closed: false,
        started: false,
        idle: undefined,
        leaseLimit: undefined,
      };
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
    if (this.poisoned !== undefined) throw new Error('the embedded store is closed');
    clearTimeout(session.idle);
    const type = message[0] ?? 0;
    // COPY runs synchronously on the service's thread and waits there for the client's CopyData:
    // refused before it reaches PGlite (the connection ends; its open transaction is rolled back).
    const text = queryText(message);
    if (COPY_MESSAGES.has(type) || (text !== undefined && holdsCopy(text))) {
      const refusal = 'COPY is not available through the store socket of the embedded store';
      onData(fatalError(refusal));
      throw new StoreSocketRefusal(refusal);
    }
    // Waits behind the service's running query or transaction and behind other clients' units.
    if (session.lease === undefined) {
      session.lease = await this.pool.acquireConnection();
      clearTimeout(session.leaseLimit);
      session.leaseLimit = setTimeout(
        () => this.disconnect(handlerId, 'the unit of work held the store too long'),
        this.limits.maxLeaseMs,
      );
      session.leaseLimit.unref();
    }
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
    if (type === 0) session.started = true; // the startup packet
    const endsExchange = type === SYNC_TYPE || type === QUERY || type === 0;
    if (endsExchange && !this.pglite.isInTransaction()) {
      await this.returnLease(session);
    } else {
      session.idle = setTimeout(
        () => this.disconnect(handlerId, 'idle inside a transaction'),
        this.limits.idleInTransactionMs,
      );
      session.idle.unref();
    }
    return bytes;
  }

  /**
   * Gives the service its connection back as the service left it: any transaction rolled back,
   * then DISCARD ALL (temporary tables, SET parameters such as search_path,
   * default_transaction_read_only or application_name, prepared statements, cursors, advisory
   * locks, LISTEN), then checked. A session that cannot be reset is not handed back: the store is
   * closed and the owner told, because the service's next query would run in the client's session.
   */
  private async returnLease(session: Session): Promise<void> {
    const lease = session.lease;
    if (lease === undefined) return;
    session.lease = undefined;
    clearTimeout(session.leaseLimit);
    try {
      await this.resetSession(); // under the lease: neither the service nor another client runs meanwhile
    } catch (error) {
      this.poisoned = error instanceof Error ? error : new Error(String(error));
      await this.pglite.close().catch(() => {});
      this.onPoisoned(this.poisoned);
    } finally {
      await this.pool.releaseConnection(lease);
    }
  }

  /** Runs while the lease is held (PGlite's own query lock is taken per statement). Throws when the session is not back to its baseline. */
  private async resetSession(): Promise<void> {
    if (this.pglite.isInTransaction()) await this.pglite.exec('ROLLBACK');
    await this.pglite.exec('DISCARD ALL');
    const result = await this.pglite.query<{ search_path: string; temps: number; read_only: string }>(
      `select current_setting('search_path') as search_path,
              (select count(*)::int from pg_class where relpersistence = 't') as temps,
              current_setting('default_transaction_read_only') as read_only`,
    );
    const state = result.rows[0];
    const expected = this.baseline?.searchPath;
    if (
      state === undefined ||
      state.temps !== 0 ||
      state.read_only !== 'off' ||
      (expected !== undefined && state.search_path !== expected)
    ) {
      throw new Error(`the store session could not be reset after a socket client: ${JSON.stringify(state)}`);
    }
  }
}
