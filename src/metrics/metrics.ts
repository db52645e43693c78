/**
 * The service's metrics, on prom-client: one private {@link Registry} per {@link Metrics} (per service
 * instance, so several services in one process — the tests — never share or collide), holding the
 * families of the catalogue (./catalogue.ts) that the features register. The default process metrics
 * (event-loop lag, heap, GC, CPU, file descriptors) are process-wide facts, collected once per process
 * on a registry of their own and appended to every scrape: prom-client's collectors cannot be stopped,
 * so one per service would pile up timers and GC observers in a process that starts many.
 *
 * Label values are guarded where they enter: each family's label names are fixed by the catalogue, and
 * a value must look like a code-chosen word (`[A-Za-z0-9_.:-]{1,64}`) and hold no PAN-shaped digit run
 * (the card-data pre-scan), else it is recorded as `redacted`; a family that reaches
 * {@link MAX_SERIES_PER_METRIC} label sets records new ones as `other`. Both are counted in
 * `metrics_label_values_refused_total` (which should stay 0): no card data, bounded cardinality.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { mayHoldCardData } from '../card-data/card-data-guard.js';
import { METRICS, type MetricDefinition } from './catalogue.js';

export type LabelsOf<L extends string> = Readonly<Record<L, string>>;
export interface Sample<L extends string> {
  readonly labels: LabelsOf<L>;
  readonly value: number;
}

/** Label sets per family beyond which new ones are recorded as `other`. */
export const MAX_SERIES_PER_METRIC = 500;
const SAFE_LABEL_VALUE = /^[A-Za-z0-9_.:-]{1,64}$/;

let processRegistry: Registry | undefined;
const LINT_REJECTED_DEFAULTS = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];

/** The process-wide registry of prom-client's default metrics, created on first use. */
export function processMetrics(): Registry {
  if (processRegistry === undefined) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry, eventLoopMonitoringPrecision: 10 });
    // Gauges named like counters, which `promtool check metrics` rejects; sum(nodejs_active_handles)
    // and the like give the same totals.
    for (const name of LINT_REJECTED_DEFAULTS) processRegistry.removeSingleMetric(name);
  }
  return processRegistry;
}

export class Metrics {
  /** This instance's own families (the defaults live in {@link processMetrics}). */
  readonly registry = new Registry();
  private readonly guards = new Map<string, LabelGuard>();
  private readonly refused: Counter<string>;

  constructor(private readonly maxSeries = MAX_SERIES_PER_METRIC) {
    const def = METRICS.labelValuesRefused;
    this.refused = new Counter({
      name: def.name,
      help: def.help,
      labelNames: Object.keys(def.labels),
      registers: [this.registry],
    });
  }

  /** A counter: `add(labels, by = 1)`. */
  counter<L extends string>(def: MetricDefinition<L>): (labels: LabelsOf<L>, by?: number) => void {
    const counter = new Counter({ ...this.base(def), registers: [this.registry] });
    const guard = this.guard(def);
    return (labels, by = 1) => counter.inc(guard.safe(labels) as LabelsOf<L>, by);
  }

  /** A gauge read at scrape time from `read`. */
  gauge<L extends string>(def: MetricDefinition<L>, read: () => readonly Sample<L>[]): void {
    const guard = this.guard(def);
    new Gauge({
      ...this.base(def),
      registers: [this.registry],
      collect() {
        this.reset();
        for (const sample of read()) this.set(guard.safe(sample.labels) as LabelsOf<L>, sample.value);
      },
    });
  }

  /**
   * A histogram: `observe(labels, value)`, or `bind(labels)` once for an observer of one label set
   * (the hot paths bind per operation and status class, so a request checks no labels).
   */
  histogram<L extends string>(def: MetricDefinition<L>): HistogramRecorder<L> {
    if (def.buckets === undefined) throw new Error(`${def.name}: a histogram needs buckets`);
    const histogram = new Histogram({ ...this.base(def), buckets: [...def.buckets], registers: [this.registry] });
    const guard = this.guard(def);
    return {
      observe: (labels, value) => histogram.observe(guard.safe(labels) as LabelsOf<L>, value),
      bind: (labels) => {
        const child = histogram.labels(guard.safe(labels) as LabelsOf<L>);
        return (value) => child.observe(value);
      },
    };
  }

