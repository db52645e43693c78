/**
 * The bench's charts (bench/lib/plots.ts), from a small synthetic results file of the shape
 * bench/run.ts writes: no benchmark runs. Each SVG must be well-formed XML, name its scenarios and
 * axes, and a scenario without a baseline must be drawn alone, labelled, not break the chart.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Measurement } from '../../bench/lib/load.js';
import type { LoadOptions, ScenarioResult } from '../../bench/lib/scenario.js';
import { chartSpecs, renderCharts, writeCharts, type BenchResultsFile, type Chart } from '../../bench/lib/plots.js';

const measured = (label: string, requestsPerSecond: number, p99?: number): Measurement => ({
  label,
  requestsPerSecond,
  ...(p99 === undefined ? {} : { latencyMs: { p50: p99 / 2, p90: p99 * 0.8, p99, max: p99 * 2 } }),
  requests: Math.round(requestsPerSecond * 10),
  durationSeconds: 10,
  non2xx: 0,
  errors: 0,
});

const ratio = { throughput: 0.5, p99: 2 };

/** What bench/run.ts writes, cut down: startedAt, machine, load, results[{ scenario, description, result, ratio }]. */
const written: {
  startedAt: string;
  machine: Record<string, unknown>;
  load: LoadOptions;
  results: { scenario: string; description: string; result: ScenarioResult; ratio: typeof ratio }[];
} = {
  startedAt: '2026-12-06T12:00:00.000Z',
  machine: { cpus: 2, cpuModel: 'test', memoryGiB: 4, node: 'v20', platform: 'linux', loadAverage: [1, 1, 1] },
  load: { connections: 10, durationSeconds: 10, warmupSeconds: 3 },
  results: [
    {
      scenario: 'auth-get',
      description: 'GET /v1/whoami',
      result: {
        target: measured('GET /v1/whoami', 4000, 4),
        baseline: measured('express JSON echo', 8000, 2),
        notes: [],
      },
      ratio,
    },
    {
      scenario: 'webhooks',
      description: 'signed deliveries',
      result: {
        target: measured('POST /v1/webhooks/platform', 800, 20),
        baseline: measured('pgbench', 900, 24),
        notes: [],
      },
      ratio,
    },
    {
      scenario: 'webhooks-64',
      description: 'the same at 64',
      result: { target: measured('POST ×64', 1400, 68), baseline: measured('pgbench', 800, 150), notes: [] },
      ratio,
    },
    {
      scenario: 'rotate',
      description: 'keys reencrypt',
      result: {
        target: { ...measured('keys reencrypt', 40000), unit: 'rows' },
        baseline: { ...measured('node:crypto', 120000), unit: 'rows' },
        notes: [],
      },
      ratio,
    },
    {
      scenario: 'soak',
      description: 'webhooks + lookups',
      result: {
        target: measured('minute 3 (last)', 1000, 19),
        baseline: measured('minute 1 (first)', 930, 35),
        notes: [],
        memory: {
          samples: [0, 2, 4, 6, 8].map((seconds, i) => ({ seconds, rssMiB: 140 + i, heapUsedMiB: 30 })),
          perMinute: [{ minute: 1, floorMiB: 140, topMiB: 144 }],
        },
      },
      ratio,
    },
  ],
};
/** The charts read that file as it is. */
const results: BenchResultsFile = written;

/** Well-formed enough: one root element, every tag closed in order, attributes quoted, entities known. */
function expectWellFormedXml(xml: string): void {
  const body = xml.trim().replace(/^<\?xml[^>]*\?>\s*/, '');
  const stack: string[] = [];
  let roots = 0;
  const token =
    /<(\/?)([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+="[^"<]*")*)\s*(\/?)>|<!--[\s\S]*?-->|<|&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)/g;
  for (const match of body.matchAll(token)) {
    const [whole, closing, name, , selfClosing] = match;
    if (whole.startsWith('<!--')) continue;
    if (name === undefined)
      throw new Error(`stray "${whole}" at ${match.index}: ${body.slice(match.index, match.index + 60)}`);
    if (closing === '/') {
      const open = stack.pop();
      if (open !== name) throw new Error(`</${name}> closes <${open ?? 'nothing'}> at ${match.index}`);
    } else if (selfClosing !== '/') {
      if (stack.length === 0) roots += 1;
      stack.push(name);
    } else if (stack.length === 0) roots += 1;
  }
  expect(stack, 'unclosed elements').to.deep.equal([]);
  expect(roots, 'root elements').to.equal(1);
  expect(body.startsWith('<svg')).to.equal(true);
}

/** The text a reader sees: every <text> element's content, entities decoded. */
const texts = (svg: string): string[] =>
  [...svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) =>
    (m[1] as string)
      .replace(/&amp;/g, '&')
      .replace(/&lt;/g, '<')
      .replace(/&gt;/g, '>')
      .replace(/&quot;/g, '"'),
  );

const byName = (charts: readonly Chart[], name: string): string => {
  const chart = charts.find((c) => c.name === name);
  if (chart === undefined) throw new Error(`no ${name} chart among ${charts.map((c) => c.name).join(', ')}`);
  return chart.svg;
};

