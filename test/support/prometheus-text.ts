/**
 * A strict parser of the Prometheus text exposition format (version 0.0.4) for the tests: families
 * with their HELP, TYPE and samples. It refuses what promtool refuses that matters here: a sample
 * before its family's HELP and TYPE, a sample name that does not belong to its family's type (a
 * histogram's `_bucket`/`_sum`/`_count`), a malformed label set or value, a family declared twice.
 * `promtool check metrics` is the authority where it is installed; this keeps the check where it is not.
 */
export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface Family {
  readonly name: string;
  help?: string;
  type?: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  readonly samples: Sample[];
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const SAMPLE = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (\\S+)(?: (-?\\d+))?$`);
const SUFFIXES: Record<string, readonly string[]> = {
  counter: [''],
  gauge: [''],
  untyped: [''],
  histogram: ['_bucket', '_sum', '_count'],
  summary: ['', '_sum', '_count'],
};

export function parseExposition(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const family = (name: string): Family => {
    let f = families.get(name);
    if (f === undefined) {
      f = { name, samples: [] };
      families.set(name, f);
    }
    return f;
  };
  const lines = text.split('\n');
  if (lines.at(-1) !== '') throw new Error('the exposition must end with a newline');
  lines.forEach((line, i) => {
    const where = `line ${i + 1}: ${line}`;
    if (line === '') return;
    const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (meta !== null) {
      const [, kind, name, rest] = meta as unknown as [string, string, string, string];
      if (!new RegExp(`^${NAME}$`).test(name)) throw new Error(`bad metric name, ${where}`);
      const f = family(name);
      if (kind === 'HELP') {
        if (f.help !== undefined) throw new Error(`second HELP, ${where}`);
        if (f.samples.length > 0) throw new Error(`HELP after samples, ${where}`);
        f.help = rest;
      } else {
        if (f.type !== undefined) throw new Error(`second TYPE, ${where}`);
        if (!(rest in SUFFIXES)) throw new Error(`unknown TYPE, ${where}`);
        f.type = rest as NonNullable<Family['type']>;
      }
      return;
    }
    if (line.startsWith('#')) return;
    const match = SAMPLE.exec(line);
    if (match === null) throw new Error(`malformed sample, ${where}`);
    const [, name, labelText, valueText] = match as unknown as [string, string, string | undefined, string];
    const owner = [...families.values()].find(
      (f) => f.type !== undefined && (SUFFIXES[f.type] as readonly string[]).some((s) => `${f.name}${s}` === name),
    );
    if (owner === undefined || owner.help === undefined) throw new Error(`sample without HELP and TYPE, ${where}`);
    owner.samples.push({ name, labels: parseLabels(labelText ?? '', where), value: parseValue(valueText, where) });
  });
  for (const f of families.values()) {
    if (f.help === undefined || f.type === undefined) throw new Error(`${f.name} lacks HELP or TYPE`);
  }
  return families;
}

/** A float as Prometheus reads it (Go's ParseFloat: NaN and Inf in any case; prom-client writes `Nan`). */
function parseValue(text: string, where: string): number {
  const special = /^([+-]?)(inf|infinity|nan)$/i.exec(text);
  if (special !== null) {
    return (special[2] as string).toLowerCase() === 'nan' ? NaN : special[1] === '-' ? -Infinity : Infinity;
  }
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text)) throw new Error(`bad value, ${where}`);
  return Number(text);
}

function parseLabels(text: string, where: string): Record<string, string> {
  const labels: Record<string, string> = {};
  const pair = /([^=,]+)="((?:[^"\\]|\\[\\"n])*)"(,|$)/y;
  let at = 0;
  while (at < text.length) {
    pair.lastIndex = at;
    const m = pair.exec(text);
    if (m === null) throw new Error(`malformed labels, ${where}`);
    const [, name, value] = m as unknown as [string, string, string];
    if (!LABEL_NAME.test(name) || name in labels) throw new Error(`bad or repeated label ${name}, ${where}`);
    labels[name] = value.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    at = pair.lastIndex;
  }
  return labels;
}

/** The metric names a scrape exposes: each family's, with a histogram's and a summary's suffixed series. */
export function exposedNames(families: Map<string, Family>): Set<string> {
  const names = new Set<string>();
  for (const f of families.values()) {
    for (const suffix of SUFFIXES[f.type as string] as readonly string[]) names.add(`${f.name}${suffix}`);
  }
  return names;
}