  /** The Prometheus text exposition: this instance's families, then the process's default metrics. */
  async render(): Promise<string> {
    const own = await this.registry.metrics();
    const defaults = await processMetrics().metrics();
    return `${own.replace(/\n*$/, '\n')}${defaults.replace(/\n*$/, '\n')}`;
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /**
   * The current value of one series (tests and diagnostics): a counter's or gauge's, or a histogram's
   * `_count` or `_sum` (`payment_batch_size_count`).
   */
  async value(name: string, labels: Readonly<Record<string, string>>): Promise<number> {
    const family = name.replace(/_(count|sum)$/, '');
    const metric = this.registry.getSingleMetric(name) ?? this.registry.getSingleMetric(family);
    if (metric === undefined) return 0;
    const wanted = Object.entries(labels);
    const { values } = await metric.get();
    const found = values.find(
      (v) =>
        ((v as { metricName?: string }).metricName ?? name) === name &&
        wanted.every(([k, value]) => v.labels[k] === value) &&
        Object.keys(v.labels).length === wanted.length,
    );
    return found?.value ?? 0;
  }

  private base<L extends string>(def: MetricDefinition<L>): { name: string; help: string; labelNames: L[] } {
    return { name: def.name, help: def.help, labelNames: Object.keys(def.labels) as L[] };
  }

  private guard(def: MetricDefinition): LabelGuard {
    if (this.guards.has(def.name)) throw new Error(`metric ${def.name} registered twice`);
    // Sorted: the exposition lists a series' labels in this order (as the hand-written registry did).
    const names = Object.keys(def.labels).sort();
    const guard = new LabelGuard(def.name, names, this.maxSeries, (reason) =>
      this.refused.inc({ metric: def.name, reason }),
    );
    this.guards.set(def.name, guard);
    return guard;
  }
}

export interface HistogramRecorder<L extends string> {
  observe(labels: LabelsOf<L>, value: number): void;
  bind(labels: LabelsOf<L>): (value: number) => void;
}

type Refusal = 'card_data' | 'shape' | 'cardinality';

/** Checks each distinct label set once, remembers the safe one it stands for. */
class LabelGuard {
  private readonly seen = new Map<string, Record<string, string>>();
  private series = 0;

  constructor(
    private readonly metric: string,
    private readonly names: readonly string[],
    private readonly maxSeries: number,
    private readonly onRefusal: (reason: Refusal) => void,
  ) {}

  safe(labels: Readonly<Record<string, string>>): Record<string, string> {
    const names = this.names;
    if (names.length === 0) return EMPTY;
    let key = '';
    for (const name of names) key += `${labels[name]}\u0000`;
    const known = this.seen.get(key);
    if (known !== undefined) return known;
    const checked: Record<string, string> = {};
    let refused = false;
    for (const name of names) {
      const value = labels[name];
      if (typeof value !== 'string') throw new Error(`metric ${this.metric}: label ${name} missing`);
      const reason = refusal(value);
      if (reason !== undefined) this.onRefusal(reason);
      refused ||= reason !== undefined;
      checked[name] = reason === undefined ? value : 'redacted';
    }
    // A refused value is never remembered (it may be card data); the set it maps to is bounded.
    if (refused) return checked;
    if (this.series >= this.maxSeries) {
      this.onRefusal('cardinality');
      return Object.fromEntries(names.map((n) => [n, 'other']));
    }
    this.series += 1;
    this.seen.set(key, checked);
    return checked;
  }
}

function refusal(value: string): Refusal | undefined {
  if (!SAFE_LABEL_VALUE.test(value)) return 'shape';
  if (mayHoldCardData(value)) return 'card_data';
  return undefined;
}

const EMPTY: Record<string, string> = Object.freeze({}) as Record<string, string>;
