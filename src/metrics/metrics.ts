/**
 * A small Prometheus registry: labelled counters and gauges, rendered in the text exposition format.
 * Label values come from closed vocabularies chosen by the code (provider, outcome), never from input,
 * so no card data or unbounded cardinality can reach a metric.
 */

type Labels = Readonly<Record<string, string>>;

interface Family {
  readonly type: 'counter' | 'gauge';
  readonly help: string;
  readonly values: Map<string, { labels: Labels; value: number }>;
}

export class Metrics {
  private readonly families = new Map<string, Family>();
  private readonly readers = new Map<string, () => void>();

  counter(name: string, help: string): (labels: Labels, by?: number) => void {
    const family = this.family(name, 'counter', help);
    return (labels, by = 1) => {
      const key = labelKey(labels);
      const entry = family.values.get(key) ?? { labels, value: 0 };
      entry.value += by;
      family.values.set(key, entry);
    };
  }

  /** A gauge read at scrape time. */
  gauge(name: string, help: string, read: () => readonly { labels: Labels; value: number }[]): void {
    const family = this.family(name, 'gauge', help);
    this.readers.set(name, () => {
      family.values.clear();
      for (const sample of read()) family.values.set(labelKey(sample.labels), sample);
    });
  }

  render(): string {
    for (const read of this.readers.values()) read();
    const lines: string[] = [];
    for (const [name, family] of this.families) {
      lines.push(`# HELP ${name} ${family.help}`, `# TYPE ${name} ${family.type}`);
      for (const { labels, value } of family.values.values()) {
        const rendered = Object.entries(labels)
          .sort(([a], [b]) => a.localeCompare(b))
          .map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`)
          .join(',');
        lines.push(`${name}${rendered === '' ? '' : `{${rendered}}`} ${value}`);
      }
    }
    return `${lines.join('\n')}\n`;
  }

  /** The current value of one series (tests and diagnostics). */
  value(name: string, labels: Labels): number {
    return this.families.get(name)?.values.get(labelKey(labels))?.value ?? 0;
  }

  private family(name: string, type: Family['type'], help: string): Family {
    const existing = this.families.get(name);
    if (existing !== undefined) return existing;
    const family: Family = { type, help, values: new Map() };
    this.families.set(name, family);
    return family;
  }
}

function labelKey(labels: Labels): string {
  return Object.entries(labels)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}
