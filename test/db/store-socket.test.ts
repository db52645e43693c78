import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import pg from 'pg';
import { createMemoryDatabase, type Database } from '../../src/db/database.js';
import { serveStoreSocket, SOCKET_FILE, type StoreSocketServer } from '../../src/db/store-socket.js';

/**
 * The service's store socket: a CLI's unit of work and the service's own queries and transactions
 * exclude each other on the one PGlite session. The store is an in-memory PGlite (what matters is the
 * session sharing, not the files); the clients are real `pg` clients on the real Unix socket.
 */
describe('embedded store socket: CLI transactions beside the service', function () {
  this.timeout(60_000);
  let dataDir: string;
  let db: Database;
  let server: StoreSocketServer;
  const clients: pg.Client[] = [];

  async function client(): Promise<pg.Client> {
    const c = new pg.Client({ host: server.socketDir, port: 5432, user: 'postgres', database: 'postgres' });
    c.on('error', () => {}); // a client the server disconnects on purpose
    await c.connect();
    clients.push(c);
    return c;
  }
  const count = async (who: string): Promise<number> =>
    Number(((await db.knex('t').where({ who }).count({ n: '*' })) as { n: string | number }[])[0]?.n);

  before(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-sock-'));
    db = createMemoryDatabase();
    await db.knex.raw('create table t (id serial primary key, who text not null)');
    server = await serveStoreSocket({
      pglite: db.pglite!,
      knex: db.knex,
      dataDir,
      idleInTransactionMs: 1_500,
      maxLeaseMs: 4_000,
      startupTimeoutMs: 1_000,
    });
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.end().catch(() => {})));
    await db.knex('t').delete();
  });
  after(async () => {
    await server.close();
    await db.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('when the store is served, then only through a 0600 socket in a 0700 folder of the data folder', () => {
    expect(server.socketDir).to.equal(path.join(dataDir, 'socket'));
    expect(fs.statSync(server.socketDir).mode & 0o777).to.equal(0o700);
    const socket = fs.statSync(path.join(server.socketDir, SOCKET_FILE));
    expect(socket.isSocket()).to.equal(true);
    expect(socket.mode & 0o777).to.equal(0o600);
  });

  it('when the service commits writes while a CLI runs a multi-statement transaction, then they wait for it and the rolled-back CLI work is gone', async () => {
    const cli = await client();
    await cli.query('begin');
    await cli.query(`insert into t (who) values ('cli')`);
    let serviceDone = false;
    const service = Promise.all([
      ...Array.from({ length: 20 }, () => db.knex('t').insert({ who: 'service' })),
      db.knex.transaction(async (trx) => {
        await trx('t').insert({ who: 'service' });
        await trx('t').insert({ who: 'service' });
      }),
    ]).then(() => (serviceDone = true));
    await new Promise((resolve) => setTimeout(resolve, 300));
    // Inside its transaction the CLI sees its own row and none of the service's (they wait).
    const seen = await cli.query<{ who: string }>('select who from t order by id');
    expect(seen.rows.map((r) => r.who)).to.deep.equal(['cli']);
    expect(serviceDone).to.equal(false);
    await cli.query('rollback');
    await service;
    expect(await count('service')).to.equal(22);
    expect(await count('cli')).to.equal(0);
  });

  it('when a service transaction rolls back while a CLI writes, then the CLI write (reported done) is kept', async () => {
    const cli = await client();
    let cliWrite: Promise<unknown> | undefined;
    let cliDone = false;
    await db.knex
      .transaction(async (trx) => {
        await trx('t').insert({ who: 'service-tx' });
        cliWrite = cli.query(`insert into t (who) values ('cli') returning id`).then(() => (cliDone = true));
        await new Promise((resolve) => setTimeout(resolve, 300));
        expect(cliDone, 'the CLI statement ran inside the service transaction').to.equal(false);
        await trx('t').insert({ who: 'service-tx' });
        throw new Error('roll back');
      })
      .catch((error: unknown) => expect((error as Error).message).to.equal('roll back'));
    await cliWrite;
    expect(await count('cli')).to.equal(1);
    expect(await count('service-tx')).to.equal(0);
  });

  it('when two CLIs run parameterised queries at once, then each gets its own results', async () => {
    const [a, b] = await Promise.all([client(), client()]);
    const run = async (c: pg.Client, base: number) => {
      const values: (number | undefined)[] = [];
      for (let i = 0; i < 40; i++)
        values.push((await c.query<{ v: number }>('select $1::int as v', [base + i])).rows[0]?.v);
      return values;
    };
    const [fromA, fromB] = await Promise.all([run(a!, 1000), run(b!, 5000), db.knex.raw('select 1')]);
    expect(fromA).to.deep.equal(Array.from({ length: 40 }, (_, i) => 1000 + i));
    expect(fromB).to.deep.equal(Array.from({ length: 40 }, (_, i) => 5000 + i));
  });

  it('when a CLI disconnects inside a transaction, then its work is rolled back and the service goes on', async () => {
    const cli = await client();
    await cli.query('begin');
    await cli.query(`insert into t (who) values ('cli')`);
    const service = db.knex('t').insert({ who: 'service' });
    await cli.end();
    await service;
    expect(await count('cli')).to.equal(0);
    expect(await count('service')).to.equal(1);
  });

  it('when a CLI stays idle inside a transaction past the limit, then it is disconnected and rolled back', async () => {
    const cli = await client();
    await cli.query('begin');
    await cli.query(`insert into t (who) values ('cli')`);
    const started = Date.now();
    await db.knex('t').insert({ who: 'service' });
    expect(Date.now() - started).to.be.within(1_000, 10_000);
    expect(await count('cli')).to.equal(0);
    const error = await cli.query('select 1').catch((e: unknown) => e);
    expect(error).to.be.instanceOf(Error);
  });

  it('when a CLI leaves temp tables and SET parameters behind, then the service gets its own session back (DISCARD ALL)', async () => {
    const cli = await client();
    // One unit of work (one simple query): the temp table shadows public.t within it.
    await cli.query(`create temp table t (id int, who text); insert into t values (1, 'shadow')`);
    await cli.query('set default_transaction_read_only = on');
    await cli.query(`set application_name = 'cli'`);
    await cli.query('set search_path = pg_temp, public');
    // Even inside one connection, the next unit of work starts from the service's session.
    expect(
      (await cli.query(`select count(*)::int as n from pg_class where relpersistence = 't'`)).rows[0],
    ).to.deep.equal({ n: 0 });
    await cli.query('begin');
    await cli.query('create temp table shadow_audit (x int)');
    await cli.query('set search_path = pg_temp, public');
    await cli.end(); // disconnects inside its transaction

    await db.knex('t').insert({ who: 'service' }); // a write: not read-only, into public.t
    expect(await count('service')).to.equal(1);
    expect(await count('shadow')).to.equal(0);
    const session = (
      await db.knex.raw<{ rows: { app: string; ro: string; temps: number }[] }>(
        `select current_setting('application_name') as app, current_setting('default_transaction_read_only') as ro,
                (select count(*)::int from pg_class where relpersistence = 't') as temps`,
      )
    ).rows[0];
    expect(session).to.deep.equal({ app: '', ro: 'off', temps: 0 });
    expect(server.poisoned).to.equal(false);
  });

  it('when a CLI sends COPY, then it is refused with a clear error before PGlite sees it, and the service goes on', async () => {
    for (const sql of ['copy t (who) from stdin', `select 1; /* x */ COPY t TO STDOUT`]) {
      const cli = await client();
      await cli.query('begin');
      await cli.query(`insert into t (who) values ('cli')`);
      const error = (await cli.query(sql).catch((e: unknown) => e)) as Error & { code?: string };
      expect(error, sql).to.be.instanceOf(Error);
      expect(error.message, sql).to.contain('COPY is not available through the store socket');
      expect(error.code, sql).to.equal('0A000');
    }
    await db.knex('t').insert({ who: 'service' });
    expect(await count('service')).to.equal(1);
    expect(await count('cli')).to.equal(0); // each refused client's transaction was rolled back
  });

  it('when a CLI keeps its transaction busy past the lease limit, then it is disconnected and rolled back', async () => {
    const cli = await client();
    await cli.query('begin');
    await cli.query(`insert into t (who) values ('cli')`);
    const keepAlive = setInterval(() => void cli.query('select 1').catch(() => {}), 300);
    try {
      const started = Date.now();
      await db.knex('t').insert({ who: 'service' });
      expect(Date.now() - started).to.be.within(2_500, 15_000); // the 4 s cap, not the 1.5 s idle limit
    } finally {
      clearInterval(keepAlive);
    }
    expect(await count('cli')).to.equal(0);
    expect(await count('service')).to.equal(1);
  });

  it('when a connection never completes its startup, then it is closed after the startup limit', async () => {
    const socket = net.connect(path.join(server.socketDir, SOCKET_FILE));
    const started = Date.now();
    await new Promise<void>((resolve) => socket.once('close', () => resolve()));
    expect(Date.now() - started).to.be.within(500, 5_000);
  });
});
