/**
 * Servers under test run as child processes, so that the load generator and the server never share
 * an event loop. Their output goes to a file (not a pipe the bench would have to drain under load).
 * Each is given a free port in PORT and is up once that port accepts connections: this works at any
 * log level (the service's "listening" line is an info line).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ChildServer {
  readonly url: string;
  readonly logFile: string;
  readonly pid: number;
  /** Its resident set size now and at its peak so far, in MiB (Linux /proc; undefined elsewhere or once it exited). */
  memory(): { readonly rssMiB: number; readonly peakRssMiB: number } | undefined;
  stop(): Promise<void>;
  /** SIGKILL, at once: a crash (fault tests). */
  kill(): void;
}

export interface ChildServerOptions {
  readonly name: string;
  readonly args: readonly string[];
  readonly cwd: string;
  /** PORT is set by startChildServer. */
  readonly env: Readonly<Record<string, string>>;
  /** Where its output is kept (inside the bench's temp folder). */
  readonly logFile: string;
  readonly startTimeoutMs?: number;
}

export async function startChildServer(options: ChildServerOptions): Promise<ChildServer> {
  fs.mkdirSync(path.dirname(options.logFile), { recursive: true });
  const out = fs.openSync(options.logFile, 'a');
  const port = await freePort();
  const child = spawn(process.execPath, [...options.args], {
    cwd: options.cwd,
    env: { PATH: process.env['PATH'] ?? '', ...options.env, PORT: String(port) },
    stdio: ['ignore', out, out],
  });
  fs.closeSync(out);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));

  const deadline = Date.now() + (options.startTimeoutMs ?? 60_000);
  for (;;) {
    if (await accepts(port)) {
      return {
        url: `http://127.0.0.1:${port}`,
        logFile: options.logFile,
        pid: child.pid as number,
        memory: () => memoryOf(child.pid as number),
        stop: () => stop(child, exited),
        kill: () => child.kill('SIGKILL'),
      };
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${options.name} did not start (see ${options.logFile})`);
    }
    await sleep(100);
  }
}

/** A port nobody listens on now (the OS picks it; the child binds it a moment later). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function stop(child: ChildProcess, exited: Promise<number | null>): Promise<void> {
  if (child.exitCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

/** VmRSS and VmHWM (the high-water mark) of a process, from /proc/<pid>/status. */
export function memoryOf(pid: number): { rssMiB: number; peakRssMiB: number } | undefined {
  let status: string;
  try {
    status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const kib = (field: string): number | undefined => {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
    return match === null ? undefined : Number(match[1]);
  };
  const rss = kib('VmRSS');
  const peak = kib('VmHWM');
  return rss === undefined || peak === undefined ? undefined : { rssMiB: rss / 1024, peakRssMiB: peak / 1024 };
}
