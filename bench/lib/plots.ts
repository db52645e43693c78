/**
 * Charts of a bench run, as SVG: Vega-Lite specs compiled to Vega and rendered headless
 * (`renderer: 'none'`, no browser, no canvas; text widths are estimated).
 *
 * From the results JSON `npm run bench` writes (bench/results/<time>.json), at most four charts:
 * - `throughput`: per scenario, the service's throughput against its same-run baseline, the ratio
 *   over the service's bar (each scenario on its own scale: req/s and rows/s do not mix);
 * - `p99`: the same for p99 latency (scenarios with latencies only);
 * - `sweep`: throughput and p99 against connections, for a scenario measured at several concurrencies
 *   (`webhooks` at the run's connections and `webhooks-64` at 64; or `webhooks-16`, `webhooks-32`…);
 * - `soak`: the service's RSS over the soak (a sample every 2 s; the heap too when recorded), or per
 *   minute the lowest and highest sample when only those are known.
 * A scenario without a usable baseline is drawn alone, labelled "no baseline".
 *
 * Each is written next to the JSON as `<stem>.<chart>.svg`. `npm run bench` calls {@link writeCharts}
 * at its end; `npm run bench:plot -- <file.json>…` re-renders from an existing file.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as vega from 'vega';
import * as vl from 'vega-lite';
import type { Measurement } from './load.js';
import type { MemorySeries } from './scenario.js';

/** The part of a results JSON the charts read (what bench/run.ts writes; extra fields are ignored). */
export interface BenchResultsFile {
  readonly startedAt?: string;
  readonly load?: { readonly connections?: number };
  readonly results: readonly {
    readonly scenario: string;
    readonly result: {
      readonly target: Measurement;
      /** Absent, or without throughput: the scenario is drawn alone. */
      readonly baseline?: Measurement | undefined;
      readonly memory?: MemorySeries | undefined;
    };
  }[];
}

/** One panel of a Vega-Lite `hconcat` (the type vega-lite does not export by name). */
type ConcatPanel = Extract<vl.TopLevelSpec, { hconcat: unknown }>['hconcat'][number];

export type ChartName = 'throughput' | 'p99' | 'sweep' | 'soak';

export interface Chart {
  readonly name: ChartName;
  readonly svg: string;
}

const SERVICE = 'service';
const BASELINE = 'baseline';
const COLOURS = { domain: [SERVICE, BASELINE], range: ['#1f77b4', '#bbbbbb'] };

const usable = (m: Measurement | undefined): m is Measurement =>
  m !== undefined && Number.isFinite(m.requestsPerSecond) && m.requestsPerSecond > 0;

const ratioText = (target: number, baseline: number | undefined): string =>
  baseline === undefined || !(baseline > 0) ? 'no baseline' : `${(target / baseline).toFixed(2)}×`;

const subtitle = (file: BenchResultsFile): string[] =>
  file.startedAt === undefined ? [] : [`npm run bench, ${file.startedAt}`];

/** Grouped bars, one column per scenario (its own y scale), the ratio over the service's bar. */
function barsSpec(
  file: BenchResultsFile,
  rows: readonly { scenario: string; side: string; value: number; ratio: string; order: number }[],
  title: string,
  yTitle: string,
): vl.TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: title, subtitle: subtitle(file) },
    data: { values: rows.map((r) => ({ ...r })) },
    facet: {
      column: {
        field: 'scenario',
        type: 'nominal',
        title: null,
        sort: { field: 'order', op: 'min' },
        header: { labelAngle: 0 },
      },
    },
    spec: {
      width: 70,
      height: 180,
      layer: [
        {
          mark: 'bar',
          encoding: {
            x: { field: 'side', type: 'nominal', title: null, sort: [SERVICE, BASELINE], axis: { labelAngle: -45 } },
            y: { field: 'value', type: 'quantitative', title: yTitle },
            color: { field: 'side', type: 'nominal', scale: COLOURS, legend: null },
          },
        },
        {
          transform: [{ filter: `datum.side === '${SERVICE}'` }],
          mark: { type: 'text', dy: -6, fontWeight: 'bold' },
          encoding: {
            x: { field: 'side', type: 'nominal', sort: [SERVICE, BASELINE] },
            y: { field: 'value', type: 'quantitative' },
            text: { field: 'ratio', type: 'nominal' },
          },
        },
      ],
    },
    resolve: { scale: { y: 'independent' } },
  };
}

