import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { projectRoot } from '../../src/config/project-root.js';
import { isAppError } from '../../src/errors/app-error.js';
import {
  acquireOwnerLock,
  bootId,
  liveOwner,
  OWNER_LOCK_FILE,
  processStartTime,
  type OwnerRecord,
} from '../../src/db/owner-lock.js';

/** A pid that is not running: a child that has already exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0']);
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid as number;
}

function writeLock(dir: string, record: Partial<OwnerRecord>): void {
  const full: OwnerRecord = {
    pid: process.pid,
    startTime: processStartTime(process.pid),
    nonce: 'n'.repeat(32),
    role: 'service',
    what: 'service',
    since: new Date().toISOString(),
    ...record,
  };
  fs.writeFileSync(path.join(dir, OWNER_LOCK_FILE), JSON.stringify(full));
}

function refusal(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (error) {
    if (isAppError(error)) return { code: error.code, message: error.message };
    throw error;
  }
  throw new Error('expected a refusal');
}

describe('embedded data folder: the owner lock', function () {
  this.timeout(60_000);
  let dir: string;
  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-lock-'))));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('when the folder is free, then the lock is taken (0600, naming this process) and released', () => {
    const lock = acquireOwnerLock(dir, 'cli', 'keys list');
    const file = path.join(dir, OWNER_LOCK_FILE);
    expect(fs.statSync(file).mode & 0o777).to.equal(0o600);
    expect(liveOwner(dir)).to.include({ pid: process.pid, role: 'cli', what: 'keys list', nonce: lock.record.nonce });
    expect(lock.stillHeld()).to.equal(true);
    lock.release();
    expect(fs.existsSync(file)).to.equal(false);
    expect(liveOwner(dir)).to.equal(undefined);
  });

  it('when a live process holds the folder, then another owner is refused with DATA_FOLDER_IN_USE naming it', () => {
    const lock = acquireOwnerLock(dir, 'service', 'service');
    try {
      const refused = refusal(() => acquireOwnerLock(dir, 'cli', 'keys rotate'));
      expect(refused.code).to.equal('DATA_FOLDER_IN_USE');
      expect(refused.message).to.contain(`the service (pid ${process.pid}`);
      expect(lock.stillHeld()).to.equal(true);
    } finally {
      lock.release();
    }
  });

  it('when the lock names a pid that is gone, then it is stale and taken over', async () => {
    writeLock(dir, { pid: await deadPid(), startTime: '1' });
    const lock = acquireOwnerLock(dir, 'cli', 'migrate');
    expect(liveOwner(dir)?.nonce).to.equal(lock.record.nonce);
    lock.release();
  });

  it('when the lock names a live pid that started at another time (a recycled pid), then it is stale', function () {
    if (processStartTime(process.pid) === null) this.skip(); // no /proc here
    writeLock(dir, { pid: process.pid, startTime: '1' });
    expect(liveOwner(dir)).to.equal(undefined);
    expect(fs.existsSync(path.join(dir, OWNER_LOCK_FILE))).to.equal(false);
  });

  it('when the lock was taken on another host or in another boot, then it is never judged stale and the refusal says how to remove it', async () => {
    const gone = await deadPid();
    for (const foreign of [{ hostname: 'another-host.example' }, { bootId: '00000000-0000-4000-8000-000000000000' }]) {
      writeLock(dir, { pid: gone, ...foreign });
      const refused = refusal(() => acquireOwnerLock(dir, 'cli', 'keys list'));
      expect(refused.code).to.equal('DATA_FOLDER_IN_USE');
      expect(refused.message).to.contain('remove').and.contain('by hand');
      expect(fs.existsSync(path.join(dir, OWNER_LOCK_FILE)), 'the foreign lock stays').to.equal(true);
    }
    // The same host and boot, the pid gone: stale as before.
    writeLock(dir, { pid: gone, hostname: os.hostname(), bootId: bootId() });
    acquireOwnerLock(dir, 'cli', 'keys list').release();
  });

  it('when a lock file is unreadable, then it is stale and taken over', () => {
    fs.writeFileSync(path.join(dir, OWNER_LOCK_FILE), 'not json');
    const lock = acquireOwnerLock(dir, 'cli', 'loyalty check');
    expect(liveOwner(dir)?.nonce).to.equal(lock.record.nonce);
    lock.release();
  });

  it('when the lock file is deleted under its owner, then the owner restores it; when replaced, the owner reports it lost', () => {
    const lock = acquireOwnerLock(dir, 'service', 'service');
    lock.announceSocket('/some/socket');
    expect(lock.reassert()).to.equal('held');
    fs.rmSync(path.join(dir, OWNER_LOCK_FILE));
    expect(lock.reassert()).to.equal('restored');
    expect(liveOwner(dir)).to.include({ nonce: lock.record.nonce, socketDir: '/some/socket' });
    writeLock(dir, { nonce: 'someone-else'.padEnd(32, 'x') });
    expect(lock.reassert()).to.equal('lost');
    lock.release();
  });

  it('when another process releases, then only its own lock goes (a release after losing the lock removes nothing)', () => {
    const lock = acquireOwnerLock(dir, 'cli', 'keys list');
    writeLock(dir, { nonce: 'someone-else'.padEnd(32, 'x') });
    expect(lock.stillHeld()).to.equal(false);
    lock.release();
    expect(liveOwner(dir)?.nonce).to.equal('someone-else'.padEnd(32, 'x'));
  });

  it('when several processes race for a folder with a stale lock, then exactly one becomes its owner', async () => {
    writeLock(dir, { pid: await deadPid(), startTime: '1' });
    const script = `
      import { acquireOwnerLock } from ${JSON.stringify(path.join(projectRoot(), 'src/db/owner-lock.ts'))};
      process.stdin.once('data', () => {
        try { acquireOwnerLock(process.argv[1], 'cli', 'race'); process.stdout.write('won'); setTimeout(() => {}, 1500); }
        catch (e) { process.stdout.write(e.code ?? String(e)); }
      });
      process.stdout.write('ready;');`;
    const racers = Array.from({ length: 4 }, () => {
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, dir], {
        cwd: projectRoot(),
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      let out = '';
      const ready = new Promise<void>((resolve) =>
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.startsWith('ready;')) resolve();
        }),
      );
      const done = new Promise<string>((resolve) => child.once('exit', () => resolve(out.slice('ready;'.length))));
      return { child, ready, done };
    });
    await Promise.all(racers.map((r) => r.ready));
    for (const r of racers) r.child.stdin.end('go'); // as close to together as four processes get
    const outcomes = await Promise.all(racers.map((r) => r.done));
    expect(outcomes.filter((o) => o === 'won')).to.have.length(1);
    expect(outcomes.filter((o) => o === 'DATA_FOLDER_IN_USE')).to.have.length(3);
  });
});
