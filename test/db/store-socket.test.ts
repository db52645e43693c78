import fs from 'node:fs';
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
    server = await serveStoreSocket({ pglite: db.pglite!, knex: db.knex, dataDir, idleInTransactionMs: 1_500 });
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
});
