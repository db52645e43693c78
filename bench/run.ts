/**
 * Benchmark runner: `npm run bench [-- <scenario>…] [--connections N] [--duration S] [--warmup S]`.
 * No scenario runs them all but the optional ones (the soak); `--list` names them. Defaults come from BENCH_CONNECTIONS,
 * BENCH_DURATION and BENCH_WARMUP, else 10 connections, 10 s measured, 3 s warm-up per side.
 *
 * Prints requests per second and latency percentiles for target and baseline, the ratio between
 * them, and writes everything to bench/results/<timestamp>.json, and the table to <timestamp>.md.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { cliProgram, isMain, onRun, runProgram } from '../src/cli/cli-program.js';
import { UsageError } from '../src/cli/usage-error.js';
import { projectRoot } from '../src/config/project-root.js';
import type { Measurement } from './lib/load.js';
import type { LoadOptions, Scenario, ScenarioResult } from './lib/scenario.js';
import { writeCharts } from './lib/plots.js';
import { scenarios } from './scenarios/index.js';

function positiveInteger(name: string, value: string | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`${name} must be a whole number >= ${min}`);
  return n;
}

interface BenchOptions {
  readonly connections?: string;
  readonly duration?: string;
  readonly warmup?: string;
  readonly list?: boolean;
}

/** The bench CLI (the CLI layer: src/cli/cli-program.ts); `run` is given the parsed command line. */
export function benchProgram(
  run: (parsed: { selected: Scenario[]; load: LoadOptions; list: boolean }) => Promise<number> = main,
): Command {
  const program = cliProgram({
    name: 'bench',
    invocation: 'npm run bench --',
    description:
      'Measures each scenario against its baseline: requests per second and latency percentiles for both, the ' +
      'ratio between them, written to bench/results/<timestamp>.json and .md. No scenario runs them all but the ' +
      'optional ones (the soak); a name selects that scenario or its family (tokenise: tokenise-known, tokenise-new).',
    ownEnv: {
      BENCH_CONNECTIONS: 'default of --connections (else 10)',
      BENCH_DURATION: 'default of --duration (else 10)',
      BENCH_WARMUP: 'default of --warmup (else 3)',
    },
    exitCodes: { 0: 'done (or --list)', 1: 'a scenario failed', 2: 'bad usage: nothing run' },
  });
  program
    .argument('[scenario...]', 'scenarios or families to run (--list names them)')
    .option('--connections <n>', 'concurrent connections per side')
    .option('--duration <seconds>', 'measured seconds per side')
    .option('--warmup <seconds>', 'warm-up seconds per side')
    .option('--list', 'name the scenarios and stop');
  return onRun(program, (self) => run(parseCommandLine(self.opts<BenchOptions>(), self.args)));
}

function parseCommandLine(
  values: BenchOptions,
  positionals: readonly string[],
): { selected: Scenario[]; load: LoadOptions; list: boolean } {
  const env = process.env;
  const load: LoadOptions = {
    connections: positiveInteger('--connections', values.connections ?? env['BENCH_CONNECTIONS'], 10, 1),
    durationSeconds: positiveInteger('--duration', values.duration ?? env['BENCH_DURATION'], 10, 1),
    warmupSeconds: positiveInteger('--warmup', values.warmup ?? env['BENCH_WARMUP'], 3, 0),
  };
  // A name selects that scenario, or the family `<name>-…` (`tokenise` → tokenise-known, tokenise-new).
  const matches = (s: Scenario, name: string): boolean => s.name === name || s.name.startsWith(`${name}-`);
  const unknown = positionals.filter((name) => !scenarios.some((s) => matches(s, name)));
  if (unknown.length > 0) {
    throw new UsageError(`unknown scenario ${unknown.join(', ')}; known: ${scenarios.map((s) => s.name).join(', ')}`);
  }
  const selected =
    positionals.length === 0
      ? scenarios.filter((s) => s.optional !== true)
      : scenarios.filter((s) => positionals.some((n) => matches(s, n)));
  return { selected, load, list: values.list === true };
}

const say = (line = ''): boolean => process.stdout.write(`${line}\n`);
const fmt = (n: number, digits = 0): string =>
  n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

function row(role: string, m: Measurement): string {
  const unit = m.unit ?? 'req';
  const latency =
    m.latencyMs === undefined
      ? ''
      : `   p50 ${fmt(m.latencyMs.p50, 1).padStart(6)} ms   p99 ${fmt(m.latencyMs.p99, 1).padStart(6)} ms`;
  return (
    `  ${role.padEnd(9)}${m.label.padEnd(22)}${fmt(m.requestsPerSecond).padStart(8)} ${unit}/s${latency}` +
    `   (${fmt(m.requests)} ${m.unit ?? 'requests'})`
  );
}

