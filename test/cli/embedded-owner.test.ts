import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import pg from 'pg';
import { acquireOwnerLock, OWNER_LOCK_FILE } from '../../src/db/owner-lock.js';
import { usingPostgres } from '../support/database.js';
import { runNodeCli, startServiceProcess, type ServiceProcess } from '../support/service-process.js';

/** Runs `fn` over `items` three at a time (the CLIs are separate processes; the machine is small). */
async function inBatches<T, R>(items: readonly T[], fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = [];
  for (let i = 0; i < items.length; i += 3) results.push(...(await Promise.all(items.slice(i, i + 3).map(fn))));
  return results;
}

interface ListedKey {
  readonly purpose: string;
  readonly version: number;
  readonly state: string;
  readonly rowsTotal: number;
}

/**
 * Issue 17: with the service serving an embedded data folder, the CLIs work through the service's
 * socket and nothing they report as done is lost; without the service, a command owns the folder
 * for its duration. Everything here is a real process: `src/main.ts` and the CLIs.
 */
describe('the embedded store has one owner: CLIs beside a running service', function () {
  this.timeout(120_000);
  // Embedded-only by nature (its processes never get DATABASE_URL): not run twice on CI's PostgreSQL pass.
  if (usingPostgres) return;
  let dataDir: string;
  let env: Record<string, string>;
  let svc: ServiceProcess | undefined;

  const keys = (...args: string[]) => runNodeCli('src/cli/keys.ts', args, env);
  const listed = async (): Promise<ListedKey[]> => {
    const run = await keys('list', '--json');
    expect(run.code, run.stderr).to.equal(0);
    return JSON.parse(run.stdout) as ListedKey[];
  };
  const panKey = (list: readonly ListedKey[], version: number) =>
    list.find((k) => k.purpose === 'pan-encryption' && k.version === version);

  before(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-owner-'));
    env = {
      NODE_ENV: 'test',
      DATA_DIR: dataDir,
      KEYS_SINGLE_OPERATOR: 'true',
      KEY_RING_REFRESH_MS: '200',
      EVENTS_DISPATCHER_ENABLED: 'false',
    };
    svc = await startServiceProcess(env);
  });
  after(async () => {
    await svc?.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('when a CLI rotates a key while the service serves, then the service encrypts under it, and after a restart it is still active', async () => {
    const rotated = await keys('rotate', '--purpose', 'pan-encryption', '--apply');
    expect(rotated.code, rotated.stderr).to.equal(0);
    expect(rotated.stderr).to.contain('working through its socket');
    expect(rotated.stdout).to.contain('pan-encryption v2 is active');

    // A card tokenised afterwards through HTTP: the service picked v2 up on its key-ring refresh.
    const token = await runNodeCli('src/cli/token.ts', ['--scope', 'tokens:write'], env);
    expect(token.code, token.stderr).to.equal(0);
    const res = await fetch(`${svc!.url}/v1/tokens`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token.stdout.trim()}`, 'content-type': 'application/json' },
      body: JSON.stringify({ pan: '4111111111111111', expiryMonth: 12, expiryYear: 2030 }),
    });
    expect(res.status, await res.clone().text()).to.equal(201);

    const whileServing = await listed();
    expect(panKey(whileServing, 1)).to.include({ state: 'decrypt-only', rowsTotal: 0 });
    expect(panKey(whileServing, 2)).to.include({ state: 'active' });
    expect(panKey(whileServing, 2)!.rowsTotal).to.be.greaterThan(0);

    // The other CLIs obey the same owner: through the socket, beside the service.
    for (const [script, args, said] of [
      ['src/cli/migrate.ts', [], 'already up to date'],
      ['src/cli/loyalty.ts', ['check'], 'ledger invariants hold'],
    ] as const) {
      const run = await runNodeCli(script, args, env);
      expect(run.code, run.stderr).to.equal(0);
      expect(run.stdout).to.contain(said);
      expect(run.stderr).to.contain('working through its socket');
    }

    // Retention opens the master key too (its run is audited): through the socket, its evidence printed.
    const retention = await runNodeCli('src/cli/loyalty.ts', ['retention', '--apply', '--json'], {
      ...env,
      CARD_RETENTION_DAYS: '365',
    });
    expect(retention.code, retention.stderr).to.equal(0);
    expect(retention.stderr).to.contain('working through its socket');
    expect(JSON.parse(retention.stdout)).to.include({ mode: 'manual', ran: true, purged: 0, retentionDays: 365 });

    const usage = await keys('list', '--bogus');
    expect(usage.code).to.equal(2);
    expect(usage.stderr).to.contain("Unknown option '--bogus'");

    expect(await svc!.stop()).to.equal(0);
    svc = undefined;
    expect(fs.existsSync(path.join(dataDir, OWNER_LOCK_FILE)), 'the service released the folder').to.equal(false);

    const afterStop = await keys('list', '--json');
    expect(afterStop.code, afterStop.stderr).to.equal(0);
    expect(afterStop.stderr).to.contain('no service holds');
    const reopened = JSON.parse(afterStop.stdout) as ListedKey[];
    expect(panKey(reopened, 2)).to.deep.include({ state: 'active', rowsTotal: panKey(whileServing, 2)!.rowsTotal });
    expect(fs.existsSync(path.join(dataDir, OWNER_LOCK_FILE)), 'the command released the folder').to.equal(false);
  });

  it('when a command holds the folder, then a starting service and a second command are refused with DATA_FOLDER_IN_USE', async () => {
    const lock = acquireOwnerLock(dataDir, 'cli', 'keys reencrypt');
    try {
      const started = await startServiceProcess(env).then(
        (s) => s,
        (error: unknown) => error as Error,
      );
      expect(started).to.be.instanceOf(Error);
      expect((started as Error).message).to.contain(`is held by another command (pid ${process.pid}: keys reencrypt`);

      const second = await runNodeCli('src/cli/loyalty.ts', ['check'], env);
      expect(second.code).to.equal(1);
      expect(second.stderr).to.contain('refused: DATA_FOLDER_IN_USE');
    } finally {
      lock.release();
    }
  });

  it('when another process takes the owner lock from under the service, then the service stops and leaves that lock alone', async () => {
    await svc?.stop(); // this test runs its own service (also when run alone with --grep)
    svc = undefined;
    const own = await startServiceProcess(env);
    const file = path.join(dataDir, OWNER_LOCK_FILE);
    fs.rmSync(file); // an operator's mistake: the file goes, and a command takes the folder
    const lock = acquireOwnerLock(dataDir, 'cli', 'keys rotate');
    try {
      const deadline = Date.now() + 60_000;
      let alive = true;
      while (alive && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 250));
        try {
          process.kill(own.pid, 0);
        } catch {
          alive = false;
        }
      }
      expect(alive, 'the service stopped').to.equal(false);
      expect(own.logs()).to.contain('another process has taken the owner lock');
      expect(lock.stillHeld(), "the service's exit left the other process's lock in place").to.equal(true);
    } finally {
      lock.release();
      await own.stop();
    }
  });

  it('when the key CLI rotates through the socket, then it waits for the service to load each generation (on its refresh interval: the NOTIFY of a commit through the socket does not reach it), says so, and a stale write through the socket is refused', async () => {
    await svc?.stop(); // a service of its own, refreshing every 3 s
    svc = undefined;
    const own = await startServiceProcess({ ...env, KEY_RING_REFRESH_MS: '3000' });
    const socket = new pg.Client({
      host: path.join(dataDir, 'socket'),
      port: 5432,
      user: 'postgres',
      database: 'postgres',
    });
    try {
      const before = (await listed()).find((k) => k.purpose === 'pan-encryption' && k.state === 'active')!.version;
      const rotated = await keys('rotate', '--purpose', 'pan-encryption', '--apply');
      expect(rotated.code, rotated.stderr).to.equal(0);
      expect(rotated.stderr).to.contain('working through its socket');
      // The service's instance is named (its pid), with its interval, and the wait ends once it has loaded.
      expect(rotated.stdout).to.match(
        new RegExp(
          `waiting .* for 1 instance\\(s\\) to load generation (\\d+): ins_\\w+ on \\S+ \\(pid ${own.pid}\\) .*refreshes every 3\\.0 s`,
        ),
      );
      expect(rotated.stdout).to.match(/every live instance has loaded generation \d+ \(waited [\d.]+ s\)/);
      expect(rotated.stdout).to.contain(`pan-encryption v${before + 1} is active`);

      // A writer whose ring still holds v{before} (as the service's may, until its next refresh),
      // through the socket: refused by the database at the insert, nothing stored.
      await socket.connect();
      const refused = await socket
        .query(
          `with s as (insert into shoppers (shopper_ref, created_at) values ('shp_socketstaleaaaaaaaaaaaaaaaaa', now()) returning shopper_ref)
           insert into cards (token, shopper_ref, pan_ciphertext, pan_key_version, created_at, updated_at)
           select 'tok_socketstaleaaaaaaaaaaaaaaaaa', shopper_ref, $1, $2, now(), now() from s`,
          [Buffer.alloc(40), before],
        )
        .then(
          () => undefined,
          (error: unknown) => error as { code?: string; constraint?: string },
        );
      expect(refused, 'the stale write was refused').to.not.equal(undefined);
      expect(refused).to.include({ code: '23514', constraint: 'key_version_writable' });
      const stored = await socket.query(
        `select count(*)::int as n from cards where token = 'tok_socketstaleaaaaaaaaaaaaaaaaa'`,
      );
      expect(stored.rows[0]).to.deep.equal({ n: 0 });
      await socket.end();

      // The service's own first write after the rotation: stored under the new version whatever its ring held.
      const token = await runNodeCli('src/cli/token.ts', ['--scope', 'tokens:write'], env);
      const res = await fetch(`${own.url}/v1/tokens`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token.stdout.trim()}`, 'content-type': 'application/json' },
        body: JSON.stringify({ pan: '5555555555554444', expiryMonth: 12, expiryYear: 2031 }),
      });
      expect(res.status, await res.clone().text()).to.equal(201);
      const after = await listed();
      expect(panKey(after, before)).to.include({ state: 'decrypt-only' });
      expect(panKey(after, before + 1)!.rowsTotal).to.equal(1);
    } finally {
      await socket.end().catch(() => undefined);
      await own.stop();
    }
  });
});

