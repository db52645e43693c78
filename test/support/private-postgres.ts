/**
 * A PostgreSQL server of the test's own: a fresh cluster in a temporary folder on a free port, so a
 * fault test can crash and restart it without touching the machine's server (which other suites and
 * other processes are using at the same moment).
 *
 * Uses the binaries of the installed PostgreSQL (`pg_config --bindir`). PostgreSQL refuses to run as
 * root, so as root the cluster is created and run as the `postgres` user.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../bench/lib/child-server.js';

export interface PrivatePostgres {
  /** `postgres://postgres@127.0.0.1:<port>/postgres` */
  readonly url: string;
  readonly port: number;
  /** `pg_ctl stop -m immediate`: every backend dies at once, no checkpoint (a crash, as far as clients see). */
  crash(): void;
  /** Starts it again (crash recovery replays the WAL); waits until it accepts connections. */
  start(): void;
  destroy(): void;
}

/** Why a private server cannot be had here, or undefined when it can. */
export function privatePostgresUnavailable(): string | undefined {
  const bin = binDir();
  if (bin === undefined) return 'pg_config is not installed';
  if (!fs.existsSync(path.join(bin, 'initdb'))) return `no initdb in ${bin}`;
  if (process.getuid?.() === 0 && spawnSync('id', ['postgres']).status !== 0) {
    return 'running as root and there is no postgres user to run the server as';
  }
  return undefined;
}

export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const bin = binDir();
  if (bin === undefined) throw new Error('pg_config is not installed');
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-pg-'));
  const asRoot = process.getuid?.() === 0;
  if (asRoot) execFileSync('chown', ['postgres', root]);
  const run = (tool: string, args: readonly string[]): void => {
    const command = asRoot ? 'runuser' : path.join(bin, tool);
    const argv = asRoot ? ['-u', 'postgres', '--', path.join(bin, tool), ...args] : [...args];
    const result = spawnSync(command, argv, { encoding: 'utf8', timeout: 60_000 });
    if (result.status !== 0) throw new Error(`${tool} failed: ${result.stderr || result.stdout}`);
  };
  const data = path.join(root, 'data');
  run('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-sync']);
  const port = await freePort();
  // fsync stays on (the default): the crash must not lose what was acknowledged.
  const options = `-p ${port} -k ${root} -c listen_addresses=127.0.0.1 -c max_connections=100`;
  const start = (): void =>
    run('pg_ctl', ['-D', data, '-o', options, '-l', path.join(root, 'server.log'), '-w', '-t', '60', 'start']);
  start();
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    crash: () => run('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']),
    start,
    destroy() {
      try {
        run('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
      } catch {
        // already stopped
      }
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

function binDir(): string | undefined {
  const result = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' });
  return result.status === 0 ? result.stdout.trim() : undefined;
}