function throughputSpec(file: BenchResultsFile): vl.TopLevelSpec | undefined {
  const rows = file.results.flatMap(({ scenario, result: { target, baseline } }, order) => {
    const unit = target.unit ?? 'req';
    const name = unit === 'req' ? scenario : `${scenario} (${unit}/s)`;
    const b = usable(baseline) ? baseline.requestsPerSecond : undefined;
    const ratio = ratioText(target.requestsPerSecond, b);
    return [
      { scenario: name, side: SERVICE, value: target.requestsPerSecond, ratio, order },
      ...(b === undefined ? [] : [{ scenario: name, side: BASELINE, value: b, ratio, order }]),
    ];
  });
  if (rows.length === 0) return undefined;
  return barsSpec(file, rows, 'Throughput, service against its same-run baseline', 'throughput (req/s)');
}

function p99Spec(file: BenchResultsFile): vl.TopLevelSpec | undefined {
  const rows = file.results.flatMap(({ scenario, result: { target, baseline } }, order) => {
    if (target.latencyMs === undefined) return [];
    const b = usable(baseline) ? baseline.latencyMs?.p99 : undefined;
    // p99 ratio: how many times the baseline's tail latency (a baseline at 0 ms counts as 1 ms).
    const ratio = b === undefined ? 'no baseline' : `${(target.latencyMs.p99 / Math.max(b, 1)).toFixed(2)}×`;
    return [
      { scenario, side: SERVICE, value: target.latencyMs.p99, ratio, order },
      ...(b === undefined ? [] : [{ scenario, side: BASELINE, value: b, ratio, order }]),
    ];
  });
  if (rows.length === 0) return undefined;
  return barsSpec(file, rows, 'p99 latency, service against its same-run baseline', 'p99 latency (ms)');
}

/** `webhooks-64` → family `webhooks` at 64 connections; other names at the run's connections. */
function connectionsOf(scenario: string, fallback: number | undefined): { family: string; connections?: number } {
  const match = /^(.+)-(\d+)$/.exec(scenario);
  if (match !== null) return { family: match[1] as string, connections: Number(match[2]) };
  return fallback === undefined ? { family: scenario } : { family: scenario, connections: fallback };
}

function sweepSpec(file: BenchResultsFile): vl.TopLevelSpec | undefined {
  const points: { family: string; connections: number; side: string; throughput: number; p99?: number }[] = [];
  for (const { scenario, result } of file.results) {
    const { family, connections } = connectionsOf(scenario, file.load?.connections);
    if (connections === undefined) continue;
    for (const [side, m] of [
      [SERVICE, result.target],
      [BASELINE, usable(result.baseline) ? result.baseline : undefined],
    ] as const) {
      if (m === undefined) continue;
      points.push({
        family,
        connections,
        side,
        throughput: m.requestsPerSecond,
        ...(m.latencyMs === undefined ? {} : { p99: m.latencyMs.p99 }),
      });
    }
  }
  const swept = new Set(
    [...new Set(points.map((p) => p.family))].filter(
      (f) => new Set(points.filter((p) => p.family === f).map((p) => p.connections)).size >= 2,
    ),
  );
  const values = points
    .filter((p) => swept.has(p.family))
    .map((p) => ({ ...p, series: swept.size === 1 ? p.side : `${p.family} ${p.side}` }));
  if (values.length === 0) return undefined;
  const panel = (field: 'throughput' | 'p99', yTitle: string): ConcatPanel => ({
    width: 300,
    height: 220,
    transform: [{ filter: `isValid(datum.${field})` }],
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'connections', type: 'quantitative', title: 'connections', scale: { zero: true } },
      y: { field, type: 'quantitative', title: yTitle },
      color:
        swept.size === 1
          ? {
              field: 'series',
              type: 'nominal',
              title: null,
              scale: { domain: [SERVICE, BASELINE], range: ['#1f77b4', '#888888'] },
            }
          : { field: 'series', type: 'nominal', title: null },
    },
  });
  // A panel only for what was measured (a tabulated sweep may have throughput only).
  const panels = [
    panel('throughput', 'throughput (req/s)'),
    ...(values.some((v) => v.p99 !== undefined) ? [panel('p99', 'p99 latency (ms)')] : []),
  ];
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: `Concurrency sweep: ${[...swept].join(', ')}`, subtitle: subtitle(file) },
    data: { values },
    hconcat: panels,
  };
}

