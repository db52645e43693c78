/**
 * The metrics registry (src/metrics/metrics.ts, on prom-client): a private registry per instance, label
 * values guarded where they enter (no card data, code-shaped words only, bounded series), and an
 * exposition in which every family has its HELP and TYPE (parsed without promtool, so the check holds
 * where promtool is absent; test/metrics/exposition.test.ts runs promtool on a live scrape).
 */
import { expect } from 'chai';
import { METRICS } from '../../src/metrics/catalogue.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { TEST_PANS } from '../support/pans.js';
import { parseExposition } from '../support/prometheus-text.js';

const refused = (metrics: Metrics, reason: string) =>
  metrics.value('metrics_label_values_refused_total', { metric: 'webhook_deliveries_total', reason });

describe('metrics registry: prom-client behind closed label vocabularies', () => {
  it('when two instances in one process register the same families, then each keeps its own series', async () => {
    const a = new Metrics();
    const b = new Metrics();
    const countA = a.counter(METRICS.webhookDeliveries);
    b.counter(METRICS.webhookDeliveries);
    countA({ provider: 'platform', outcome: 'applied' }, 2);
    expect(await a.value('webhook_deliveries_total', { provider: 'platform', outcome: 'applied' })).to.equal(2);
    expect(await b.value('webhook_deliveries_total', { provider: 'platform', outcome: 'applied' })).to.equal(0);
  });

  it('when one instance registers a family twice, then it is refused (a name means one thing)', () => {
    const metrics = new Metrics();
    metrics.counter(METRICS.outboundDeadLetters);
    expect(() => metrics.counter(METRICS.outboundDeadLetters)).to.throw(/outbound_dead_letters_total/);
  });

  it('when a label value holds a card number, then the series says redacted, the number is nowhere, and the refusal is counted', async () => {
    const metrics = new Metrics();
    const delivered = metrics.counter(METRICS.webhookDeliveries);
    const pan = TEST_PANS.visa[0] as string;
    delivered({ provider: 'platform', outcome: pan });
    delivered({ provider: 'platform', outcome: `pan-${pan.slice(0, 8)}-${pan.slice(8)}` });
    const text = await metrics.render();
    expect(text).to.contain('webhook_deliveries_total{outcome="redacted",provider="platform"} 2');
    expect(text.replace(/\D/g, ' ')).not.to.contain(pan.slice(0, 12));
    expect(await refused(metrics, 'card_data')).to.equal(2);
  });

  it('when a label value is not a short code-shaped word, then it is recorded as redacted', async () => {
    const metrics = new Metrics();
    const delivered = metrics.counter(METRICS.webhookDeliveries);
    for (const outcome of ['with space', '/v1/cards', 'x'.repeat(65), '', 'quote"d'])
      delivered({ provider: 'adyen', outcome });
    expect(await metrics.value('webhook_deliveries_total', { provider: 'adyen', outcome: 'redacted' })).to.equal(5);
    expect(await refused(metrics, 'shape')).to.equal(5);
  });

  it('when a family reaches its series limit, then new label sets are recorded as other', async () => {
    const metrics = new Metrics(3);
    const delivered = metrics.counter(METRICS.webhookDeliveries);
    for (const outcome of ['a', 'b', 'c', 'd', 'e', 'a']) delivered({ provider: 'stripe', outcome });
    expect(await metrics.value('webhook_deliveries_total', { provider: 'stripe', outcome: 'a' })).to.equal(2);
    expect(await metrics.value('webhook_deliveries_total', { provider: 'other', outcome: 'other' })).to.equal(2);
    expect(await refused(metrics, 'cardinality')).to.equal(2);
  });

  it('when a histogram is bound to a label set, then its observations land in that series', async () => {
    const metrics = new Metrics();
    const histogram = metrics.histogram(METRICS.httpRequestDuration);
    const observe = histogram.bind({ operation: 'getBalance', status_class: '2xx' });
    observe(0.004);
    observe(0.012);
    histogram.observe({ operation: 'getBalance', status_class: '5xx' }, 0.2);
    const text = await metrics.render();
    expect(text).to.contain(
      'http_request_duration_seconds_bucket{le="0.005",operation="getBalance",status_class="2xx"} 1',
    );
    expect(text).to.contain('http_request_duration_seconds_count{operation="getBalance",status_class="2xx"} 2');
    expect(text).to.contain('http_request_duration_seconds_count{operation="getBalance",status_class="5xx"} 1');
  });

  it('when rendered, then the exposition parses into families, each with HELP and TYPE, process metrics included', async () => {
    const metrics = new Metrics();
    metrics.counter(METRICS.webhookDeliveries)({ provider: 'platform', outcome: 'applied' });
    metrics.histogram(METRICS.paymentBatchSize).observe({}, 3);
    metrics.gauge(METRICS.keyRingGeneration, () => [{ labels: {}, value: 4 }]);
    const families = parseExposition(await metrics.render());
    for (const name of ['webhook_deliveries_total', 'payment_batch_size', 'key_ring_generation']) {
      expect(families.get(name)?.samples.length, name).to.be.greaterThan(0);
    }
    for (const name of [
      'nodejs_eventloop_lag_p99_seconds',
      'nodejs_heap_size_used_bytes',
      'nodejs_gc_duration_seconds',
    ]) {
      expect(families.has(name), name).to.equal(true);
    }
    expect(families.get('payment_batch_size')?.type).to.equal('histogram');
    for (const family of families.values()) expect(family.help, family.name).to.be.a('string').and.not.equal('');
  });

  it('the parser refuses a sample without HELP and TYPE (the check can fail)', () => {
    expect(() => parseExposition('# HELP a_total A.\n# TYPE a_total counter\na_total 1\nb_total 2\n')).to.throw(
      /sample without HELP and TYPE/,
    );
    expect(() => parseExposition('# HELP h H.\n# TYPE h histogram\nh 1\n')).to.throw(/sample without HELP/);
  });
});