interface Ratios {
  /** target req/s ÷ baseline req/s: 0.5 means half the baseline's throughput. */
  readonly throughput: number;
  /** target p99 ÷ baseline p99: 2 means twice the baseline's tail latency (absent: throughput only). */
  readonly p99: number | undefined;
}

function ratios(result: ScenarioResult): Ratios {
  return {
    throughput: result.target.requestsPerSecond / result.baseline.requestsPerSecond,
    p99:
      result.target.latencyMs === undefined || result.baseline.latencyMs === undefined
        ? undefined
        : result.target.latencyMs.p99 / Math.max(result.baseline.latencyMs.p99, 0.001),
  };
}

async function main({
  selected,
  load,
  list,
}: {
  selected: Scenario[];
  load: LoadOptions;
  list: boolean;
}): Promise<number> {
  if (list) {
    for (const s of scenarios)
      say(`${s.name.padEnd(16)}${s.description}${s.optional === true ? ' (only when named)' : ''}`);
    return 0;
  }
  const startedAt = new Date();
  const machine = {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    loadAverage: os.loadavg(),
  };
  say(
    `bench: ${selected.length} scenario(s), ${load.connections} connections, ${load.durationSeconds} s measured ` +
      `after ${load.warmupSeconds} s warm-up, per side; ${machine.cpus} CPUs, node ${machine.node}`,
  );

  const results: { scenario: string; description: string; result: ScenarioResult; ratio: Ratios }[] = [];
  for (const scenario of selected) {
    say();
    say(`${scenario.name}: ${scenario.description}`);
    const result = await scenario.run(load);
    const ratio = ratios(result);
    say(row('target', result.target));
    say(row('baseline', result.baseline));
    say(
      `  ratio    throughput ${ratio.throughput.toFixed(2)} × baseline` +
        (ratio.p99 === undefined ? '' : `, p99 latency ${ratio.p99.toFixed(2)} × baseline`),
    );
    for (const note of result.notes) say(`  note     ${note}`);
    results.push({ scenario: scenario.name, description: scenario.description, result, ratio });
  }

  const dir = path.join(projectRoot(), 'bench', 'results');
  fs.mkdirSync(dir, { recursive: true });
  const stem = path.join(dir, startedAt.toISOString().replace(/[:.]/g, '-'));
  fs.writeFileSync(
    `${stem}.json`,
    `${JSON.stringify({ startedAt: startedAt.toISOString(), machine, load, results }, null, 2)}\n`,
  );
  const table = markdownTable(results);
  fs.writeFileSync(
    `${stem}.md`,
    `# Benchmark ${startedAt.toISOString()}\n\n${machine.cpus} × ${machine.cpuModel}, ${machine.memoryGiB} GiB, ` +
      `node ${machine.node}; ${load.connections} connections, ${load.durationSeconds} s measured after ` +
      `${load.warmupSeconds} s warm-up per side; load average at start ${machine.loadAverage.map((l) => l.toFixed(2)).join(' ')}\n\n` +
      `${table}\n`,
  );
  say();
  say(table);
  say();
  say(`results written to ${path.relative(process.cwd(), stem)}.json and .md`);
  // Charts next to the JSON (bench/lib/plots.ts); `npm run bench:plot -- <file.json>` redraws them.
  const charts = await writeCharts(`${stem}.json`);
  say(`charts: ${charts.map((c) => path.relative(process.cwd(), c)).join(', ')}`);
  return 0;
}

/** One row per scenario: target and baseline side by side, and the ratio (the figure that travels). */
function markdownTable(results: readonly { scenario: string; result: ScenarioResult; ratio: Ratios }[]): string {
  const ms = (m: Measurement, key: 'p50' | 'p99'): string =>
    m.latencyMs === undefined ? '—' : fmt(m.latencyMs[key], 1);
  const rate = (m: Measurement): string => `${fmt(m.requestsPerSecond)} ${m.unit ?? 'req'}/s`;
  const rss = (m: Measurement): string => (m.peakRssMiB === undefined ? '—' : `${fmt(m.peakRssMiB)} MiB`);
  const lines = [
    '| scenario | target | throughput | p50 ms | p99 ms | peak RSS | baseline | throughput | p50 ms | p99 ms | ratio | p99 ratio |',
    '| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const { scenario, result, ratio } of results) {
    const { target: t, baseline: b } = result;
    lines.push(
      `| ${scenario} | ${t.label} | ${rate(t)} | ${ms(t, 'p50')} | ${ms(t, 'p99')} | ${rss(t)} | ${b.label} | ${rate(b)} | ` +
        `${ms(b, 'p50')} | ${ms(b, 'p99')} | ${ratio.throughput.toFixed(2)}× | ${ratio.p99 === undefined ? '—' : `${ratio.p99.toFixed(2)}×`} |`,
    );
  }
  return lines.join('\n');
}

if (isMain(import.meta.url)) process.exitCode = await runProgram(benchProgram(), process.argv.slice(2));
