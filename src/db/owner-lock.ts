/**
 * The owner lock of an embedded data folder. PGlite is one process's database: two processes that
 * open one folder each run their own in-memory Postgres over the same files, and the last to write
 * silently wins (issue 17: a key activation made by the CLI was lost under a running service). So
 * exactly one process owns a folder at a time: the service while it runs, otherwise one CLI command.
 *
 * The lock is `DATA_DIR/owner.lock`, JSON naming the holder (pid, the kernel's start time of that
 * pid, a random nonce, its role and, for the service, the socket it serves the store on):
 * - Created atomically with its content: written to a private temp file, then hard-linked into
 *   place; `link` fails with EEXIST if any lock exists, so of two starters exactly one wins and a
 *   reader never sees a half-written lock.
 * - Stale only when its holder is gone: the pid is dead, or the pid is alive but started at another
 *   time (a recycled pid: the start time in `/proc/<pid>/stat` differs). Without /proc, a live pid
 *   counts as the holder (never stale by mistake). A lock recorded on another host (hostname) or in
 *   another boot (kernel boot id) is never judged stale: its pid means nothing here, so the refusal
 *   tells the operator to remove it by hand after checking. Residual: two containers with the SAME
 *   hostname, the same kernel and separate pid namespaces sharing one folder are not told apart
 *   (give containers distinct hostnames, or do not share an embedded folder between them).
 * - Breaking a stale lock is atomic too: it is renamed to a private name, and only if the file moved
 *   is the very lock judged stale (same nonce) is it deleted; if a racing starter had already
 *   replaced it with a live lock, that lock is linked back. With two racing starters this is exact;
 *   three that all race on one stale lock within microseconds could in theory leave two owners, so
 *   the service re-checks its lock every few seconds ({@link OwnerLock.reassert}), restoring a
 *   deleted lock file and reporting a lost one.
 * - Released on exit by its holder only (the nonce must still be ours).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { AppError } from '../errors/app-error.js';

export const OWNER_LOCK_FILE = 'owner.lock';

export type OwnerRole = 'service' | 'cli';

export interface OwnerRecord {
  readonly pid: number;
  /** Start time of the pid in clock ticks since boot (`/proc/<pid>/stat` field 22); null without /proc. */
  readonly startTime: string | null;
  readonly nonce: string;
  readonly role: OwnerRole;
  /** What holds it, for the operator: "service" or the CLI command line's first words. */
  readonly what: string;
  readonly since: string;
  /** The host that took it: a pid means nothing on another machine sharing the folder. */
  readonly hostname?: string | undefined;
  /** The kernel's boot id (`/proc/sys/kernel/random/boot_id`); null without /proc. */
  readonly bootId?: string | null | undefined;
  /** The directory holding the store's Unix socket (`.s.PGSQL.5432`) while the service serves it. */
  readonly socketDir?: string | undefined;
}

export interface OwnerLock {
  readonly record: OwnerRecord;
  /** True while the lock file still carries this owner's nonce. */
  stillHeld(): boolean;
  /**
   * Checks the lock is still ours and puts it back if someone deleted the file: `held`, `restored`,
   * or `lost` (another process's lock is in its place: two owners, which must be reported).
   */
  reassert(): 'held' | 'restored' | 'lost';
  /** Adds the socket directory to the record (service, once it listens). */
  announceSocket(socketDir: string): void;
  release(): void;
}

/** Takes the lock or throws DATA_FOLDER_IN_USE naming the live holder. */
export function acquireOwnerLock(dataDir: string, role: OwnerRole, what: string): OwnerLock {
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = path.join(dataDir, OWNER_LOCK_FILE);
  const record: OwnerRecord = {
    pid: process.pid,
    startTime: processStartTime(process.pid),
    hostname: os.hostname(),
    bootId: bootId(),
    nonce: randomBytes(16).toString('hex'),
    role,
    what,
    since: new Date().toISOString(),
  };
  for (let attempt = 0; attempt < 5; attempt++) {
    if (tryCreate(file, record)) return heldLock(file, record);
    const holder = liveOwner(dataDir);
    if (holder !== undefined) throw inUse(dataDir, holder);
    // The lock was stale and has been broken (or vanished): try again.
  }
  throw new AppError('DATA_FOLDER_IN_USE', {
    detail: `could not take the owner lock of ${dataDir}: it keeps changing`,
  });
}

/**
 * The live holder of the folder, or undefined when nobody holds it. A stale lock found on the way
 * is removed (atomically, see the file header).
 */
export function liveOwner(dataDir: string): OwnerRecord | undefined {
  const file = path.join(dataDir, OWNER_LOCK_FILE);
  const found = readRecord(file);
  if (found === 'absent') return undefined;
  if (found !== 'unreadable' && isAlive(found)) return found;
  breakStale(file, found === 'unreadable' ? undefined : found.nonce);
  return undefined;
}