function soakSpec(file: BenchResultsFile): vl.TopLevelSpec | undefined {
  const soak = file.results.find((r) => r.result.memory !== undefined);
  const memory = soak?.result.memory;
  if (soak === undefined || memory === undefined) return undefined;
  const samples = memory.samples ?? [];
  const values =
    samples.length > 0
      ? samples.flatMap((s) => [
          { minutes: s.seconds / 60, series: 'RSS', MiB: s.rssMiB },
          ...(s.heapUsedMiB === undefined
            ? []
            : [{ minutes: s.seconds / 60, series: 'heap used', MiB: s.heapUsedMiB }]),
        ])
      : (memory.perMinute ?? []).flatMap((m) => [
          { minutes: m.minute, series: 'RSS, lowest sample', MiB: m.floorMiB },
          { minutes: m.minute, series: 'RSS, highest sample', MiB: m.topMiB },
        ]);
  if (values.length === 0) return undefined;
  const heap = samples.some((s) => s.heapUsedMiB !== undefined);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: {
      text: `${soak.scenario}: the service's memory over time`,
      subtitle: [
        ...subtitle(file),
        samples.length > 0
          ? `a sample every ${samples.length > 1 ? Math.round((samples[1]!.seconds - samples[0]!.seconds) * 10) / 10 : 2} s${heap ? '' : '; heap not recorded'}`
          : 'per minute, the lowest and highest of its samples (every 2 s)',
      ],
    },
    width: 520,
    height: 220,
    data: { values },
    mark: { type: 'line', point: samples.length === 0 },
    encoding: {
      x:
        samples.length > 0
          ? { field: 'minutes', type: 'quantitative', title: 'time (minutes)' }
          : { field: 'minutes', type: 'quantitative', title: 'minute', axis: { format: 'd', tickMinStep: 1 } },
      y: { field: 'MiB', type: 'quantitative', title: 'memory (MiB)', scale: { zero: true } },
      color: { field: 'series', type: 'nominal', title: null, legend: { orient: 'bottom', labelLimit: 0 } },
    },
  };
}

/** The Vega-Lite specs of the charts this file supports (a chart with no data is left out). */
export function chartSpecs(file: BenchResultsFile): { name: ChartName; spec: vl.TopLevelSpec }[] {
  const specs: [ChartName, vl.TopLevelSpec | undefined][] = [
    ['throughput', throughputSpec(file)],
    ['p99', p99Spec(file)],
    ['sweep', sweepSpec(file)],
    ['soak', soakSpec(file)],
  ];
  return specs.flatMap(([name, spec]) => (spec === undefined ? [] : [{ name, spec }]));
}

export async function renderCharts(file: BenchResultsFile): Promise<Chart[]> {
  const charts: Chart[] = [];
  for (const { name, spec } of chartSpecs(file)) {
    const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
    try {
      charts.push({ name, svg: await view.toSVG() });
    } finally {
      view.finalize();
    }
  }
  return charts;
}

/** Renders the charts of a results JSON next to it, as `<stem>.<chart>.svg`; returns their paths. */
export async function writeCharts(jsonFile: string): Promise<string[]> {
  const file = JSON.parse(fs.readFileSync(jsonFile, 'utf8')) as BenchResultsFile;
  if (!Array.isArray(file.results)) throw new Error(`${jsonFile}: no "results" array (not a bench results file)`);
  const stem = path.join(path.dirname(jsonFile), path.basename(jsonFile, '.json'));
  const written: string[] = [];
  for (const chart of await renderCharts(file)) {
    const out = `${stem}.${chart.name}.svg`;
    fs.writeFileSync(out, `${chart.svg}\n`);
    written.push(out);
  }
  return written;
}
