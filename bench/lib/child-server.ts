/**
 * Servers under test run as child processes, so that the load generator and the server never share
 * an event loop. Their output goes to a file (not a pipe the bench would have to drain under load);
 * the URL is read from the first JSON line carrying a `url`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ChildServer {
  readonly url: string;
  readonly logFile: string;
  stop(): Promise<void>;
}

export interface ChildServerOptions {
  readonly name: string;
  readonly args: readonly string[];
  readonly cwd: string;
  readonly env: Readonly<Record<string, string>>;
  /** Where its output is kept (inside the bench's temp folder). */
  readonly logFile: string;
  readonly startTimeoutMs?: number;
}

export async function startChildServer(options: ChildServerOptions): Promise<ChildServer> {
  fs.mkdirSync(path.dirname(options.logFile), { recursive: true });
  const out = fs.openSync(options.logFile, 'a');
  const child = spawn(process.execPath, [...options.args], {
    cwd: options.cwd,
    env: { PATH: process.env['PATH'] ?? '', ...options.env },
    stdio: ['ignore', out, out],
  });
  fs.closeSync(out);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));

  const deadline = Date.now() + (options.startTimeoutMs ?? 60_000);
  for (;;) {
    const url = findUrl(fs.readFileSync(options.logFile, 'utf8'));
    if (url !== undefined) return { url, logFile: options.logFile, stop: () => stop(child, exited) };
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${options.name} did not start (see ${options.logFile})`);
    }
    await sleep(100);
  }
}

function findUrl(text: string): string | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const url = (JSON.parse(line) as { url?: unknown }).url;
      if (typeof url === 'string') return url;
    } catch {
      // a partial line: read again later
    }
  }
  return undefined;
}

async function stop(child: ChildProcess, exited: Promise<number | null>): Promise<void> {
  if (child.exitCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}
