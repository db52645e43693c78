/**
 * The real entry point (src/main.ts) as a child process: start-up line, graceful shutdown, and the
 * refusal to start in production without a database and a master key.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { projectRoot } from '../../src/config/project-root.js';
import { createTestDatabase, usingPostgres } from '../support/database.js';

interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

interface Child {
  readonly process: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the first stdout JSON line that `match` accepts. */
  waitForLine(match: (line: Record<string, unknown>) => boolean, timeoutMs: number): Promise<Record<string, unknown>>;
  readonly exited: Promise<Exit>;
}

/** Only what the service needs: nothing from the test's own environment (DATABASE_URL, AUTH_*…). */
function startMain(env: Record<string, string>): Child {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: projectRoot(),
    env: { PATH: process.env['PATH'] ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  const listeners = new Set<() => void>();
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
    for (const listener of listeners) listener();
  });
  child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
  const exited = new Promise<Exit>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const parsed = (): Record<string, unknown>[] =>
    out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  return {
    process: child,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitForLine(match, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const line = parsed().find(match);
          if (line === undefined) return;
          cleanup();
          resolve(line);
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`no matching log line within ${timeoutMs} ms; stdout:\n${out}\nstderr:\n${err}`));
        }, timeoutMs);
        const cleanup = (): void => {
          clearTimeout(timer);
          listeners.delete(check);
        };
        void exited.then(() => {
          check();
          if (listeners.has(check)) {
            cleanup();
            reject(new Error(`the process exited first; stdout:\n${out}\nstderr:\n${err}`));
          }
        });
        listeners.add(check);
        check();
      });
    },
  };
}