describe('every CLI: --help answered and bad usage refused without touching data', function () {
  this.timeout(120_000);
  if (usingPostgres) return; // the CLIs here never get DATABASE_URL either
  let parent: string;
  let untouched: string;
  before(() => {
    parent = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-help-'));
    untouched = path.join(parent, 'must-not-exist');
  });
  after(() => fs.rmSync(parent, { recursive: true, force: true }));

  const help: [string, string[]][] = [
    ['src/cli/migrate.ts', ['--help']],
    ['src/cli/loyalty.ts', ['check', '--help']],
    ['src/cli/token.ts', ['--help']],
    ['src/cli/keys.ts', ['--help']],
    ['src/cli/keys.ts', ['rotate', '--help']],
    ['src/cli/keys.ts', ['audit', 'verify', '-h']],
    ['src/cli/keys.ts', ['help', 'mtls']],
  ];
  it('when any CLI or command is asked for --help / -h, then it prints its usage, exits 0 and creates nothing', async () => {
    const runs = await inBatches(help, ([script, args]) =>
      runNodeCli(script, args, { DATA_DIR: untouched, NODE_ENV: 'development' }),
    );
    runs.forEach((run, i) => {
      const what = help[i]!.join(' ');
      expect(run.code, `${what}: ${run.stderr}`).to.equal(0);
      expect(run.stdout, what).to.match(/usage: npm run/);
    });
    // A command's help is its own entries, not the whole usage.
    const rotate = runs[help.findIndex(([, args]) => args[0] === 'rotate')]!;
    expect(rotate.stdout).to.contain('rotate --purpose');
    expect(rotate.stdout).not.to.contain('reencrypt');
    expect(fs.existsSync(untouched)).to.equal(false);
  });

  const refused: [string, string[]][] = [
    ['src/cli/migrate.ts', ['--bogus']],
    ['src/cli/loyalty.ts', ['frobnicate']],
    ['src/cli/loyalty.ts', ['check', '--bogus']],
    ['src/cli/token.ts', ['--bogus']],
    ['src/cli/keys.ts', ['frobnicate']],
    ['src/cli/keys.ts', []],
    // A command's own options and arguments are checked before the master key or the folder.
    ['src/cli/keys.ts', ['list', '--bogus']],
    ['src/cli/keys.ts', ['rotate', '--nope']],
    ['src/cli/keys.ts', ['rotate', '--purpose', 'nonsense']],
    ['src/cli/keys.ts', ['audit', 'verify', '--x']],
    ['src/cli/keys.ts', ['request', 'show']],
    ['src/cli/keys.ts', ['retire', '--purpose', 'pan-encryption', '--version', 'x']],
  ];
  it('when any CLI is given an unknown command, option or argument, then it exits 2 with the usage and creates nothing', async () => {
    const runs = await inBatches(refused, ([script, args]) =>
      runNodeCli(script, args, { DATA_DIR: untouched, NODE_ENV: 'development' }),
    );
    runs.forEach((run, i) => {
      const what = refused[i]!.join(' ');
      expect(run.code, `${what}: ${run.stderr}`).to.equal(2);
      expect(run.stderr, what).to.match(/usage: npm run/);
    });
    expect(fs.existsSync(untouched)).to.equal(false);
  });
});
