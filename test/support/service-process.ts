/**
 * The real service (`src/main.ts`) and the real CLIs as processes of their own, as an operator runs
 * them: for the tests of the embedded store's single owner, where "another process" is the point.
 */
import { spawn } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import path from 'node:path';
import { projectRoot } from '../../src/config/project-root.js';

/** tsx by absolute URL, so that a CLI runs from any working folder (the walkthrough's is a temp one). */
const TSX = pathToFileURL(path.join(projectRoot(), 'node_modules', 'tsx', 'dist', 'loader.mjs')).href;

export interface ServiceProcess {
  readonly url: string;
  readonly pid: number;
  logs(): string;
  /** SIGTERM, then waits for the exit code. */
  stop(): Promise<number | null>;
}

/** Starts `src/main.ts` on port 0 with only `env` (plus PATH) and waits until it listens. */
export async function startServiceProcess(env: Record<string, string>, timeoutMs = 120_000): Promise<ServiceProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: projectRoot(),
    env: { PATH: process.env['PATH'] ?? '', PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let logs = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the service did not start in time:\n${logs}`)), timeoutMs);
    const onData = (chunk: Buffer): void => {
      logs += chunk.toString();
      const match = /"url":"(http:\/\/[^"]+)"[^\n]*"msg":"listening on/.exec(logs);
      if (match?.[1] !== undefined) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (chunk: Buffer) => (logs += chunk.toString()));
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the service exited (${code}) before listening:\n${logs}`));
    });
  });
  return {
    url,
    pid: child.pid as number,
    logs: () => logs,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `node --import tsx <script> …args` from the project root with only `env` (plus PATH). */
export function runNodeCli(
  script: string,
  args: readonly string[],
  env: Record<string, string>,
  cwd: string = projectRoot(),
): Promise<CliResult> {
  return runProcess(process.execPath, ['--import', TSX, path.join(projectRoot(), script), ...args], env, cwd);
}

/** Runs a program with only PATH and `env` in its environment; resolves with its exit code and output. */
export function runProcess(
  file: string,
  args: readonly string[],
  env: Record<string, string>,
  cwd: string = projectRoot(),
): Promise<CliResult> {
  const child = spawn(file, [...args], {
    cwd,
    env: { PATH: process.env['PATH'] ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, stdout, stderr })));
}
