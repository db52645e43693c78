/**
 * pgbench as a baseline: custom scripts of the exact statements one operation executes, at the same
 * concurrency, measured the same way (warm-up discarded, then a fixed duration). Per-transaction
 * latencies come from pgbench's own log (`-l`), so the percentiles are computed like autocannon's.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Measurement } from './load.js';
import type { LoadOptions } from './scenario.js';

const run = promisify(execFile);

export interface PgbenchScript {
  readonly name: string;
  readonly sql: string;
  readonly weight: number;
}

export async function pgbench(
  label: string,
  databaseUrl: string,
  scripts: readonly PgbenchScript[],
  load: LoadOptions,
  dir: string,
): Promise<Measurement> {
  const files = scripts
    .filter((s) => s.weight > 0)
    .map((s) => {
      const file = path.join(dir, `${s.name}.sql`);
      fs.writeFileSync(file, s.sql);
      return `${file}@${s.weight}`;
    });
  const args = (seconds: number, logPrefix?: string): string[] => [
    '-n', // no vacuum of pgbench's own tables: there are none
    '-M',
    'extended', // parameters bound per statement, as node-postgres sends them (no named prepared statements)
    '-c',
    String(load.connections),
    '-j',
    String(Math.min(2, load.connections)),
    '-T',
    String(seconds),
    ...(logPrefix === undefined ? [] : ['-l', `--log-prefix=${logPrefix}`]),
    ...files.flatMap((f) => ['-f', f]),
    databaseUrl,
  ];
  if (load.warmupSeconds > 0) await run('pgbench', args(load.warmupSeconds), { maxBuffer: 16 * 2 ** 20 });
  const logPrefix = path.join(dir, 'pgbench-log');
  const { stdout } = await run('pgbench', args(load.durationSeconds, logPrefix), { maxBuffer: 16 * 2 ** 20 });
  const failed = /number of failed transactions: (\d+)/.exec(stdout);
  if (failed !== null && Number(failed[1]) > 0)
    throw new Error(`pgbench: ${failed[1]} failed transactions:\n${stdout}`);
  const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout);
  if (tps === null) throw new Error(`pgbench printed no tps:\n${stdout}`);

  // Log lines: client_id transaction_no latency_us script_no epoch_s epoch_us
  const latencies: number[] = [];
  for (const file of fs.readdirSync(dir).filter((f) => f.startsWith('pgbench-log'))) {
    for (const line of fs.readFileSync(path.join(dir, file), 'utf8').split('\n')) {
      const us = Number(line.split(' ')[2]);
      if (Number.isFinite(us) && line.length > 0) latencies.push(us / 1000);
    }
  }
  latencies.sort((a, b) => a - b);
  const at = (q: number): number => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
  return {
    label,
    requestsPerSecond: Number(tps[1]),
    latencyMs: { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: latencies[latencies.length - 1] ?? 0 },
    requests: latencies.length,
    durationSeconds: load.durationSeconds,
    non2xx: 0,
    errors: 0,
  };
}