describe('process lifecycle (src/main.ts as a child process)', () => {
  let dataDir: string;
  let child: Child | undefined;

  beforeEach(() => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-main-'));
  });
  afterEach(() => {
    if (child !== undefined && child.process.exitCode === null) child.process.kill('SIGKILL');
    child = undefined;
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('when SIGTERM arrives, then it drains, closes the database, logs "stopped" and exits 0', async function () {
    this.timeout(60_000);
    child = startMain({ NODE_ENV: 'development', DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'info' });
    const listening = await child.waitForLine((l) => String(l['msg']).startsWith('listening on'), 45_000);
    const url = String(listening['url']);
    expect(url).to.match(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(String(listening['database'])).to.contain('embedded PGlite');

    const health = await fetch(`${url}/healthz`);
    expect(health.status).to.equal(200);
    const ready = await fetch(`${url}/readyz`);
    expect(ready.status).to.equal(200);

    child.process.kill('SIGTERM');
    const exit = await child.exited;
    expect(exit, child.stderr()).to.deep.equal({ code: 0, signal: null });
    const messages = child
      .stdout()
      .split('\n')
      .filter((l) => l.startsWith('{'));
    expect(messages.some((l) => l.includes('"signal":"SIGTERM"') && l.includes('shutting down'))).to.equal(true);
    expect(messages.at(-1)).to.contain('"msg":"stopped"');
    await fetch(`${url}/healthz`).then(
      () => expect.fail('the port still accepts connections'),
      (error: unknown) => expect(error).to.be.instanceOf(TypeError),
    );
  });

  it('when NODE_ENV=production has no DATABASE_URL, master key or auth keys, then it refuses to start', async () => {
    child = startMain({ NODE_ENV: 'production', DATA_DIR: dataDir, PORT: '0' });
    const exit = await child.exited;
    expect(exit.code).to.equal(78); // EX_CONFIG
    expect(child.stderr()).to.contain('DATABASE_URL is required when NODE_ENV=production');
    expect(child.stderr()).to.contain('MASTER_KEY or MASTER_KEY_FILE is required');
    expect(child.stderr()).to.contain('AUTH_JWKS_URL or AUTH_PUBLIC_KEYS is required');
    expect(child.stdout()).not.to.contain('listening');
    // Nothing was generated: no development key may appear on a production host.
    expect(fs.readdirSync(dataDir)).to.deep.equal([]);
  });

  it('when NODE_ENV=production has a DATABASE_URL but no master key, then it refuses to start', async () => {
    child = startMain({
      NODE_ENV: 'production',
      DATA_DIR: dataDir,
      DATABASE_URL: 'postgres://svc:do-not-print@127.0.0.1:1/loyalty',
      AUTH_ISSUER: 'https://idp.example/',
      AUTH_AUDIENCE: 'loyalty-vault',
      AUTH_JWKS_URL: 'https://idp.example/jwks.json',
    });
    const exit = await child.exited;
    expect(exit.code).to.equal(78);
    expect(child.stderr()).to.contain('MASTER_KEY or MASTER_KEY_FILE is required when NODE_ENV=production');
    expect(child.stderr()).not.to.contain('do-not-print');
  });

  it('when DATABASE_URL is set without an identity provider (NODE_ENV unset), then it refuses to start naming the opt-in', async () => {
    child = startMain({
      DATA_DIR: dataDir,
      PORT: '0',
      DATABASE_URL: 'postgres://svc:do-not-print@127.0.0.1:1/loyalty',
      MASTER_KEY: Buffer.alloc(32, 7).toString('base64'),
    });
    const exit = await child.exited;
    expect(exit.code).to.equal(78);
    expect(child.stderr()).to.contain('AUTH_JWKS_URL or AUTH_PUBLIC_KEYS is required when DATABASE_URL is set');
    expect(child.stderr()).to.contain('ALLOW_DEVELOPMENT_DEFAULTS=true');
    expect(child.stderr() + child.stdout()).not.to.contain('do-not-print');
    // Nothing was generated: the development signing key would be the credential.
    expect(fs.existsSync(path.join(dataDir, 'dev-auth-signing-key.json'))).to.equal(false);
  });

  it('when DATABASE_URL is set with ALLOW_DEVELOPMENT_DEFAULTS=true, then it starts and lists the downgrades once, at warn', async function () {
    if (!usingPostgres) this.skip();
    this.timeout(60_000);
    const db = await createTestDatabase();
    try {
      child = startMain({
        DATA_DIR: dataDir,
        PORT: '0',
        LOG_LEVEL: 'info',
        DATABASE_URL: db.url as string,
        MASTER_KEY: Buffer.alloc(32, 7).toString('base64'),
        ALLOW_DEVELOPMENT_DEFAULTS: 'true',
      });
      const main = child;
      const warning = await main.waitForLine((l) => Array.isArray(l['downgrades']), 30_000);
      expect(warning['level']).to.be.oneOf([40, 'warn']);
      expect((warning['downgrades'] as string[]).join('\n')).to.contain('development token issuer');
      await main.waitForLine((l) => String(l['msg']).startsWith('listening on'), 30_000);
      main.process.kill('SIGTERM');
      expect((await main.exited).code, main.stderr()).to.equal(0);
    } finally {
      await db.close();
    }
  });

  it('when WORKERS=2 on the embedded database, then it refuses to start', async () => {
    child = startMain({ NODE_ENV: 'development', DATA_DIR: dataDir, PORT: '0', WORKERS: '2' });
    const exit = await child.exited;
    expect(exit.code).to.equal(78);
    expect(child.stderr()).to.contain('WORKERS above 1 needs DATABASE_URL');
  });

  it('when WORKERS=2 on PostgreSQL, then two workers share the port, a killed one is replaced, SIGTERM stops all', async function () {
    if (!usingPostgres) this.skip();
    this.timeout(60_000);
    const db = await createTestDatabase();
    try {
      child = startMain({
        NODE_ENV: 'development',
        DATA_DIR: dataDir,
        PORT: '0',
        LOG_LEVEL: 'info',
        WORKERS: '2',
        DATABASE_URL: db.url as string,
        // The development issuer beside a DATABASE_URL is refused unless asked for.
        ALLOW_DEVELOPMENT_DEFAULTS: 'true',
        MASTER_KEY: Buffer.alloc(32, 7).toString('base64'),
      });
      const main = child;
      const listening = () =>
        main
          .stdout()
          .split('\n')
          .filter((l) => l.startsWith('{') && l.includes('listening on'))
          .map((l) => JSON.parse(l) as { url: string; pid: number });
      await main.waitForLine(() => listening().length >= 2, 30_000);
      const [a, b] = listening();
      expect(a?.url).to.equal(b?.url);
      expect(a?.pid).not.to.equal(b?.pid);
      expect((await fetch(`${a?.url}/readyz`)).status).to.equal(200);

      process.kill(a?.pid as number, 'SIGKILL');
      await main.waitForLine((l) => l['msg'] === 'worker died: starting another', 15_000);
      await main.waitForLine(() => listening().length >= 3, 30_000);
      expect((await fetch(`${a?.url}/healthz`)).status).to.equal(200);

      main.process.kill('SIGTERM');
      const exit = await main.exited;
      expect(exit.code, main.stderr()).to.equal(0);
      for (const { pid } of listening()) {
        expect(() => process.kill(pid, 0), `worker ${pid} still runs`).to.throw();
      }
    } finally {
      await db.close();
    }
  });
});
