/**
 * docs/grafana/loyalty-vault.json, the Grafana dashboard over /metrics: every PromQL query in it is
 * valid (promtool check rules; required in CI) and names only metrics a live scrape exposes (a
 * histogram's `_bucket`, `_sum` and `_count` series included), and it covers what operators watch.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import YAML from 'yaml';
import { projectPath } from '../../src/config/project-root.js';
import { startTestService, type TestService } from '../support/harness.js';
import { exercisedScrape } from '../support/metrics-scrape.js';
import { exposedNames, parseExposition } from '../support/prometheus-text.js';
import { metricNames, withGrafanaVariables } from '../support/promql.js';
import { requirePromtool, runPromtool } from '../support/promtool.js';

interface Panel {
  readonly type: string;
  readonly title: string;
  readonly targets?: readonly { readonly expr?: string }[];
  readonly panels?: readonly Panel[];
  readonly datasource?: { readonly uid?: string };
}
interface Dashboard {
  readonly panels: readonly Panel[];
  readonly templating: { readonly list: readonly { readonly name: string; readonly definition?: string }[] };
}

const DASHBOARD = 'docs/grafana/loyalty-vault.json';

function panelsOf(panels: readonly Panel[]): Panel[] {
  return panels.flatMap((p) => [p, ...panelsOf(p.panels ?? [])]);
}

describe(`${DASHBOARD}: the dashboard's queries name only metrics /metrics has`, function () {
  const dashboard = JSON.parse(fs.readFileSync(projectPath(DASHBOARD), 'utf8')) as Dashboard;
  const panels = panelsOf(dashboard.panels).filter((p) => p.type !== 'row');
  const queries = panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr ?? '' })));
  // Template variables: `label_values(<selector>, <label>)`, whose selector is PromQL.
  const variables = dashboard.templating.list
    .filter((v) => v.definition !== undefined)
    .map((v) => ({
      panel: `variable $${v.name}`,
      expr: /^label_values\((.*),\s*\w+\)$/.exec(v.definition as string)?.[1] ?? '',
    }));
  let svc: TestService;
  let exposed: Set<string>;

  before(async function () {
    svc = await startTestService();
    exposed = exposedNames(parseExposition(await exercisedScrape(svc)));
  });
  after(async () => svc?.close());

  it('has panels, each with at least one query on the data-source variable', function () {
    expect(panels.length).to.be.greaterThan(10);
    for (const panel of panels) {
      expect(panel.targets?.length ?? 0, panel.title).to.be.greaterThan(0);
      expect(panel.datasource?.uid, panel.title).to.equal('${datasource}');
    }
  });

  it('when its queries are read, then every metric they name is in a live scrape', function () {
    for (const { panel, expr } of [...queries, ...variables]) {
      const names = metricNames(expr);
      expect(names, `${panel}: ${expr}`).not.to.be.empty;
      const missing = names.filter((n) => !exposed.has(n));
      expect(missing, `${panel}: ${expr} names metrics /metrics does not have`).to.deep.equal([]);
    }
  });

  it('when promtool checks its queries, then they are valid PromQL', function () {
    const promtool = requirePromtool(this);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-dashboard-'));
    try {
      const rules = [...queries, ...variables].map((q, i) => ({
        record: `dashboard:query_${i}`,
        expr: withGrafanaVariables(q.expr),
      }));
      const file = path.join(dir, 'dashboard-rules.yaml');
      fs.writeFileSync(file, YAML.stringify({ groups: [{ name: 'dashboard', rules }] }));
      const result = runPromtool(promtool, ['check', 'rules', file]);
      expect(result.status, result.output).to.equal(0);
      expect(result.output).to.contain(`${rules.length} rules found`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('covers requests per operation, errors, webhooks, batches, the outbox, the process and the key ring', function () {
    const used = new Set(queries.flatMap((q) => metricNames(q.expr)));
    for (const name of [
      'http_request_duration_seconds_count',
      'http_request_duration_seconds_bucket',
      'webhook_deliveries_total',
      'payment_batch_size_bucket',
      'outbound_deliveries_pending',
      'outbound_delivery_lag_seconds',
      'outbound_delivery_duration_seconds_bucket',
      'nodejs_eventloop_lag_p99_seconds',
      'nodejs_heap_size_used_bytes',
      'nodejs_gc_duration_seconds_sum',
      'key_ring_generation',
    ]) {
      expect(used.has(name), name).to.equal(true);
    }
    expect(queries.some((q) => q.expr.includes('status_class="5xx"'))).to.equal(true);
    expect(queries.some((q) => q.expr.includes('histogram_quantile(0.99'))).to.equal(true);
  });
});