describe('bench charts (bench/lib/plots.ts)', function () {
  let charts: Chart[];

  before(async function () {
    charts = await renderCharts(results);
  });

  it('draws the four charts of a run with a sweep and a soak, each well-formed SVG', function () {
    expect(charts.map((c) => c.name)).to.deep.equal(['throughput', 'p99', 'sweep', 'soak']);
    for (const chart of charts) expectWellFormedXml(chart.svg);
  });

  it('throughput: every scenario against its baseline, the ratio over the service, rows/s apart', function () {
    const seen = texts(byName(charts, 'throughput'));
    for (const name of ['auth-get', 'webhooks', 'webhooks-64', 'rotate (rows/s)', 'soak'])
      expect(seen).to.include(name);
    expect(seen).to.include('throughput (req/s)');
    expect(seen).to.include.members(['service', 'baseline']);
    expect(seen).to.include('0.50×'); // auth-get: 4,000 against 8,000
    expect(seen).to.include('1.75×'); // webhooks-64: 1,400 against 800
    expect(seen).to.include('0.33×'); // rotate: 40,000 rows/s against 120,000
  });

  it('p99: the scenarios with latencies only, their p99 ratio', function () {
    const seen = texts(byName(charts, 'p99'));
    expect(seen).to.include.members(['auth-get', 'webhooks', 'webhooks-64', 'soak', 'p99 latency (ms)', '2.00×']);
    expect(seen).not.to.include('rotate');
  });

  it('sweep: webhooks at 10 (the run) and 64 connections, throughput and p99 against connections', function () {
    const seen = texts(byName(charts, 'sweep'));
    expect(seen).to.include('Concurrency sweep: webhooks');
    expect(seen).to.include.members(['connections', 'throughput (req/s)', 'p99 latency (ms)', 'service', 'baseline']);
    const sweep = chartSpecs(results).find((c) => c.name === 'sweep')?.spec as {
      data: { values: { connections: number; side: string }[] };
    };
    expect(sweep.data.values.map((v) => `${v.side}@${v.connections}`)).to.deep.equal([
      'service@10',
      'baseline@10',
      'service@64',
      'baseline@64',
    ]);
  });

  it('soak: RSS and heap over time from every sample', function () {
    const seen = texts(byName(charts, 'soak'));
    expect(seen).to.include.members(['time (minutes)', 'memory (MiB)', 'RSS', 'heap used']);
    expect(seen).to.include("soak: the service's memory over time");
  });

  it('a missing baseline: the scenario is drawn alone, labelled "no baseline"', async function () {
    const lonely = {
      results: [
        { scenario: 'auth-get', result: { target: measured('GET /v1/whoami', 4000, 4) } },
        {
          scenario: 'balance',
          result: { target: measured('GET …/balance', 2500, 8), baseline: measured('echo', 0, 3) },
        },
      ],
    };
    const drawn = await renderCharts(lonely);
    // One scenario per run, no memory: no sweep, no soak.
    expect(drawn.map((c) => c.name)).to.deep.equal(['throughput', 'p99']);
    for (const chart of drawn) {
      expectWellFormedXml(chart.svg);
      const seen = texts(chart.svg);
      expect(seen).to.include.members(['auth-get', 'balance', 'no baseline']);
      expect(seen).not.to.include('baseline'); // no baseline bar anywhere
    }
    // The throughput data holds no baseline row at all.
    const throughput = chartSpecs(lonely).find((c) => c.name === 'throughput')?.spec as {
      data: { values: { side: string }[] };
    };
    expect(throughput.data.values.map((v) => v.side)).to.deep.equal(['service', 'service']);
  });

  it('the soak per minute when only the floor and top are known (the tabulated soak)', async function () {
    const drawn = await renderCharts({
      results: [
        {
          scenario: 'soak',
          result: {
            target: measured('minute 2', 1000, 19),
            baseline: measured('minute 1', 930, 35),
            memory: { perMinute: [1, 2].map((minute) => ({ minute, floorMiB: 140, topMiB: 210 })) },
          },
        },
      ],
    });
    const seen = texts(byName(drawn, 'soak'));
    expect(seen).to.include.members(['minute', 'RSS, lowest sample', 'RSS, highest sample']);
  });

  it('writeCharts puts <stem>.<chart>.svg next to the JSON and refuses a file that is not bench results', async function () {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plots-test-'));
    try {
      const file = path.join(dir, 'run.json');
      fs.writeFileSync(file, JSON.stringify(results));
      const written = await writeCharts(file);
      expect(written.map((w) => path.basename(w))).to.deep.equal([
        'run.throughput.svg',
        'run.p99.svg',
        'run.sweep.svg',
        'run.soak.svg',
      ]);
      for (const w of written) expectWellFormedXml(fs.readFileSync(w, 'utf8'));
      const other = path.join(dir, 'other.json');
      fs.writeFileSync(other, '{"scenario": "x"}');
      let refused: unknown;
      await writeCharts(other).catch((error: unknown) => (refused = error));
      expect(String(refused)).to.match(/no "results" array/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the XML check itself refuses an unclosed or crossed element', function () {
    expect(() => expectWellFormedXml('<svg><g><text>a</g></text></svg>')).to.throw(/closes/);
    expect(() => expectWellFormedXml('<svg><g></svg>')).to.throw();
    expect(() => expectWellFormedXml('<svg><text>a & b</text></svg>')).to.throw(/stray/);
  });
});
