/**
 * GET /metrics on a live service after traffic: promtool accepts it (`promtool check metrics`: the
 * format and Prometheus's naming lint; required in CI), it parses into families each with HELP and
 * TYPE (the pure check, which holds without promtool), its families are exactly the catalogue's and
 * prom-client's process metrics, and request durations are labelled by operation and status class,
 * never by path.
 */
import { expect } from 'chai';
import { CATALOGUE } from '../../src/metrics/catalogue.js';
import { processMetrics } from '../../src/metrics/metrics.js';
import { startTestService, type TestService } from '../support/harness.js';
import { exercisedScrape, PAN_IN_PATH } from '../support/metrics-scrape.js';
import { parseExposition, type Family } from '../support/prometheus-text.js';
import { requirePromtool, runPromtool } from '../support/promtool.js';

describe('GET /metrics: a valid Prometheus exposition from prom-client', function () {
  let svc: TestService;
  let text: string;
  let families: Map<string, Family>;

  before(async function () {
    svc = await startTestService();
    text = await exercisedScrape(svc);
    families = parseExposition(text);
  });
  after(async () => svc?.close());

  it('when scraped, then promtool check metrics finds nothing to report', function () {
    const promtool = requirePromtool(this);
    const result = runPromtool(promtool, ['check', 'metrics'], text);
    expect(result.output.trim(), 'promtool check metrics').to.equal('');
    expect(result.status).to.equal(0);
  });

  it('when scraped, then every family has HELP and TYPE (the pure parser check)', function () {
    expect(families.size).to.be.greaterThan(20);
    for (const family of families.values()) {
      expect(family.help, family.name).to.be.a('string').and.not.equal('');
      expect(family.type, family.name).to.be.oneOf(['counter', 'gauge', 'histogram']);
    }
  });

  it("when scraped, then the families are exactly the catalogue's and the process metrics", async function () {
    const expected = [
      ...CATALOGUE.map((d) => `${d.name} ${d.type}`),
      ...(await processMetrics().getMetricsAsJSON()).map((m) => `${m.name} ${m.type}`),
    ].sort();
    expect([...families.values()].map((f) => `${f.name} ${f.type}`).sort()).to.deep.equal(expected);
  });

  it('when requests were served, then their durations are labelled by operationId and status class only', function () {
    const durations = families.get('http_request_duration_seconds') as Family;
    const operations = new Set(svc.service.spec.operations.map((o) => o.operationId));
    const counts = durations.samples.filter((s) => s.name === 'http_request_duration_seconds_count');
    for (const sample of durations.samples) {
      expect(Object.keys(sample.labels).filter((l) => l !== 'le')).to.deep.equal(['operation', 'status_class']);
      expect(
        operations.has(sample.labels['operation'] as string) || sample.labels['operation'] === 'unmatched',
      ).to.equal(true);
      expect(sample.labels['status_class']).to.match(/^[1-5]xx$/);
    }
    const count = (operation: string, statusClass: string) =>
      counts.find((s) => s.labels['operation'] === operation && s.labels['status_class'] === statusClass)?.value ?? 0;
    expect(count('receivePlatformWebhook', '2xx')).to.equal(1);
    expect(count('receivePlatformWebhook', '4xx')).to.equal(1);
    expect(count('getCurrentPrincipal', '2xx')).to.equal(1);
    expect(count('unmatched', '4xx')).to.equal(1);
    expect(text).not.to.contain(PAN_IN_PATH);
    expect(text).not.to.contain('/v1/');
  });

  it('when a delivery was applied, then the webhook outcome, the batch size and the key-ring generation are there', function () {
    const value = (family: string, name: string, labels: Record<string, string> = {}) =>
      families
        .get(family)
        ?.samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
    expect(
      value('webhook_deliveries_total', 'webhook_deliveries_total', { provider: 'platform', outcome: 'applied' }),
    ).to.equal(1);
    expect(
      value('webhook_deliveries_total', 'webhook_deliveries_total', {
        provider: 'platform',
        outcome: 'WEBHOOK_SIGNATURE_INVALID',
      }),
    ).to.equal(1);
    expect(value('payment_batch_size', 'payment_batch_size_count')).to.equal(1);
    expect(value('payment_batch_size', 'payment_batch_size_bucket', { le: '1' })).to.equal(1);
    expect(value('key_ring_generation', 'key_ring_generation')).to.equal(svc.service.keyRing.loadedGeneration);
    expect(svc.service.keyRing.loadedGeneration).to.be.at.least(0);
    expect(value('metrics_label_values_refused_total', 'metrics_label_values_refused_total')).to.equal(undefined);
  });
});