export function describeOwner(owner: OwnerRecord): string {
  return owner.role === 'service'
    ? `the service (pid ${owner.pid}, since ${owner.since})`
    : `another command (pid ${owner.pid}: ${owner.what}, since ${owner.since})`;
}

/**
 * True when the lock was taken on another host or in another boot of this one: its pid cannot be
 * checked from here, so it is never judged stale automatically.
 */
export function isForeign(owner: OwnerRecord): boolean {
  if (owner.hostname !== undefined && owner.hostname !== os.hostname()) return true;
  const here = bootId();
  return owner.bootId !== undefined && owner.bootId !== null && here !== null && owner.bootId !== here;
}

function inUse(dataDir: string, holder: OwnerRecord): AppError {
  const detail = isForeign(holder)
    ? `the embedded data folder ${dataDir} is held by ${describeOwner(holder)} on host ${holder.hostname ?? '?'} (boot ${holder.bootId ?? '?'}), which this process cannot check; if you have made sure no process there uses the folder, remove ${path.join(dataDir, OWNER_LOCK_FILE)} by hand`
    : `the embedded data folder ${dataDir} is held by ${describeOwner(holder)}; an embedded database belongs to one process: wait for it to finish`;
  return new AppError('DATA_FOLDER_IN_USE', {
    detail,
    extensions: { pid: holder.pid, role: holder.role },
  });
}

function tryCreate(file: string, record: OwnerRecord): boolean {
  const temp = `${file}.${record.nonce}.tmp`;
  fs.writeFileSync(temp, `${JSON.stringify(record)}\n`, { mode: 0o600, flag: 'wx' });
  try {
    fs.linkSync(temp, file);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  } finally {
    fs.rmSync(temp, { force: true });
  }
}

function heldLock(file: string, initial: OwnerRecord): OwnerLock {
  let record = initial;
  let released = false;
  const ours = (): boolean => {
    const now = readRecord(file);
    return typeof now === 'object' && now.nonce === record.nonce;
  };
  const lock: OwnerLock = {
    get record() {
      return record;
    },
    stillHeld: () => !released && ours(),
    reassert() {
      if (released) return 'lost';
      if (ours()) return 'held';
      if (readRecord(file) === 'absent' && tryCreate(file, record)) return 'restored';
      return 'lost';
    },
    announceSocket(socketDir) {
      if (!ours()) throw new AppError('DATA_FOLDER_IN_USE', { detail: 'the owner lock of the data folder was lost' });
      record = { ...record, socketDir };
      // Replaced atomically (rename over it): readers see the old or the new record, never a part.
      const temp = `${file}.${record.nonce}.tmp`;
      fs.writeFileSync(temp, `${JSON.stringify(record)}\n`, { mode: 0o600, flag: 'w' });
      fs.renameSync(temp, file);
    },
    release() {
      if (released) return;
      released = true;
      if (ours()) fs.rmSync(file, { force: true });
      process.removeListener('exit', onExit);
    },
  };
  const onExit = (): void => lock.release();
  process.on('exit', onExit);
  return lock;
}

function readRecord(file: string): OwnerRecord | 'absent' | 'unreadable' {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw error;
  }
  try {
    const parsed = JSON.parse(text) as Partial<OwnerRecord>;
    if (typeof parsed.pid !== 'number' || typeof parsed.nonce !== 'string') return 'unreadable';
    return parsed as OwnerRecord;
  } catch {
    return 'unreadable';
  }
}

function isAlive(owner: OwnerRecord): boolean {
  if (isForeign(owner)) return true; // not ours to judge: the operator removes it (see inUse)
  try {
    process.kill(owner.pid, 0);
  } catch (error) {
    // EPERM: the pid exists but belongs to another user: alive (and not ours to judge).
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const started = processStartTime(owner.pid);
  // A recycled pid: the process with that number now is not the one that took the lock.
  return started === null || owner.startTime === null || started === owner.startTime;
}

/** Renames the lock aside; deletes it only if it is the stale one (same nonce), else puts it back. */
function breakStale(file: string, staleNonce: string | undefined): void {
  const aside = `${file}.stale-${randomBytes(8).toString('hex')}`;
  try {
    fs.renameSync(file, aside);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return; // someone else broke it first
    throw error;
  }
  const moved = readRecord(aside);
  const isTheStaleOne =
    staleNonce === undefined ? moved === 'unreadable' : typeof moved === 'object' && moved.nonce === staleNonce;
  if (!isTheStaleOne) {
    try {
      fs.linkSync(aside, file); // a live lock taken meanwhile: restore it
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
  fs.rmSync(aside, { force: true });
}

/** This boot's id, or null where there is no /proc. */
export function bootId(): string | null {
  try {
    return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return null;
  }
}

/** Field 22 of /proc/<pid>/stat (start time in ticks since boot), or null where there is no /proc. */
export function processStartTime(pid: number): string | null {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) is in parentheses and may itself hold spaces or ')': skip past the last.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields[19] ?? null; // field 3 is fields[0], so field 22 is fields[19]
}
