/**
 * promtool, Prometheus's own checker (Debian's `prometheus` package; scripts/ensure-promtool.sh
 * installs it). Where it is missing a test that needs it is skipped with the reason, except in CI
 * (CI=true), where a missing promtool fails the test: CI never skips the check silently.
 */
import { spawnSync } from 'node:child_process';
import type { Context } from 'mocha';

export function promtoolPath(): string | undefined {
  const found = spawnSync('sh', ['-c', 'command -v promtool'], { encoding: 'utf8' });
  return found.status === 0 ? found.stdout.trim() : undefined;
}

/** promtool's path, or: fails the test in CI, skips it elsewhere (saying how to install it). */
export function requirePromtool(test: Context): string {
  const promtool = promtoolPath();
  if (promtool !== undefined) return promtool;
  const why = 'promtool is not installed (sh scripts/ensure-promtool.sh, or apt-get install prometheus)';
  if (process.env['CI'] === 'true') throw new Error(`${why}: CI must run this check`);
  process.stderr.write(`      skipped: ${why}; the pure parser test still runs\n`);
  return test.skip() as never;
}

/** Runs promtool with `input` on stdin; its exit code and output. */
export function runPromtool(promtool: string, args: readonly string[], input?: string) {
  const run = spawnSync(promtool, args, { input, encoding: 'utf8', timeout: 60_000 });
  return { status: run.status, output: `${run.stdout}${run.stderr}` };
}
